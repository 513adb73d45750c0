"""HTML building blocks of the report: page CSS, tables that scroll inside their box, signed deltas.

The page has to read on a 1366–1440 px laptop screen: content is capped at 1240 px, every table
sits in a horizontally scrolling wrapper (a wide table scrolls inside its box instead of pushing
the page wider), long paths break anywhere, and charts shrink with the page.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from raypipe.deft._report_data import num

CSS = """
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#1a202c;background:#fff}
main{max-width:1240px;margin:0 auto;padding:18px 24px 40px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;border-bottom:1px solid #e2e8f0;padding-bottom:4px;margin:30px 0 8px}
h3{font-size:14px;margin:16px 0 6px}p{margin:6px 0}
.tw{overflow-x:auto;max-width:100%;margin:6px 0}
table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #e2e8f0;padding:3px 8px;text-align:right;vertical-align:top}
td{white-space:nowrap}
th{background:#f7fafc;font-weight:600}td.l,th.l{text-align:left}
td.path{text-align:left;min-width:180px;max-width:520px;white-space:normal;overflow-wrap:anywhere;font-family:ui-monospace,monospace;font-size:12px}
td.txt{text-align:left;min-width:220px;max-width:560px;white-space:normal}
tr.hi td{background:#fffbea}
.muted{color:#718096;font-size:13px}
.badge{display:inline-block;padding:2px 10px;border-radius:11px;color:#fff;font-size:13px;font-weight:600;vertical-align:middle}
.ok{background:#2f855a}.bad{background:#c53030}.run{background:#2b6cb0}.neutral{background:#4a5568}
.better{color:#2f855a;font-weight:600}.worse{color:#c53030;font-weight:600}.same{color:#718096}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(190px,1fr));gap:10px;margin:10px 0}
.card{border:1px solid #e2e8f0;border-radius:6px;padding:8px 12px;min-width:0}
.card .k{color:#718096;font-size:12px}.card .v{font-size:19px;font-weight:600;overflow-wrap:anywhere}
.card .s{font-size:12px;color:#4a5568;overflow-wrap:anywhere}
.callout{border-left:4px solid #dd6b20;background:#fffaf0;padding:8px 12px;margin:10px 0}
.thumbs{display:flex;flex-wrap:wrap;gap:10px}.thumbs figure{margin:0;font-size:11px;text-align:center;max-width:100%}
.thumbs img{border:1px solid #cbd5e0;image-rendering:pixelated;max-width:100%;height:auto}
svg.chart{display:block;max-width:100%;height:auto}
pre{background:#f7fafc;padding:8px;font-size:12px;white-space:pre-wrap;overflow-wrap:anywhere}
details{margin:6px 0}summary{cursor:pointer;color:#2b6cb0}
"""

THUMB_PX = 160


class Html(str):
    """Markup that is already safe: :func:`table` inserts it as is instead of escaping it."""


def fmt(v: Any, digits: int = 4) -> str:
    """A cell value as escaped text: floats to ``digits`` significant digits, None/NaN as an en dash."""
    if isinstance(v, Html):
        return v
    if v is None or v == "":
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return "–" if not math.isfinite(v) else f"{v:.{digits}g}"
    return escape(str(v))


def pct(v: Any, digits: int = 2) -> str:
    f = num(v)
    return "–" if f is None else f"{f:.{digits}f} %"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, left: int = 1, table_id: str | None = None,
          highlight: Sequence[bool] | None = None, classes: Sequence[str | None] | None = None) -> str:
    """A table inside a scrolling wrapper. ``left``: how many leading columns are left-aligned;
    ``classes``: an optional CSS class per column (``path``, ``txt``); ``highlight``: rows to shade."""
    def cls(i: int) -> str:
        names = []
        if i < left:
            names.append("l")
        if classes and i < len(classes) and classes[i]:
            names.append(str(classes[i]))
        return f" class='{' '.join(names)}'" if names else ""

    head = "".join(f"<th{cls(i)}>{h if isinstance(h, Html) else _breakable(h)}</th>" for i, h in enumerate(headers))
    body = []
    for r_i, r in enumerate(rows):
        hi = " class='hi'" if highlight and r_i < len(highlight) and highlight[r_i] else ""
        body.append(f"<tr{hi}>" + "".join(f"<td{cls(i)}>{fmt(c)}</td>" for i, c in enumerate(r)) + "</tr>")
    tid = f" id='{escape(table_id)}'" if table_id else ""
    return f"<div class='tw'><table{tid}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"


def _breakable(text: str) -> str:
    """Escaped header text that may wrap after ``_`` and ``.`` (long hyper-parameter names)."""
    return escape(text).replace("_", "_<wbr>").replace(".", ".<wbr>")


def delta(value: float | None, *, minimize: bool | None, unit: str = "", digits: int = 2,
          versus: str = "baseline") -> Html:
    """A signed difference, green when it is better by the contract's direction, red when worse.

    ``minimize``: True when lower is better (``<``/``<=`` contracts), None when unknown (no colour).
    For a percent metric the difference is in percentage points.
    """
    if value is None or not math.isfinite(value):
        return Html("–")
    suffix = " pp" if unit == "%" else (f" {escape(unit)}" if unit else "")
    if abs(value) < 0.5 * 10 ** -digits:
        return Html(f"<span class='same'>±0{suffix}</span>")
    sign = "+" if value > 0 else "−"  # a real minus sign, not a hyphen
    text = f"{sign}{abs(value):.{digits}f}{suffix}"
    if minimize is None:
        return Html(f"<span>{text}</span>")
    better = (value < 0) if minimize else (value > 0)
    word = "better" if better else "worse"
    return Html(f"<span class='{word}' title='{word} than {escape(versus)}'>{text}</span>")


def badge(text: str, kind: str) -> Html:
    return Html(f"<span class='badge {kind}'>{escape(text)}</span>")


def card(key: str, value: str | Html, sub: str | Html = "") -> Html:
    sub_html = f"<div class='s'>{sub if isinstance(sub, Html) else escape(sub)}</div>" if sub else ""
    val = value if isinstance(value, Html) else escape(value)
    return Html(f"<div class='card'><div class='k'>{escape(key)}</div><div class='v'>{val}</div>{sub_html}</div>")


def path_cell(path: Any, run_dir: Path | None = None) -> Html:
    """A path shown relative to the run dir when inside it (full path on hover)."""
    if path is None or path == "":
        return Html("–")
    p = str(path)
    shown = p
    if run_dir is not None:
        try:
            shown = str(Path(p).relative_to(run_dir))
        except ValueError:
            shown = p
    return Html(f"<span title='{escape(p)}'>{escape(shown)}</span>")


def png_uri(image: Any) -> str:
    """A PIL image as a PNG data URI."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def thumb_uri(path: Path, px: int = THUMB_PX) -> str | None:
    """A PNG data URI of the image scaled down to fit ``px`` (None if it cannot be read)."""
    try:
        from PIL import Image

        with Image.open(path) as src:
            im = src.convert("RGB") if src.mode not in ("L", "RGB") else src.copy()
        im.thumbnail((px, px))
        return png_uri(im)
    except Exception:  # a boundary: PIL raises many types; an unreadable image is a note, not an error
        return None


def figure(uri: str | None, caption: str, *, width: int | None = None, missing: str = "") -> Html:
    """An inline image with a caption; ``width`` scales small images up (pixelated, no smoothing)."""
    if uri is None:
        return Html(f"<figure><div class='muted'>{escape(missing or 'not readable')}</div>"
                    f"<figcaption>{escape(caption)}</figcaption></figure>")
    w = f" width='{width}'" if width else ""
    return Html(f"<figure><img src='{uri}'{w} alt='{escape(caption)}'/><figcaption>{escape(caption)}</figcaption></figure>")


def image_figure(path: Path, caption: str) -> Html:
    return figure(thumb_uri(path), caption, missing=f"missing: {path.name}")
