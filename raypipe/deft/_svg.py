"""Tiny inline-SVG charts for the report (no plotting library, no network, no external files)."""

from __future__ import annotations

import math
from html import escape
from typing import Sequence

_W, _H, _PAD = 640, 260, 44
COLORS = ("#2b6cb0", "#c05621", "#2f855a", "#6b46c1", "#b83280", "#718096")


def _scale(lo: float, hi: float, a: float, b: float):
    span = (hi - lo) or 1.0
    return lambda v: a + (v - lo) / span * (b - a)


def line_chart(labels: Sequence[str], series: dict[str, Sequence[float | None]], *,
               target: float | None = None, y_label: str = "", title: str = "") -> str:
    """Points joined by lines per series over categorical x; ``None`` values are gaps."""
    vals = [v for s in series.values() for v in s if v is not None and math.isfinite(v)]
    if target is not None:
        vals.append(target)
    if not labels or not vals:
        return "<p class='muted'>no data yet</p>"
    lo, hi = min(0.0, min(vals)), max(vals) * 1.1 or 1.0
    n = len(labels)
    xs = _scale(0, max(n - 1, 1), _PAD + 20, _W - 20)
    ys = _scale(lo, hi, _H - _PAD, 16)
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {_W} {_H}' width='{_W}' height='{_H}' "
           f"role='img' aria-label='{escape(title)}'>"]
    out.append(f"<line x1='{_PAD}' y1='{_H - _PAD}' x2='{_W - 10}' y2='{_H - _PAD}' stroke='#999'/>")
    out.append(f"<line x1='{_PAD}' y1='10' x2='{_PAD}' y2='{_H - _PAD}' stroke='#999'/>")
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        y = ys(v)
        out.append(f"<text x='{_PAD - 4}' y='{y + 4:.1f}' font-size='10' text-anchor='end'>{v:.3g}</text>")
        out.append(f"<line x1='{_PAD}' y1='{y:.1f}' x2='{_W - 10}' y2='{y:.1f}' stroke='#eee'/>")
    for i, lb in enumerate(labels):
        out.append(f"<text x='{xs(i):.1f}' y='{_H - _PAD + 16}' font-size='10' text-anchor='middle'>{escape(lb)}</text>")
    if target is not None:
        y = ys(target)
        out.append(f"<line x1='{_PAD}' y1='{y:.1f}' x2='{_W - 10}' y2='{y:.1f}' stroke='#e53e3e' "
                   f"stroke-dasharray='6,4'/><text x='{_W - 12}' y='{y - 4:.1f}' font-size='10' "
                   f"text-anchor='end' fill='#e53e3e'>target {target:g}</text>")
    for si, (name, s) in enumerate(series.items()):
        color = COLORS[si % len(COLORS)]
        pts = [(xs(i), ys(v)) for i, v in enumerate(s) if v is not None and math.isfinite(v)]
        if len(pts) > 1:
            out.append("<polyline fill='none' stroke='{}' stroke-width='2' points='{}'/>".format(
                color, " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)))
        for i, v in enumerate(s):
            if v is None or not math.isfinite(v):
                continue
            out.append(f"<circle cx='{xs(i):.1f}' cy='{ys(v):.1f}' r='4' fill='{color}'>"
                       f"<title>{escape(name)} {escape(labels[i])}: {v:.4g}</title></circle>")
            out.append(f"<text x='{xs(i):.1f}' y='{ys(v) - 8:.1f}' font-size='10' text-anchor='middle' "
                       f"fill='{color}'>{v:.3g}</text>")
        out.append(f"<text x='{_PAD + 8 + si * 150}' y='{_H - 6}' font-size='11' fill='{color}'>&#9679; {escape(name)}</text>")
    if y_label:
        out.append(f"<text x='12' y='{_H / 2:.0f}' font-size='11' transform='rotate(-90 12 {_H / 2:.0f})' "
                   f"text-anchor='middle'>{escape(y_label)}</text>")
    out.append("</svg>")
    return "".join(out)


def histogram(groups: dict[str, Sequence[float]], *, bins: int = 20, lo: float = 0.0, hi: float = 1.0,
              marker: float | None = None, title: str = "") -> str:
    """Overlaid histograms (e.g. siamese_score of PASS vs defect rows) with an optional threshold marker."""
    if not any(len(g) for g in groups.values()):
        return "<p class='muted'>no scores</p>"
    width = (hi - lo) / bins or 1.0
    counts = {}
    for name, g in groups.items():
        c = [0] * bins
        for v in g:
            if math.isfinite(v):
                c[min(bins - 1, max(0, int((v - lo) / width)))] += 1
        counts[name] = c
    top = max(max(c) for c in counts.values()) or 1
    xs = _scale(lo, hi, _PAD, _W - 10)
    ys = _scale(0, top, _H - _PAD, 16)
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {_W} {_H}' width='{_W}' height='{_H}' "
           f"role='img' aria-label='{escape(title)}'>",
           f"<line x1='{_PAD}' y1='{_H - _PAD}' x2='{_W - 10}' y2='{_H - _PAD}' stroke='#999'/>"]
    for k in range(6):
        v = lo + (hi - lo) * k / 5
        out.append(f"<text x='{xs(v):.1f}' y='{_H - _PAD + 14}' font-size='10' text-anchor='middle'>{v:.2g}</text>")
    out.append(f"<text x='{_PAD - 4}' y='20' font-size='10' text-anchor='end'>{top}</text>")
    for gi, (name, c) in enumerate(counts.items()):
        color = COLORS[gi % len(COLORS)]
        for b, n in enumerate(c):
            if n:
                x0 = xs(lo + b * width)
                out.append(f"<rect x='{x0:.1f}' y='{ys(n):.1f}' width='{xs(lo + width) - xs(lo):.1f}' "
                           f"height='{ys(0) - ys(n):.1f}' fill='{color}' fill-opacity='0.45'>"
                           f"<title>{escape(name)}: {n}</title></rect>")
        out.append(f"<text x='{_PAD + 8 + gi * 150}' y='{_H - 6}' font-size='11' fill='{color}'>&#9632; "
                   f"{escape(name)} ({sum(c)})</text>")
    if marker is not None and math.isfinite(marker):
        x = xs(min(max(marker, lo), hi))
        out.append(f"<line x1='{x:.1f}' y1='12' x2='{x:.1f}' y2='{_H - _PAD}' stroke='#e53e3e' stroke-dasharray='4,3'/>"
                   f"<text x='{x + 3:.1f}' y='22' font-size='10' fill='#e53e3e'>t={marker:.3g}</text>")
    out.append("</svg>")
    return "".join(out)


def hbar_chart(items: Sequence[tuple[str, float]], *, unit: str = "", title: str = "") -> str:
    """Horizontal bars (stage timings, per-label weakness)."""
    if not items:
        return "<p class='muted'>no data</p>"
    row = 18
    h = row * len(items) + 20
    top = max(v for _, v in items) or 1.0
    xs = _scale(0, top, 170, _W - 70)
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {_W} {h}' width='{_W}' height='{h}' "
           f"role='img' aria-label='{escape(title)}'>"]
    for i, (name, v) in enumerate(items):
        y = 10 + i * row
        out.append(f"<text x='165' y='{y + 12}' font-size='11' text-anchor='end'>{escape(name)}</text>"
                   f"<rect x='170' y='{y + 2}' width='{max(xs(v) - 170, 1):.1f}' height='{row - 5}' fill='{COLORS[0]}'/>"
                   f"<text x='{xs(v) + 4:.1f}' y='{y + 12}' font-size='10'>{v:.3g}{escape(unit)}</text>")
    out.append("</svg>")
    return "".join(out)
