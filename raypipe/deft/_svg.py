"""Small inline-SVG charts for the report: no plotting library, no script, no external files.

Each chart scales down with the page (``viewBox`` + ``max-width:100%``), draws its legend above
the plot so that it never collides with the x labels, and uses round ("nice") ticks. On a
percent axis the ticks are 0, 20, … 100 %, never 27.4 / 54.8.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

# Colour-blind-safe palette (Okabe–Ito): series stay distinguishable in grey scale too, because
# every series also differs by line style and marker shape.
BLUE, ORANGE, GREEN, PURPLE, VERMILION, GREY = "#0072b2", "#e69f00", "#009e73", "#cc79a7", "#d55e00", "#718096"
RED = "#c53030"
_FONT = 11
_CHAR_W = 6.4  # average glyph width of an 11 px sans-serif, for layout without a text engine


@dataclass(frozen=True)
class Series:
    """One line of a :func:`line_chart`.

    ``style``: ``line`` (solid, thin; the headline), ``band`` (a wide translucent stroke drawn
    *under* the others, so a series that coincides with the headline shows as a halo around it
    instead of vanishing beneath it), ``dotted``, or ``points`` (markers only).
    ``marker``: ``circle`` | ``square`` | ``diamond`` | ``triangle``.
    """

    name: str
    values: Sequence[float | None]
    color: str
    style: str = "line"
    marker: str = "circle"
    value_labels: bool = False


def nice_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """Round tick positions covering ``[lo, hi]``: steps of 1, 2, 2.5 or 5 × 10^k, about ``count`` ticks."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(count - 1, 1)
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * mag >= raw * (1 - 1e-9))
    start = math.floor(lo / step + 1e-9) * step
    n = max(1, math.ceil((hi - start) / step - 1e-9))
    return [round(start + i * step, 12) for i in range(n + 1)]


def tick_text(v: float, ticks: Sequence[float], unit: str = "") -> str:
    """A tick label with as many decimals as the step needs (``0.05`` → 2, ``20`` → 0)."""
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else 1.0
    decimals = next((d for d in range(7) if abs(step * 10 ** d - round(step * 10 ** d)) < 1e-6), 6)
    text = f"{v:.{decimals}f}"
    return f"{text} {unit}" if unit == "%" else f"{text}{unit}"


def _scale(lo: float, hi: float, a: float, b: float) -> Callable[[float], float]:
    span = (hi - lo) or 1.0
    return lambda v: a + (v - lo) / span * (b - a)


def _text_w(text: str, size: int = _FONT) -> float:
    return len(text) * _CHAR_W * size / _FONT


def _wrap(text: str, width: float) -> list[str]:
    """Greedy word wrap to ``width`` px (at most 2 lines; a single long word is kept whole)."""
    words, lines, cur = text.split(), [], ""
    for w in words:
        trial = f"{cur} {w}".strip()
        if cur and _text_w(trial) > width:
            lines.append(cur)
            cur = w
        else:
            cur = trial
    lines.append(cur)
    return lines if len(lines) <= 2 else [lines[0], " ".join(lines[1:])]


def _open(w: float, h: float, title: str) -> str:
    return (f"<svg xmlns='http://www.w3.org/2000/svg' class='chart' viewBox='0 0 {w:.0f} {h:.0f}' "
            f"width='{w:.0f}' height='{h:.0f}' role='img' aria-label='{escape(title)}' "
            f"font-family='system-ui,sans-serif' font-size='{_FONT}'><title>{escape(title)}</title>")


def _marker(shape: str, x: float, y: float, color: str, *, hollow: bool, size: float = 4.5) -> str:
    fill = "#fff" if hollow else color
    attrs = f"fill='{fill}' stroke='{color}' stroke-width='2'"
    if shape == "square":
        s = size * 1.5
        return f"<rect x='{x - s:.1f}' y='{y - s:.1f}' width='{2 * s:.1f}' height='{2 * s:.1f}' {attrs}/>"
    if shape == "diamond":
        s = size * 1.4
        return f"<path d='M{x:.1f},{y - s:.1f} L{x + s:.1f},{y:.1f} L{x:.1f},{y + s:.1f} L{x - s:.1f},{y:.1f} Z' {attrs}/>"
    if shape == "triangle":
        s = size * 1.4
        return f"<path d='M{x:.1f},{y - s:.1f} L{x + s:.1f},{y + s * 0.8:.1f} L{x - s:.1f},{y + s * 0.8:.1f} Z' {attrs}/>"
    return f"<circle cx='{x:.1f}' cy='{y:.1f}' r='{size:.1f}' {attrs}/>"


_STROKE = {"line": "stroke-width='2'", "dotted": "stroke-width='2' stroke-dasharray='2,4' stroke-linecap='round'",
           "band": "stroke-width='9' stroke-opacity='0.35' stroke-linecap='round' stroke-linejoin='round'"}


def _legend(items: Sequence[tuple[str, str]], width: float, x0: float) -> tuple[list[str], float]:
    """Legend entries ``(swatch svg at 0,0, label)`` flowed into rows; returns (elements, height)."""
    out, x, y = [], x0, 14.0
    for swatch, label in items:
        w = 30 + _text_w(label) + 18
        if x > x0 and x + w > width - 8:
            x, y = x0, y + 18
        out.append(f"<g transform='translate({x:.1f},{y:.1f})'>{swatch}"
                   f"<text x='28' y='4'>{escape(label)}</text></g>")
        x += w
    return out, y + 12


def _series_swatch(s: Series) -> str:
    hollow = s.style in ("band", "dotted")
    line = "" if s.style == "points" else (f"<line x1='0' y1='0' x2='22' y2='0' stroke='{s.color}' "
                                           f"{_STROKE[s.style]}/>")
    return line + _marker(s.marker, 11, 0, s.color, hollow=hollow, size=3.5)


def line_chart(labels: Sequence[str], series: Sequence[Series], *, target: float | None = None,
               target_text: str = "target", unit: str = "", y_label: str = "", title: str = "") -> str:
    """Categorical x (one slot per label), one or more :class:`Series`; ``None`` values are gaps.

    ``unit == "%"`` gives a 0–100 axis (wider only if a value exceeds 100) with round ticks.
    """
    vals = [v for s in series for v in s.values if v is not None and math.isfinite(v)]
    if target is not None and math.isfinite(target):
        vals.append(target)
    if not labels or not vals:
        return "<p class='muted'>no data yet</p>"
    lo = min(0.0, min(vals))
    hi = max(vals)
    if unit == "%" and hi <= 100:
        ticks = nice_ticks(lo, 100.0)
    else:
        ticks = nice_ticks(lo, hi if hi > lo else lo + 1)
    lo, hi = ticks[0], ticks[-1]

    n = len(labels)
    slot = max(110.0, min(170.0, max(_text_w(lb) for lb in labels) + 24))
    pad_l, pad_r = 64.0, 24.0
    width = max(720.0, pad_l + pad_r + n * slot)
    legend_items = [(_series_swatch(s), s.name) for s in series]
    if target is not None:
        swatch = f"<line x1='0' y1='0' x2='22' y2='0' stroke='{RED}' stroke-width='1.5' stroke-dasharray='6,4'/>"
        legend_items.append((swatch, target_text))
    legend, legend_h = _legend(legend_items, width, pad_l)
    top = legend_h + 22  # room for a value label above a point at the top of the axis
    plot_h = 220.0
    bottom = top + plot_h
    label_lines = [_wrap(lb, slot - 8) for lb in labels]
    height = bottom + 14 + 14 * max(len(ls) for ls in label_lines) + 6
    def xs(i: int) -> float:
        return pad_l + slot * (i + 0.5)

    ys = _scale(lo, hi, bottom, top)

    out = [_open(width, height, title)]
    out.extend(legend)
    for t in ticks:
        y = ys(t)
        out.append(f"<line x1='{pad_l}' y1='{y:.1f}' x2='{width - pad_r}' y2='{y:.1f}' stroke='#e2e8f0'/>"
                   f"<text x='{pad_l - 6}' y='{y + 4:.1f}' text-anchor='end' fill='#4a5568'>"
                   f"{escape(tick_text(t, ticks, unit))}</text>")
    out.append(f"<line x1='{pad_l}' y1='{bottom:.1f}' x2='{width - pad_r}' y2='{bottom:.1f}' stroke='#a0aec0'/>")
    for i, lines in enumerate(label_lines):
        spans = "".join(f"<tspan x='{xs(i):.1f}' dy='{0 if k == 0 else 14}'>{escape(t)}</tspan>"
                        for k, t in enumerate(lines))
        out.append(f"<text x='{xs(i):.1f}' y='{bottom + 16:.1f}' text-anchor='middle' fill='#1a202c'>{spans}</text>")
    if y_label:
        cy = (top + bottom) / 2
        out.append(f"<text x='14' y='{cy:.0f}' transform='rotate(-90 14 {cy:.0f})' text-anchor='middle' "
                   f"fill='#4a5568'>{escape(y_label)}</text>")
    if target is not None and math.isfinite(target) and lo <= target <= hi:
        y = ys(target)
        out.append(f"<line x1='{pad_l}' y1='{y:.1f}' x2='{width - pad_r}' y2='{y:.1f}' stroke='{RED}' "
                   f"stroke-width='1.5' stroke-dasharray='6,4'/>")
    order = sorted(range(len(series)), key=lambda k: {"band": 0, "dotted": 1, "points": 2, "line": 3}[series[k].style])
    for k in order:
        s = series[k]
        pts = [(xs(i), ys(v)) for i, v in enumerate(s.values) if v is not None and math.isfinite(v)]
        if s.style != "points" and len(pts) > 1:
            out.append(f"<polyline fill='none' stroke='{s.color}' {_STROKE[s.style]} points='"
                       + " ".join(f"{x:.1f},{y:.1f}" for x, y in pts) + "'/>")
    for k in order:
        s = series[k]
        big = s.style == "band"
        for i, v in enumerate(s.values):
            if v is None or not math.isfinite(v):
                continue
            x, y = xs(i), ys(v)
            mark = _marker(s.marker, x, y, s.color, hollow=s.style in ("band", "dotted"), size=6 if big else 4.5)
            out.append(f"<g>{mark}<title>{escape(s.name)} · {escape(labels[i])}: {v:.4g}{escape(unit)}</title></g>")
            if s.value_labels:
                out.append(f"<text x='{x:.1f}' y='{y - 11:.1f}' text-anchor='middle' font-weight='600' "
                           f"fill='{s.color}'>{v:.3g}{escape(unit)}</text>")
    out.append("</svg>")
    return "".join(out)


def _data_range(values: Sequence[float], marker: float | None) -> tuple[float, float]:
    """A probability axis zoomed onto the data: the whole 0–1 range when the scores spread over it,
    a close-up when they all sit in a narrow band (an undertrained model's 0.50–0.52)."""
    pts = [v for v in values if math.isfinite(v)] + ([marker] if marker is not None and math.isfinite(marker) else [])
    lo, hi = min(pts), max(pts)
    if hi - lo >= 0.4 or not pts:
        return 0.0, 1.0
    pad = max((hi - lo) * 0.08, 1e-6)
    ticks = nice_ticks(max(0.0, lo - pad), min(1.0, hi + pad) if hi + pad > lo - pad else lo + pad)
    return ticks[0], ticks[-1]


def histogram(groups: dict[str, Sequence[float]], *, bins: int = 30, marker: float | None = None,
              marker_text: str = "threshold", title: str = "", colors: Sequence[str] = (BLUE, VERMILION)) -> str:
    """Overlaid histograms (e.g. ``siamese_score`` of PASS vs defect rows) with an optional marker line."""
    allv = [float(v) for g in groups.values() for v in g if math.isfinite(float(v))]
    if not allv:
        return "<p class='muted'>no scores</p>"
    lo, hi = _data_range(allv, marker)
    width = (hi - lo) / bins or 1.0
    counts: dict[str, list[int]] = {}
    for name, g in groups.items():
        c = [0] * bins
        for v in g:
            if math.isfinite(v):
                c[min(bins - 1, max(0, int((v - lo) / width)))] += 1
        counts[name] = c
    top_count = max(max(c) for c in counts.values()) or 1
    W, pad_l, pad_r = 640.0, 52.0, 20.0
    items = [(f"<rect x='4' y='-5' width='14' height='10' fill='{colors[i % len(colors)]}' fill-opacity='0.55'/>",
              f"{name} ({sum(c)})") for i, (name, c) in enumerate(counts.items())]
    if marker is not None and math.isfinite(marker):
        items.append((f"<line x1='0' y1='0' x2='22' y2='0' stroke='{RED}' stroke-width='1.5' stroke-dasharray='4,3'/>",
                      f"{marker_text} {marker:.4g}"))
    legend, legend_h = _legend(items, W, pad_l)
    top, plot_h = legend_h + 10, 170.0
    bottom = top + plot_h
    H = bottom + 40
    xs = _scale(lo, hi, pad_l, W - pad_r)
    yt = nice_ticks(0, top_count, 5)
    ys = _scale(0, yt[-1], bottom, top)
    out = [_open(W, H, title)]
    out.extend(legend)
    for t in yt:
        if abs(t - round(t)) > 1e-9:
            continue  # counts are whole numbers
        out.append(f"<line x1='{pad_l}' y1='{ys(t):.1f}' x2='{W - pad_r}' y2='{ys(t):.1f}' stroke='#e2e8f0'/>"
                   f"<text x='{pad_l - 6}' y='{ys(t) + 4:.1f}' text-anchor='end' fill='#4a5568'>{round(t)}</text>")
    xt = nice_ticks(lo, hi, 6)
    for t in xt:
        if lo - 1e-12 <= t <= hi + 1e-12:
            out.append(f"<text x='{xs(t):.1f}' y='{bottom + 16:.1f}' text-anchor='middle' fill='#4a5568'>"
                       f"{escape(tick_text(t, xt))}</text>")
    out.append(f"<line x1='{pad_l}' y1='{bottom:.1f}' x2='{W - pad_r}' y2='{bottom:.1f}' stroke='#a0aec0'/>"
               f"<text x='{(pad_l + W - pad_r) / 2:.0f}' y='{bottom + 34:.1f}' text-anchor='middle' fill='#4a5568'>"
               f"siamese_score (P(defect))</text>")
    for gi, (name, c) in enumerate(counts.items()):
        color = colors[gi % len(colors)]
        for b, n in enumerate(c):
            if n:
                x0 = xs(lo + b * width)
                out.append(f"<rect x='{x0:.1f}' y='{ys(n):.1f}' width='{max(xs(lo + width) - xs(lo) - 0.5, 0.8):.1f}' "
                           f"height='{ys(0) - ys(n):.1f}' fill='{color}' fill-opacity='0.55'>"
                           f"<title>{escape(name)}: {n} in [{lo + b * width:.4g}, {lo + (b + 1) * width:.4g})</title></rect>")
    if marker is not None and math.isfinite(marker):
        x = xs(min(max(marker, lo), hi))
        out.append(f"<line x1='{x:.1f}' y1='{top:.1f}' x2='{x:.1f}' y2='{bottom:.1f}' stroke='{RED}' "
                   f"stroke-width='1.5' stroke-dasharray='4,3'/>")
    out.append("</svg>")
    return "".join(out)


def hbar_chart(items: Sequence[tuple[str, float]], *, unit: str = "", title: str = "", color: str = BLUE) -> str:
    """Horizontal bars from zero (negative values extend left of the zero line)."""
    if not items:
        return "<p class='muted'>no data</p>"
    row = 20
    label_w = min(260.0, max(_text_w(name) for name, _ in items) + 12)
    W, pad_r = 640.0, 70.0
    H = row * len(items) + 12
    lo = min(0.0, min(v for _, v in items))
    hi = max(0.0, max(v for _, v in items)) or 1.0
    xs = _scale(lo, hi, label_w, W - pad_r)
    out = [_open(W, H, title)]
    x0 = xs(0.0)
    for i, (name, v) in enumerate(items):
        y = 6 + i * row
        x1 = xs(v)
        out.append(f"<text x='{label_w - 6:.1f}' y='{y + 13}' text-anchor='end'>{escape(name)}</text>"
                   f"<rect x='{min(x0, x1):.1f}' y='{y + 3}' width='{max(abs(x1 - x0), 1):.1f}' height='{row - 6}' "
                   f"fill='{color}'/><text x='{max(x0, x1) + 4:.1f}' y='{y + 13}' fill='#4a5568'>"
                   f"{v:.3g}{escape(unit)}</text>")
    out.append(f"<line x1='{x0:.1f}' y1='2' x2='{x0:.1f}' y2='{H - 2}' stroke='#a0aec0'/></svg>")
    return "".join(out)
