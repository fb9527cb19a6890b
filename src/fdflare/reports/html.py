"""Self-contained HTML pages: every figure embedded, nothing fetched from the network.

A page is plain HTML with its stylesheet inline and its figures as ``data:`` URIs, so it
opens from a file, a mail attachment or an archive and looks the same in ten years. It has
no script, so a browser has nothing to run and nothing to report in its console.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       margin: 2em auto; max-width: 70em; padding: 0 1.5em; color: #1b1f23; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #d0d7de; padding-bottom: .2em; }
h3 { font-size: 1.05em; margin-top: 1.4em; }
p.lead { color: #57606a; margin-top: 0; }
table { border-collapse: collapse; margin: .6em 0 1em; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d0d7de; padding: .25em .6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
table.left2 th:nth-child(2), table.left2 td:nth-child(2) { text-align: left; }
th { background: #f6f8fa; }
tr.baseline td { color: #57606a; background: #fbfbfc; }
tr.baseline td:first-child { padding-left: 1.6em; }
td { white-space: nowrap; }
tr.summary td { font-weight: 600; }
td.worse { color: #b3261e; }
td.better { color: #116329; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figcaption { color: #57606a; font-size: .9em; }
.note { background: #fff8c5; border: 1px solid #d4a72c; padding: .5em .8em; border-radius: 4px; }
pre { background: #f6f8fa; padding: .8em; overflow-x: auto; font-size: .85em; }
code { font: .9em ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
       background: rgba(175, 184, 193, .2); padding: .1em .3em; border-radius: 3px; }
.grid { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 1em; }
.grid figure { margin: 0; }
.grid figure img, figure.wide img { width: 100%; }
@media (max-width: 50em) { .grid { grid-template-columns: minmax(0, 1fr); } }
"""


def esc(value: Any) -> str:
    """Text escaped for HTML."""
    return html.escape("" if value is None else str(value), quote=True)


def inline(text: Any) -> str:
    """Text escaped for HTML, with each `backticked` span set as ``<code>``.

    Notes and captions are written once for the terminal, markdown and HTML; a span in
    backticks (a command, a file name) is code in all three.
    """
    parts = esc(text).split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: leave the text as it is
        return esc(text)
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def data_uri(data: bytes, mime: str) -> str:
    """A ``data:`` URI holding ``data``."""
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def image_file(
    path: str | os.PathLike[str], caption: str = "", alt: str = "", *, wide: bool = False
) -> str:
    """A ``<figure>`` with the PNG, JPEG or SVG file at ``path`` embedded (see :func:`figure_html`)."""
    path = Path(path)
    mime = {
        ".png": "image/png",
        ".jpg": "image/jpeg",
        ".jpeg": "image/jpeg",
        ".svg": "image/svg+xml",
    }.get(path.suffix.lower())
    if mime is None:
        raise ValueError(f"not an image file: {path}")
    return figure_html(data_uri(path.read_bytes(), mime), caption, alt or path.stem, wide=wide)


def figure_html(src: str, caption: str = "", alt: str = "", *, wide: bool = False) -> str:
    """A ``<figure>`` around an ``<img>`` whose source is ``src`` (a data URI).

    A ``wide`` figure fills the width of the text (a heatmap whose axes must stay
    readable); others are drawn at their own size, at most that width.
    """
    cap = f"<figcaption>{inline(caption)}</figcaption>" if caption else ""
    cls = ' class="wide"' if wide else ""
    return f'<figure{cls}><img src="{src}" alt="{esc(alt or caption)}">{cap}</figure>'


def matplotlib_figure(fig: Any, caption: str = "", alt: str = "") -> str:
    """A ``<figure>`` with a matplotlib figure embedded as PNG."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return figure_html(data_uri(buf.getvalue(), "image/png"), caption, alt)


def table_html(
    head: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    row_classes: Sequence[str] | None = None,
    cell_classes: Sequence[Sequence[str]] | None = None,
    caption: str = "",
    left: int = 1,
) -> str:
    """An HTML table; every cell is escaped text; the first ``left`` columns (1 or 2) align left."""
    out = ['<table class="left2">' if left == 2 else "<table>"]
    if caption:
        out.append(f"<caption>{esc(caption)}</caption>")
    out.append("<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr></thead>")
    out.append("<tbody>")
    for i, row in enumerate(rows):
        cls = row_classes[i] if row_classes else ""
        tr = f'<tr class="{esc(cls)}">' if cls else "<tr>"
        cells = []
        for j, cell in enumerate(row):
            cc = cell_classes[i][j] if cell_classes and cell_classes[i] else ""
            cells.append(
                f'<td class="{esc(cc)}">{esc(cell)}</td>' if cc else f"<td>{esc(cell)}</td>"
            )
        out.append(tr + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


@dataclass
class Page:
    """An HTML page built section by section."""

    title: str
    lead: str = ""
    parts: list[str] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        """Add a heading."""
        self.parts.append(f"<h{level}>{esc(text)}</h{level}>")

    def paragraph(self, text: str, cls: str = "") -> None:
        """Add a paragraph of text; `backticked` spans become ``<code>`` (:func:`inline`)."""
        attr = f' class="{esc(cls)}"' if cls else ""
        self.parts.append(f"<p{attr}>{inline(text)}</p>")

    def raw(self, fragment: str) -> None:
        """Add an HTML fragment made by this module's functions."""
        self.parts.append(fragment)

    def preformatted(self, text: str) -> None:
        """Add preformatted text (settings, logs)."""
        self.parts.append(f"<pre>{esc(text)}</pre>")

    def render(self) -> str:
        """The whole page."""
        lead = f'<p class="lead">{esc(self.lead)}</p>' if self.lead else ""
        return (
            "<!DOCTYPE html>\n"
            '<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            # nothing may be fetched: no scripts, styles, fonts or images from anywhere
            '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
            "img-src data:; style-src 'unsafe-inline'\">"
            f"<title>{esc(self.title)}</title><style>{STYLE}</style></head>"
            f"<body><h1>{esc(self.title)}</h1>{lead}" + "\n".join(self.parts) + "</body></html>\n"
        )
