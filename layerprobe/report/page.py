"""The HTML pieces of a report page, built with the standard library alone: every string that
comes from data (sample ids, predictions, benchmark names, paths) goes through ``esc``, and every
figure is embedded as a PNG data URI, so the page loads nothing and no dataset text becomes markup.

    body = table(summary, columns={"accuracy": "accuracy", "ci_low": "CI low"})
    body += figure(Path("masking_curves.png").read_bytes(), "masking curves")
    html = document("organism sweep", [Section("Masking curves", body)])

``document`` sets a Content-Security-Policy of ``default-src 'none'; img-src data:; style-src
'unsafe-inline'``: the browser itself refuses any request the page might try.
"""

from __future__ import annotations

import base64
import html
import io
import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import pandas as pd

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1280px;
       padding: 0 24px 48px; color: #1d1d1f; }
h1 { font-size: 22px; margin: 24px 0 4px; } h2 { font-size: 18px; margin: 32px 0 8px; border-bottom: 1px solid #ddd; }
h3 { font-size: 15px; margin: 20px 0 6px; }
nav { font-size: 13px; margin: 8px 0 16px; } nav a { margin-right: 14px; }
table { border-collapse: collapse; margin: 6px 0 14px; font-size: 13px; }
th, td { border: 1px solid #d0d0d5; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f2f2f5; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 8px 0 18px; } figure img { max-width: 100%; max-height: 640px; width: auto; height: auto; border: 1px solid #eee; }
.wide { overflow-x: auto; }
figcaption { font-size: 12px; color: #555; } pre { background: #f6f6f8; padding: 8px; overflow-x: auto; font-size: 12px; }
.note { color: #555; font-size: 13px; } .gallery { display: flex; flex-wrap: wrap; gap: 12px; }
.gallery figure { max-width: 48%; } details { margin: 4px 0 12px; }
"""


@dataclass
class Section:
    """One part of the page: a heading and its HTML body (already escaped where it holds data)."""

    title: str
    body: str


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def number(value) -> str:
    """A cell's text: 4 significant digits for floats, integers as they are, empty for missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return f"{float(value):.4g}"
    return str(value)


def table(frame: pd.DataFrame, columns: Mapping[str, str] | None = None, cls: str = "") -> str:
    """``frame`` as an HTML table; ``columns`` picks and renames (source -> heading), in order."""
    columns = dict(columns) if columns is not None else {c: c for c in frame.columns}
    columns = {k: v for k, v in columns.items() if k in frame.columns}
    head = "".join(f"<th>{esc(v)}</th>" for v in columns.values())
    rows = []
    for record in frame[list(columns)].itertuples(index=False):
        cells = []
        for value in record:
            numeric = isinstance(value, numbers.Number) and not isinstance(value, bool)
            cells.append(f'<td class="num">{esc(number(value))}</td>' if numeric else f"<td>{esc(number(value))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    klass = f' class="{esc(cls)}"' if cls else ""
    return f'<div class="wide"><table{klass}><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>\n'


def pairs(items: Mapping[str, object]) -> str:
    """A two-column table of names and values."""
    return table(pd.DataFrame({"what": list(items), "value": [number(v) for v in items.values()]}))


def png_bytes(fig, dpi: int = 110) -> bytes:
    """A matplotlib figure as PNG bytes; the figure is closed."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def figure(image: bytes | Path, caption: str) -> str:
    """An embedded PNG (bytes, or a file read now) with its caption; a file that is not a PNG is
    named in a note instead of being embedded."""
    data = image.read_bytes() if isinstance(image, Path) else image
    if not data.startswith(PNG_MAGIC):
        return f'<p class="note">not a PNG, not embedded: {esc(caption)}</p>\n'
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return f'<figure><img src="{uri}" alt="{esc(caption)}"><figcaption>{esc(caption)}</figcaption></figure>\n'


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>\n'


def preformatted(text: str) -> str:
    return f"<pre>{esc(text)}</pre>\n"


def details(summary: str, body: str) -> str:
    return f"<details><summary>{esc(summary)}</summary>{body}</details>\n"


def document(title: str, sections: list[Section], subtitle: str = "") -> str:
    """The whole page: head with the CSP and the style, a table of contents, the sections."""
    nav = "".join(f'<a href="#s{i}">{esc(s.title)}</a>' for i, s in enumerate(sections))
    body = "".join(f'<section id="s{i}"><h2>{esc(s.title)}</h2>\n{s.body}</section>\n' for i, s in enumerate(sections))
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        f"<title>{esc(title)}</title>\n<style>{STYLE}</style></head>\n<body>\n"
        f"<h1>{esc(title)}</h1>\n" + (note(subtitle) if subtitle else "") + f"<nav>{nav}</nav>\n{body}</body></html>\n"
    )
