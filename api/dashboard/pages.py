"""The dashboard's HTML: one static shell per page, no data in it.

Every page is the same skeleton (header, navigation, a ``<main>`` the page's script fills,
the confirmation ``<dialog>``); the data comes from the JSON API, fetched by the page's
script with the token kept in ``sessionStorage``. Nothing user-typed is ever rendered here:
the only variable parts are fixed titles and integer ids, so the shell cannot carry an
injection, and the scripts build the DOM with ``textContent``.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib import resources
from pathlib import Path

#: No inline script anywhere (``script-src 'self'``: all JS is in static files). Plotly needs
#: inline styles: it injects a stylesheet and sets ``style`` attributes.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; "
    "worker-src 'self' blob:; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
#: The chart pages also allow ``'unsafe-eval'``: Plotly's WebGL traces (``scattergl``,
#: ``parcoords``) go through regl, which compiles its draw calls with ``Function(...)``;
#: without it Plotly shows "WebGL is not supported". Still no inline script.
CHART_CSP = CSP.replace("script-src 'self'", "script-src 'self' 'unsafe-eval'")

SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}

STATIC_DIR = Path(__file__).parent / "static"


@lru_cache(maxsize=64)
def static_version(name: str) -> str:
    """A short content hash of one of our static files (cache-busting query string)."""
    if name == "plotly.min.js":
        return plotly_version()
    return hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest()[:12]


@lru_cache(maxsize=1)
def plotly_version() -> str:
    from importlib.metadata import version

    return version("plotly")


def plotly_js_path() -> Path:
    """``plotly/package_data/plotly.min.js`` of the installed plotly package."""
    ref = resources.files("plotly") / "package_data" / "plotly.min.js"
    with resources.as_file(ref) as path:
        return Path(path)


def _asset(name: str) -> str:
    return f"/ui/static/{name}?v={static_version(name)}"


def _script(name: str) -> str:
    return f'<script src="{_asset(name)}" defer></script>'


NAV = (
    ("experiments", "/ui", "Experiments"),
    ("workers", "/ui/workers", "Workers"),
)


def headers(*, charts: bool = False) -> dict[str, str]:
    """The security headers of a page (the chart pages' CSP allows eval, see CHART_CSP)."""
    return {**SECURITY_HEADERS, "Content-Security-Policy": CHART_CSP if charts else CSP}


#: Scripts a page loads between common.js and its own (small modules, no bundler).
PAGE_MODULES = {"experiment": ("charts.js", "trials_table.js")}


def render(
    page: str, title: str, *, item_id: int | None = None, charts: bool = False,
    numbers: dict[str, int] | None = None,
) -> str:
    """The HTML shell of ``page`` (experiments, experiment, trial, workers, login).
    ``numbers`` become ``data-*`` attributes of the body (integers only)."""
    # Plotly is not a <script> of the page: common.js loads it after the page's own script
    # (T.plotly()), so that tables render while its 4.8 MB download and compile.
    modules = PAGE_MODULES.get(page, ())
    scripts = [_script("common.js"), *(_script(m) for m in modules), _script(f"{page}.js")]
    preload = f'<link rel="preload" href="{_asset("plotly.min.js")}" as="script">' if charts else ""
    nav = "".join(
        f'<a href="{href}"{" aria-current=page" if key == page else ""}>{label}</a>'
        for key, href, label in NAV
    )
    data_id = f' data-id="{int(item_id)}"' if item_id is not None else ""
    for key, number in (numbers or {}).items():
        data_id += f' data-{key}="{int(number)}"'
    if charts:
        data_id += f' data-plotly="{_asset("plotly.min.js")}"'
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · tuner</title>
<link rel="stylesheet" href="{_asset("style.css")}">
<link rel="icon" href="data:,">
{preload}{"".join(scripts)}
</head>
<body data-page="{page}"{data_id}>
<a class="skip" href="#main">Skip to content</a>
<header class="top">
  <a class="brand" href="/ui">tuner</a>
  <nav aria-label="Main">{nav}</nav>
  <div class="who" id="who" aria-live="polite"></div>
</header>
<div id="banner" class="banner" role="status" hidden></div>
<main id="main" tabindex="-1"><p class="loading">Loading…</p></main>
<dialog id="confirm" aria-labelledby="confirm-title">
  <form method="dialog">
    <h2 id="confirm-title">Are you sure?</h2>
    <p id="confirm-text"></p>
    <div class="dialog-buttons">
      <button value="cancel" type="submit" class="secondary" id="confirm-no">Keep it</button>
      <button value="ok" type="submit" class="danger" id="confirm-yes">Confirm</button>
    </div>
  </form>
</dialog>
</body>
</html>
"""
