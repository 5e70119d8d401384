"""The run report: one static HTML page beside the pictures and files it shows.

No external resources and no framework: a page that opens from a local folder, an S3 bucket
behind HTTP or a zip, in any browser. Every reference is relative to the product folder. A few
lines of script only mark, once the page has loaded, how many of its pictures decoded
(``<body data-images-loaded="N">``), which the tests read back through headless Chromium.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runner.planner.plan import Plan
    from runner.product.collect import TileRow

_STATE_CSS = {
    "done": "#2e7d32",
    "running": "#1565c0",
    "pending": "#9e9e9e",
    "failed": "#c62828",
    "empty": "#f9a825",
}
_ORDER = {"failed": 0, "running": 1, "pending": 2, "empty": 3, "done": 4}

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; padding: 0 2em; max-width: 1180px;
  color: #222; }
h1 { font-size: 1.5em; margin-bottom: .2em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
.counts span { display: inline-block; padding: .2em .7em; margin: 0 .4em .4em 0;
  border-radius: 1em; color: #fff; font-weight: 600; }
figure { display: inline-block; margin: 0 1em 1em 0; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: .85em; color: #555; }
table { border-collapse: collapse; font-size: .85em; }
th, td { border-bottom: 1px solid #eee; padding: .25em .6em; text-align: right; }
th { background: #f5f5f5; position: sticky; top: 0; }
td.l, th.l { text-align: left; }
code { background: #f5f5f5; padding: 0 .3em; }
"""

_SCRIPT = """
window.addEventListener("load", function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) {
    if (imgs[i].complete && imgs[i].naturalWidth > 0) { ok++; }
  }
  document.body.setAttribute("data-images-loaded", String(ok));
  document.body.setAttribute("data-images", String(imgs.length));
});
"""


def _rel(url: str, folder: str) -> str:
    """``url`` relative to the product folder (every file the report names lies below it)."""
    prefix = folder.rstrip("/") + "/"
    return url[len(prefix) :] if url.startswith(prefix) else url


def _gib(n: object) -> str:
    return f"{float(n) / 2**30:.2f}" if isinstance(n, int | float) else ""


def _figure(src: str, caption: str, width: int | None = None) -> str:
    w = f' width="{width}"' if width else ""
    return (
        f'<figure><img src="{escape(src)}" alt="{escape(caption)}"{w}>'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )


def render(
    title: str,
    plan: Plan,
    rows: Sequence[TileRow],
    counts: Mapping[str, int],
    files: Mapping[str, str],
    folder: str,
) -> str:
    """The report page of an assembled run (``files``: what :func:`~runner.product.collect.collect`
    wrote, by name; ``status``, ``runtime`` and ``memory`` must be among them)."""
    rel = {k: _rel(v, folder) for k, v in files.items()}
    badges = "".join(
        f'<span style="background:{_STATE_CSS.get(s, "#555")}">{escape(s)} {n}</span>'
        for s, n in sorted(counts.items(), key=lambda kv: _ORDER.get(kv[0], 9))
    )
    figs = [_figure(rel["status"], "tiles by state", 560)]
    if "quicklook" in rel:
        figs.append(_figure(rel["quicklook"], "true-colour quick-look (COG overviews)", 560))
    plots = [
        _figure(rel["runtime"], "wall time per tile vs its observations", 560),
        _figure(rel["memory"], "planned memory vs measured peak RSS (y = x: exact sizing)", 560),
    ]
    links = []
    if "collection" in rel:
        links.append(
            f'<li>STAC Collection: <a href="{escape(rel["collection"])}">collection.json</a></li>'
        )
    mosaics = sorted((k.split(":", 1)[1], v) for k, v in rel.items() if k.startswith("mosaic:"))
    if mosaics:
        ms = ", ".join(f'<a href="{escape(v)}">{escape(b)}</a>' for b, v in mosaics)
        links.append(f"<li>GDAL mosaics (VRT, one per band): {ms}</li>")
    links.append(f'<li>per-tile table: <a href="{escape(rel["table"])}">tiles.csv</a></li>')
    body_rows = []
    for r in sorted(rows, key=lambda r: (_ORDER.get(r.state, 9), r.tile)):
        m = r.metrics
        total = "" if r.seconds is None else f"{r.seconds:.1f}"
        body_rows.append(
            "<tr>"
            f'<td class="l">{r.tile}</td>'
            f'<td class="l" style="color:{_STATE_CSS.get(r.state, "#555")}">{escape(r.state)}</td>'
            f"<td>{r.plan.n_obs}</td><td>{total}</td>"
            f"<td>{_gib(r.plan.resources.memory_bytes)}</td><td>{_gib(m.get('peak_rss_bytes'))}</td>"
            f'<td class="l">{escape(r.message)}</td>'
            "</tr>"
        )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<link rel="icon" href="data:,">
<style>{_STYLE}</style>
</head>
<body>
<h1>{escape(title)}</h1>
<p>{len(rows)} planned tiles of the {escape(plan.grid.crs)} grid
({plan.grid.tile_pixels} px tiles at {plan.grid.resolution:g} m), period {escape(plan.period.label)}.</p>
<div class="counts">{badges}</div>
<h2>Maps</h2>
{"".join(figs)}
<h2>Outputs</h2>
<ul>{"".join(links)}</ul>
<h2>Sizing and time</h2>
{"".join(plots)}
<h2>Tiles</h2>
<table>
<thead><tr><th class="l">tile</th><th class="l">state</th><th>observations</th><th>seconds</th>
<th>planned GiB</th><th>peak RSS GiB</th><th class="l">message</th></tr></thead>
<tbody>
{"".join(body_rows)}
</tbody>
</table>
<script>{_SCRIPT}</script>
</body>
</html>
"""
