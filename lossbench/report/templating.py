"""The one jinja2 environment of the report and the gallery (templates in ``lossbench/report/templates``).

Autoescaping is on for every template: HTML pages are safe by construction. The report's markdown template escapes
cell text with the ``md`` filter; the gallery's markdown template turns autoescaping off for its own (trusted,
generated) text with an ``{% autoescape false %}`` block.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

__all__ = ["environment", "render", "md_escape"]


@functools.lru_cache(maxsize=1)
def environment() -> Any:
    """The shared ``jinja2.Environment`` (strict undefined variables, block whitespace trimmed)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).with_name("templates"))),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["md"] = md_escape
    return env


def render(template: str, **context: Any) -> str:
    """Render ``template`` (a file name in the templates folder) with ``context``."""
    return environment().get_template(template).render(**context)


def md_escape(value: Any) -> Any:
    """Escape text for a markdown table cell: HTML-escape ``& < >`` and the cell separator ``|``; one line.

    Used as the ``md`` filter of the markdown templates; returns ``Markup`` so that autoescaping does not
    escape it a second time (quotes and apostrophes stay readable in the markdown source).
    """
    from markupsafe import Markup

    if isinstance(value, Markup):
        text = " ".join(str(value).split())
    else:
        text = " ".join(str(value).split()).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return Markup(text.replace("|", "\\|"))
