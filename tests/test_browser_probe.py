import pytest

from lossbench.report.browser import check_page, find_chromium

pytestmark = pytest.mark.skipif(find_chromium() is None, reason="chromium not installed (scripts/test.sh installs it)")


def test_probe_reports_tables_images_and_errors(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 1))
    ax.plot([0, 1])
    fig.savefig(tmp_path / "ok.png", dpi=50)
    plt.close(fig)
    page = tmp_path / "page.html"
    page.write_text(
        "<html><head><title>probe</title></head><body><table><tr><td>1</td></tr></table>"
        '<img src="ok.png"><img src="missing.png"><script>console.error("boom")</script></body></html>'
    )
    res = check_page(page, screenshot=tmp_path / "shot.png")
    assert res["title"] == "probe"
    assert res["tables"] == 1
    sizes = {i["src"]: (i["w"], i["h"]) for i in res["images"]}
    assert sizes["ok.png"] == (100, 50)
    assert sizes["missing.png"] == (0, 0)
    assert any("missing.png" in e for e in res["errors"])
    assert any("boom" in e for e in res["errors"])
    assert (tmp_path / "shot.png").stat().st_size > 1000
    assert not list(tmp_path.glob(".probe-*"))
