"""Load a generated HTML page in headless Chromium and check it the way a reader would see it.

Used by the browser tests of the report and the gallery. No Python browser driver is needed: a copy
of the page gets a small probe script that records console errors and, once the page has loaded,
writes what it found (tables, image natural sizes, errors) into the DOM, which Chromium's
``--dump-dom`` prints. A second Chromium call takes a screenshot.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from lossbench.errors import MissingExtraError

__all__ = ["find_chromium", "check_page"]

_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]

_PROBE = """<script>
window.__lb_errors = [];
window.addEventListener('error', function (e) {
  window.__lb_errors.push('error: ' + (e.message || (e.target && (e.target.src || e.target.href)) || 'resource'));
}, true);
(function () {
  var orig = console.error;
  console.error = function () {
    window.__lb_errors.push('console.error: ' + Array.prototype.join.call(arguments, ' '));
    return orig.apply(console, arguments);
  };
})();
window.addEventListener('load', function () {
  var imgs = Array.prototype.map.call(document.images, function (i) {
    return {src: i.getAttribute('src').slice(0, 80), w: i.naturalWidth, h: i.naturalHeight, complete: i.complete};
  });
  var out = {errors: window.__lb_errors, tables: document.querySelectorAll('table').length,
             images: imgs, title: document.title};
  var pre = document.createElement('pre');
  pre.id = '__lb_probe';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome executable, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def check_page(html: str | Path, *, screenshot: str | Path | None = None, timeout: float = 90.0) -> dict:
    """Load ``html`` in headless Chromium; return ``{"errors", "tables", "images", "title"}``.

    Args:
        html: path of the page (relative resources are resolved next to it).
        screenshot: where to save a PNG screenshot of the page (optional).
        timeout: seconds per Chromium call.

    Raises:
        MissingExtraError: if no Chromium is installed.
    """
    exe = find_chromium()
    if exe is None:
        raise MissingExtraError(
            "`chromium` must be installed for browser checks, got none on PATH (apt-get install chromium)"
        )
    html = Path(html).resolve()
    text = html.read_text(encoding="utf-8")
    probed = re.sub(r"(<head[^>]*>)", lambda m: m.group(1) + _PROBE, text, count=1, flags=re.I)
    if probed == text:
        probed = _PROBE + text
    with tempfile.TemporaryDirectory() as profile:
        copy = html.with_name(f".probe-{html.name}")
        copy.write_text(probed, encoding="utf-8")
        try:
            res = subprocess.run(
                [
                    exe,
                    *_FLAGS,
                    f"--user-data-dir={profile}",
                    "--virtual-time-budget=10000",
                    "--dump-dom",
                    copy.as_uri(),
                ],
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        finally:
            copy.unlink(missing_ok=True)
        match = re.search(r'<pre id="__lb_probe">(.*?)</pre>', res.stdout, flags=re.S)
        if not match:
            raise RuntimeError(f"page did not finish loading in Chromium: {res.stderr[-500:]}")
        import html as _html

        result = json.loads(_html.unescape(match.group(1)))
        if screenshot is not None:
            subprocess.run(
                [
                    exe,
                    *_FLAGS,
                    f"--user-data-dir={profile}",
                    "--hide-scrollbars",
                    "--window-size=1400,2400",
                    f"--screenshot={Path(screenshot).resolve()}",
                    html.as_uri(),
                ],
                capture_output=True,
                timeout=timeout,
            )
    return result
