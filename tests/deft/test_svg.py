"""The report's inline SVG charts: round percent ticks, distinct series, labels inside the picture."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from raypipe.deft import _svg

NS = "{http://www.w3.org/2000/svg}"


def _texts(svg: str) -> list[ET.Element]:
    return [t for t in ET.fromstring(svg).iter(f"{NS}text")]


@pytest.mark.parametrize(("lo", "hi", "expected"), [
    (0, 88.9, [0, 20, 40, 60, 80, 100]),
    (0, 100, [0, 20, 40, 60, 80, 100]),
    (0, 26, [0, 10, 20, 30]),
    (0.5, 0.52, [0.5, 0.505, 0.51, 0.515, 0.52]),
    (0, 110, [0, 25, 50, 75, 100, 125]),
])
def test_nice_ticks_are_round_and_cover_the_range(lo, hi, expected):
    ticks = _svg.nice_ticks(lo, hi)
    assert ticks == pytest.approx(expected)
    assert ticks[0] <= lo and ticks[-1] >= hi


def test_percent_axis_has_round_ticks_and_a_unit():
    svg = _svg.line_chart(["Phase 1 best", "baseline", "phase3_best"],
                          [_svg.Series("KPI FAR", [None, 100.0, 76.98], _svg.BLUE)], target=10, unit="%")
    ticks = [t.text for t in _texts(svg) if t.get("text-anchor") == "end" and t.text and t.text.endswith(" %")]
    assert ticks == ["0 %", "20 %", "40 %", "60 %", "80 %", "100 %"]  # never 27.4 / 54.8 / 82.2 / 110


def test_identical_series_stay_visible_and_distinct():
    same = [90.9, 93.6, 98.1]
    svg = _svg.line_chart(["baseline", "iter1", "iter2"],
                          [_svg.Series("KPI FAR@95% recall", same, _svg.ORANGE, "band", "square"),
                           _svg.Series("KPI FAR at 100% recall", same, _svg.BLUE, "line", "circle")], unit="%")
    root = ET.fromstring(svg)
    lines = {p.get("stroke"): p for p in root.iter(f"{NS}polyline")}
    assert set(lines) == {_svg.ORANGE, _svg.BLUE}
    # the halo is wider than the headline and drawn first, so where they coincide both show
    assert float(lines[_svg.ORANGE].get("stroke-width")) > 3 * float(lines[_svg.BLUE].get("stroke-width"))
    order = [p.get("stroke") for p in root.iter(f"{NS}polyline")]
    assert order == [_svg.ORANGE, _svg.BLUE]
    # different marker shapes, and both names in the legend
    assert len(list(root.iter(f"{NS}rect"))) >= 3 and len(list(root.iter(f"{NS}circle"))) >= 3
    legend = [t.text for t in _texts(svg)]
    assert "KPI FAR@95% recall" in legend and "KPI FAR at 100% recall" in legend


def test_x_labels_fit_inside_the_chart():
    labels = ["Phase 1 best", "baseline", "iter1", "iter2", "iter3", "Phase 3 best"]
    svg = _svg.line_chart(labels, [_svg.Series("s", [1, 2, 3, 4, 5, 6], _svg.BLUE)], unit="%")
    width = float(re.search(r"viewBox='0 0 (\d+)", svg).group(1))
    spans = [s for s in ET.fromstring(svg).iter(f"{NS}tspan")]
    for s in spans:
        half = len(s.text) * _svg._CHAR_W / 2
        assert float(s.get("x")) - half >= 0 and float(s.get("x")) + half <= width, s.text
    assert {s.text for s in spans} == set(labels)  # every label whole (none cut to "phase3_be")


def test_histogram_zooms_onto_a_narrow_score_band():
    svg = _svg.histogram({"PASS": [0.5101, 0.5110, 0.5115], "defect": [0.5106, 0.5120]}, marker=0.5105)
    xticks = [t.text for t in _texts(svg) if t.get("text-anchor") == "middle" and t.text and t.text[0].isdigit()]
    assert len(set(xticks)) == len(xticks) >= 3  # distinct labels, not "0.5 0.5 0.5"
    assert all(0.50 <= float(x) <= 0.52 for x in xticks)


def test_hbar_chart_draws_negative_values_left_of_zero():
    svg = _svg.hbar_chart([("PASS", 0.06), ("bridge", -0.13)])
    rects = list(ET.fromstring(svg).iter(f"{NS}rect"))
    zero = float(next(ET.fromstring(svg).iter(f"{NS}line")).get("x1"))
    assert float(rects[0].get("x")) == pytest.approx(zero, abs=0.2)  # positive bar starts at zero
    assert float(rects[1].get("x")) + float(rects[1].get("width")) == pytest.approx(zero, abs=0.2)
