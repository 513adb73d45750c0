"""Synthetic PCB components and the defects drawn into them (geometry only; see ``_render``).

A component is described once (:class:`Component`, random but fixed per row); the golden image is
its defect-free scene, the capture is the same scene with the row's defect applied. Component
types and the defects each can carry are the ones AOI engineers meet on SMT lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from raypipe.workspace._render import Background, Prim

COMPONENT_TYPES = ("resistor", "capacitor", "ic", "diode", "transistor")
DESIGNATOR = {"resistor": "R", "capacitor": "C", "ic": "U", "diode": "D", "transistor": "Q"}
PASS_TYPE_WEIGHTS = {"resistor": 0.33, "capacitor": 0.33, "ic": 0.12, "diode": 0.11, "transistor": 0.11}
DEFECT_KINDS = ("missing", "shift", "bridge", "tombstone", "excess_solder", "foreign_material", "polarity")
# which component types can physically carry each defect
DEFECT_TYPES: dict[str, tuple[str, ...]] = {
    "missing": COMPONENT_TYPES,
    "shift": COMPONENT_TYPES,
    "bridge": ("ic", "resistor", "capacitor"),
    "tombstone": ("resistor", "capacitor", "diode"),
    "excess_solder": COMPONENT_TYPES,
    "foreign_material": COMPONENT_TYPES,
    "polarity": ("ic", "diode", "transistor"),
}
_CHIPS = ("resistor", "capacitor", "diode")


@dataclass(frozen=True)
class Component:
    """Geometry of one component in local coordinates (u along its axis, v across)."""

    ctype: str
    cx: float
    cy: float
    vertical: bool
    length: float  # body extent along u
    width: float  # body extent along v
    tint: float
    n_pins: int = 0  # ic: pins per side
    pin1_corner: int = 0  # ic: 0..3
    band_end: int = 1  # diode cathode band end, ±1
    legs_up: int = 1  # transistor: +1 → two legs on +v side
    neighbour: int = 0  # chip: neighbouring pad on the ±v side (0: none)
    neighbour_u: float = 0.0
    marking: tuple[float, ...] = ()
    traces: tuple[tuple[float, float, float, float], ...] = ()
    background: Background = field(default_factory=lambda: Background(()))


def random_component(ctype: str, rng: np.random.Generator, need_neighbour: bool = False) -> Component:
    """Draw a component of ``ctype`` with random size, orientation, colour and board surroundings."""
    freqs = tuple(
        (float(rng.uniform(0.05, 0.35)), float(rng.uniform(0.05, 0.35)), float(rng.uniform(0, 6.28)),
         float(rng.uniform(0.02, 0.06)))
        for _ in range(3)
    )
    bg = Background(freqs, tint=float(rng.uniform(0.85, 1.15)))
    traces = []
    for _ in range(int(rng.integers(0, 3))):
        if rng.random() < 0.5:
            y = float(rng.uniform(2, 62))
            traces.append((0.0, y, 64.0, y + float(rng.uniform(1.5, 3.0))))
        else:
            x = float(rng.uniform(2, 62))
            traces.append((x, 0.0, x + float(rng.uniform(1.5, 3.0)), 64.0))
    common: dict[str, Any] = dict(
        ctype=ctype,
        cx=32.0 + float(rng.uniform(-2, 2)),
        cy=32.0 + float(rng.uniform(-2, 2)),
        vertical=bool(rng.random() < 0.5),
        tint=float(rng.uniform(0.85, 1.15)),
        traces=tuple(traces),
        background=bg,
    )
    if ctype in _CHIPS:
        neighbour = int(rng.choice([-1, 1])) if (need_neighbour or rng.random() < 0.5) else 0
        return Component(
            length=float(rng.uniform(24, 32)),
            width=float(rng.uniform(11, 16)),
            band_end=int(rng.choice([-1, 1])),
            neighbour=neighbour,
            neighbour_u=float(rng.choice([-1, 1]) * rng.uniform(6, 10)),
            marking=tuple(float(rng.uniform(0.8, 1.2)) for _ in range(3)) if ctype == "resistor" else (),
            **common,
        )
    if ctype == "ic":
        return Component(
            length=float(rng.uniform(30, 38)),
            width=float(rng.uniform(22, 28)),
            n_pins=int(rng.integers(4, 7)),
            pin1_corner=int(rng.integers(0, 4)),
            **common,
        )
    return Component(length=float(rng.uniform(20, 25)), width=float(rng.uniform(11, 14)),
                     legs_up=int(rng.choice([-1, 1])), **common)


@dataclass(frozen=True)
class Defect:
    """A defect's kind and its random parameters (drawn once per row)."""

    kind: str
    params: tuple[float, ...] = ()


def random_defect(kind: str, comp: Component, rng: np.random.Generator) -> Defect:
    if kind == "shift":
        along = float(rng.random() < 0.5)
        mag = float(rng.uniform(3.0, 5.0) * rng.choice([-1, 1]))
        return Defect(kind, (along, mag))
    if kind == "bridge":
        return Defect(kind, (float(rng.integers(0, max(comp.n_pins - 1, 1))), float(rng.choice([-1, 1]))))
    if kind == "tombstone":
        return Defect(kind, (float(rng.choice([-1, 1])),))
    if kind == "excess_solder":
        return Defect(kind, (float(rng.choice([-1, 0, 1])), float(rng.uniform(3.0, 4.5)),
                             float(rng.integers(0, max(comp.n_pins, 1)))))
    if kind == "foreign_material":
        # a 3–5 px speck (light or dark) or a 9-px fibre, on bare board beside the part: small, but a
        # blob in a flat area is a different pattern from the edge echoes of a misaligned PASS capture
        variant, r, ang = int(rng.integers(0, 3)), float(rng.uniform(1.5, 2.4)), float(rng.uniform(0, np.pi))
        x, y = _on_bare_board(comp, rng, clearance=5.5 if variant == 2 else r + 1.5)
        return Defect(kind, (float(variant), x, y, r, ang))
    return Defect(kind)


def _on_bare_board(comp: Component, rng: np.random.Generator, clearance: float) -> tuple[float, float]:
    """A point at least ``clearance`` from the part's silkscreen outline (which holds its body, pads
    and pins), from a neighbouring pad and from the image border.

    Debris drawn over a dark body or against an edge is invisible, or indistinguishable from the
    edge echo of a 2-px misalignment, at 64 px: no data could teach it, and one such row pins FAR at
    100 % recall.
    """
    hu, hv = _outline(comp)
    if comp.neighbour:
        hv = comp.width / 2 + 14.0  # the neighbouring pad lies beyond the outline
    lo, hi = clearance + 0.5, 63.5 - clearance
    for _ in range(500):
        x, y = float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi))
        u, v = (y - comp.cy, x - comp.cx) if comp.vertical else (x - comp.cx, y - comp.cy)
        if abs(u) > hu + clearance or abs(v) > hv + clearance:
            return x, y
    return lo, lo  # no room beside a part that fills the view: the corner is always bare board


def _outline(comp: Component) -> tuple[float, float]:
    """Half extents (along, across) of the part's silkscreen outline."""
    hl, hw = comp.length / 2, comp.width / 2
    if comp.ctype in _CHIPS:
        return hl + 7.0, hw + 3.0
    if comp.ctype == "ic":
        return hl + 2.0, hw + 9.0
    return hl + 2.0, hw + 7.0


class _Frame:
    """Maps local (u, v) rectangles to design-space prims for one component."""

    def __init__(self, comp: Component, du: float = 0.0, dv: float = 0.0) -> None:
        self.c, self.du, self.dv = comp, du, dv

    def rect(self, u0: float, v0: float, u1: float, v1: float, material: str, h: float, tint: float = 1.0) -> Prim:
        return Prim("rect", self._box(u0, v0, u1, v1), material, h, tint=tint)

    def ramp(self, u0: float, v0: float, u1: float, v1: float, material: str, h0: float, h1: float,
             axis: str) -> Prim:
        """Height goes from h0 at the low end of local ``axis`` ('u' or 'v') to h1 at the high end."""
        local_to_design = {"u": "y" if self.c.vertical else "x", "v": "x" if self.c.vertical else "y"}
        return Prim("ramp", self._box(u0, v0, u1, v1), material, h0, h1, "+" + local_to_design[axis])

    def disc(self, u: float, v: float, r: float, material: str, h: float) -> Prim:
        x, y = self._pt(u, v)
        return Prim("disc", (x, y, r, 0.0), material, h)

    def _pt(self, u: float, v: float) -> tuple[float, float]:
        u, v = u + self.du, v + self.dv
        return (self.c.cx + v, self.c.cy + u) if self.c.vertical else (self.c.cx + u, self.c.cy + v)

    def _box(self, u0: float, v0: float, u1: float, v1: float) -> tuple[float, float, float, float]:
        xa, ya = self._pt(u0, v0)
        xb, yb = self._pt(u1, v1)
        return (min(xa, xb), min(ya, yb), max(xa, xb), max(ya, yb))


def build_scene(comp: Component, defect: Defect | None = None) -> list[Prim]:
    """The component's primitives, with ``defect`` (if any) drawn in."""
    kind = defect.kind if defect else None
    p = defect.params if defect else ()
    prims = [Prim("rect", t, "trace", 0.02) for t in comp.traces]
    # pads and silkscreen belong to the board: a reversed part does not move them
    footprint_up, footprint_end = comp.legs_up, comp.band_end
    if kind == "polarity":
        comp = _flip_polarity(comp)
    if comp.ctype in _CHIPS:
        prims += _chip(comp, kind, p, footprint_end)
    elif comp.ctype == "ic":
        prims += _ic(comp, kind, p)
    else:
        prims += _transistor(comp, kind, p, footprint_up)
    if kind == "foreign_material":
        variant, x, y, r, ang = p
        if variant < 2:  # speck, light or dark
            prims.append(Prim("disc", (x, y, r, 0.0), "debris_light" if variant == 0 else "debris_dark", 0.3))
        else:  # a fibre about 1.5 px thick and 9 px long
            ex, ey = 4.5 * np.cos(ang), 4.5 * np.sin(ang)
            for k in np.linspace(-1, 1, 9):
                prims.append(Prim("disc", (x + k * ex, y + k * ey, 0.8, 0.0), "debris_light", 0.25))
    return prims


def _flip_polarity(comp: Component) -> Component:
    if comp.ctype == "ic":
        return replace(comp, pin1_corner=(comp.pin1_corner + 2) % 4)
    if comp.ctype == "diode":
        return replace(comp, band_end=-comp.band_end)
    return replace(comp, legs_up=-comp.legs_up)


def _silk_outline(f: _Frame, hu: float, hv: float) -> list[Prim]:
    return [
        f.rect(-hu, -hv, hu, -hv + 0.8, "silk", 0.03), f.rect(-hu, hv - 0.8, hu, hv, "silk", 0.03),
        f.rect(-hu, -hv, -hu + 0.8, hv, "silk", 0.03), f.rect(hu - 0.8, -hv, hu, hv, "silk", 0.03),
    ]


def _chip(c: Component, kind: str | None, p: tuple[float, ...], footprint_end: int) -> list[Prim]:
    board = _Frame(c)
    hl, hw, term = c.length / 2, c.width / 2, 3.5
    out = _silk_outline(board, *_outline(c))
    pads = [(-hl - 5.0, -hl + 4.0), (hl - 4.0, hl + 5.0)]
    for u0, u1 in pads:
        out.append(board.rect(u0, -hw - 1.5, u1, hw + 1.5, "copper", 0.05))
    if c.ctype == "diode":
        # silkscreen cathode bar beyond the pad on the cathode side; belongs to the board, so it
        # marks where the band should be (drawn from the footprint's polarity, see build_scene)
        a, b = sorted((footprint_end * (hl + 5.2), footprint_end * (hl + 6.4)))
        out.append(board.rect(a, -hw - 1.5, b, hw + 1.5, "silk", 0.03))
    if c.neighbour:
        s, nu = c.neighbour, c.neighbour_u
        v0, v1 = sorted((s * (hw + 8.0), s * (hw + 14.0)))
        out.append(board.rect(nu - 3.0, v0, nu + 3.0, v1, "copper", 0.05))
        out.append(board.rect(nu - 2.2, v0 + 0.8, nu + 2.2, v1 - 0.8, "tin", 0.15))
    if kind == "missing":
        return out + [board.rect(u0 + 1.0, -hw, u1 - 1.0, hw, "paste", 0.1) for u0, u1 in pads]
    if kind == "tombstone":
        down = int(p[0])  # the end that stays on its pad; the other end stands up
        lifted = pads[0] if down > 0 else pads[1]
        out.append(board.rect(lifted[0] + 1.0, -hw, lifted[1] - 1.0, hw, "paste", 0.1))
        end = down * hl
        u0, u1 = sorted((end, end - down * 7.0))
        out.append(board.rect(u0, -hw, u1, hw, "tin", 1.3))  # the end face seen from above
        f0, f1 = sorted((end, end + down * 3.0))
        out.append(board.ramp(f0, -hw, f1, hw, "tin", 1.0 if down > 0 else 0.05, 0.05 if down > 0 else 1.0, "u"))
        return out
    du = dv = 0.0
    if kind == "shift":
        along, mag = p
        du, dv = (mag, 0.0) if along else (0.0, mag)
    part = _Frame(c, du, dv)
    body = {"resistor": "body_resistor", "capacitor": "body_capacitor", "diode": "body_resistor"}[c.ctype]
    out.append(part.rect(-hl, -hw, hl, hw, body, 0.6, tint=c.tint))
    if c.ctype != "diode":
        out += [part.rect(-hl, -hw, -hl + term, hw, "tin", 0.6), part.rect(hl - term, -hw, hl, hw, "tin", 0.6)]
    if c.ctype == "resistor":
        for k, h in zip((-4.0, -0.5, 3.0), c.marking, strict=True):
            out.append(part.rect(k, -2.0 * h, k + 2.2, 2.0 * h, "marking", 0.61))
    if c.ctype == "diode":
        # cathode band, 5 units wide: a reversed diode moves it to the other end (the board's cathode
        # mark, drawn with the pads, stays)
        b = c.band_end * (hl - 6.0)
        out.append(part.rect(min(b, b + c.band_end * 5.0), -hw, max(b, b + c.band_end * 5.0), hw, "band", 0.61))
    flen, fh = 4.5, 0.5
    big = kind == "excess_solder"
    ends = (-1, 1) if not big or p[0] == 0 else (int(p[0]),)
    for e in (-1, 1):
        grow = big and e in ends
        L, H = (flen + 2.5, 0.85) if grow else (flen, fh)
        if e < 0:
            out.append(part.ramp(-hl - L, -hw, -hl, hw, "tin", 0.05, H, "u"))
        else:
            out.append(part.ramp(hl, -hw, hl + L, hw, "tin", H, 0.05, "u"))
        if grow:
            out.append(part.disc(e * (hl + 2.0), 0.0, p[1], "tin", 0.7))
    if kind == "bridge":
        s, nu = c.neighbour or 1, c.neighbour_u
        v0, v1 = sorted((s * hw, s * (hw + 9.0)))
        end = hl if nu > 0 else -hl
        out.append(board.rect(min(end, nu) - 1.5, v0, max(end, nu) + 1.5, v1, "tin", 0.35))
    return out


def _ic(c: Component, kind: str | None, p: tuple[float, ...]) -> list[Prim]:
    board = _Frame(c)
    hl, hw, n = c.length / 2, c.width / 2, c.n_pins
    pitch = c.length / n
    pin_w = pitch * 0.45
    centres = [-hl + pitch * (i + 0.5) for i in range(n)]
    out = _silk_outline(board, *_outline(c))
    for s in (-1, 1):
        for u in centres:
            v0, v1 = sorted((s * (hw + 2.0), s * (hw + 8.0)))
            out.append(board.rect(u - pin_w / 2 - 0.8, v0, u + pin_w / 2 + 0.8, v1, "copper", 0.05))
    if kind == "missing":
        for s in (-1, 1):
            for u in centres:
                v0, v1 = sorted((s * (hw + 2.8), s * (hw + 7.2)))
                out.append(board.rect(u - pin_w / 2, v0, u + pin_w / 2, v1, "paste", 0.1))
        return out
    # a shift of the whole part by 3–5 units: less would hide inside the 2-px capture misalignment
    part = _Frame(c, p[1] if kind == "shift" else 0.0, 0.0)
    for s in (-1, 1):
        for i, u in enumerate(centres):
            v0, v1 = sorted((s * hw, s * (hw + 6.0)))
            out.append(part.rect(u - pin_w / 2, v0, u + pin_w / 2, v1, "tin", 0.35))
            f0, f1 = sorted((s * (hw + 5.0), s * (hw + 7.5)))
            grow = kind == "excess_solder" and i == int(p[2]) and s == (1 if p[0] >= 0 else -1)
            h0, h1 = (0.3, 0.05) if s > 0 else (0.05, 0.3)
            out.append(part.ramp(u - pin_w / 2, f0, u + pin_w / 2, f1, "tin", h0, h1, "v"))
            if grow:
                # a blob 6–9 px across: smaller ones vanish among the pin-edge echoes at 64 px
                out.append(part.disc(u, s * (hw + 6.5), p[1], "tin", 0.7))
    out.append(part.rect(-hl, -hw, hl, hw, "body_ic", 0.8, tint=c.tint))
    # pin-1 mark: a white printed dot about 4.5 px across, kept 4 px clear of the body's edge. A 3-px
    # dark dimple near the edge was invisible at 64 px: within the 2-px misalignment band of the
    # bright body edge it reads as that edge's echo.
    cu = (-1 if c.pin1_corner in (0, 3) else 1) * (hl - 6.5)
    cv = (-1 if c.pin1_corner in (0, 1) else 1) * (hw - 6.5)
    out.append(part.disc(cu, cv, 2.3, "pin1_dot", 0.81))
    if kind == "bridge":
        i, s = int(p[0]), int(p[1])
        v0, v1 = sorted((s * (hw + 3.0), s * (hw + 7.0)))
        out.append(board.rect(centres[i], v0, centres[i + 1], v1, "tin", 0.3))
    return out


def _transistor(c: Component, kind: str | None, p: tuple[float, ...], footprint_up: int) -> list[Prim]:
    board = _Frame(c)
    hl, hw = c.length / 2, c.width / 2
    up_legs, down_legs = (-0.55 * hl, 0.55 * hl), (0.0,)
    pad_sets = [(u, footprint_up) for u in up_legs] + [(u, -footprint_up) for u in down_legs]
    out = _silk_outline(board, *_outline(c))
    for u, s in pad_sets:
        v0, v1 = sorted((s * (hw + 1.0), s * (hw + 6.0)))
        out.append(board.rect(u - 2.5, v0, u + 2.5, v1, "copper", 0.05))
    if kind == "missing":
        for u, s in pad_sets:
            v0, v1 = sorted((s * (hw + 1.8), s * (hw + 5.2)))
            out.append(board.rect(u - 1.9, v0, u + 1.9, v1, "paste", 0.1))
        return out
    du = p[1] if kind == "shift" and p[0] else 0.0
    dv = p[1] if kind == "shift" and not p[0] else 0.0
    part = _Frame(c, du, dv)
    # legs_up flips which side carries the two legs: a rotated (reversed) part
    legs = [(u, c.legs_up) for u in up_legs] + [(u, -c.legs_up) for u in down_legs]
    for u, s in legs:
        v0, v1 = sorted((s * hw, s * (hw + 4.5)))
        out.append(part.rect(u - 1.6, v0, u + 1.6, v1, "tin", 0.3))
        f0, f1 = sorted((s * (hw + 3.5), s * (hw + 5.5)))
        h0, h1 = (0.3, 0.05) if s > 0 else (0.05, 0.3)
        out.append(part.ramp(u - 1.6, f0, u + 1.6, f1, "tin", h0, h1, "v"))
    if kind == "excess_solder":
        u, s = legs[int(p[2]) % len(legs)]
        out.append(part.disc(u, s * (hw + 4.5), p[1], "tin", 0.7))
    out.append(part.rect(-hl, -hw, hl, hw, "body_ic", 0.55, tint=c.tint))
    return out
