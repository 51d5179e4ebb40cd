import runpy
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_api_tour_runs_and_prints_the_figure1_facts(capsys):
    runpy.run_path(str(EXAMPLES / "api_tour.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "label instances: [5], prediction instances: [9]" in out
    assert "'missed': 1, 'false': 5" in out
