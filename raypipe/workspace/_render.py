"""Rasterise a synthetic PCB component scene under several AOI lights (numpy only).

A scene is a list of :class:`Prim` (rectangles, discs, height ramps) in a 64×64 *design* space.
Each primitive carries a material (albedo per light style, metallicity) and a height, so that one
geometry renders differently per light: the low-angle light turns height *slopes* into bright
edges, the solder (coaxial) light makes flat metal bright and sloped metal dark. A defect drawn
into the geometry therefore shows up in every light, each in its own way — like a real AOI camera.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

DESIGN = 64.0  # scene coordinates are in a 64×64 design space, scaled to the image size

# albedo (RGB) per light style, metallicity
_MATERIALS: dict[str, tuple[dict[str, tuple[float, float, float]], float]] = {
    "substrate": ({"low_angle": (0.08, 0.30, 0.16), "solder": (0.04, 0.20, 0.10)}, 0.0),
    "trace": ({"low_angle": (0.14, 0.42, 0.20), "solder": (0.09, 0.33, 0.14)}, 0.0),
    "silk": ({"low_angle": (0.80, 0.80, 0.76), "solder": (0.55, 0.55, 0.52)}, 0.0),
    "copper": ({"low_angle": (0.62, 0.42, 0.24), "solder": (0.80, 0.52, 0.30)}, 0.6),
    "tin": ({"low_angle": (0.60, 0.61, 0.64), "solder": (0.88, 0.88, 0.90)}, 1.0),
    "paste": ({"low_angle": (0.50, 0.50, 0.52), "solder": (0.55, 0.55, 0.57)}, 0.2),
    "body_resistor": ({"low_angle": (0.13, 0.13, 0.14), "solder": (0.07, 0.07, 0.08)}, 0.0),
    "body_capacitor": ({"low_angle": (0.62, 0.50, 0.32), "solder": (0.40, 0.32, 0.20)}, 0.0),
    "body_ic": ({"low_angle": (0.16, 0.16, 0.18), "solder": (0.09, 0.09, 0.10)}, 0.0),
    "marking": ({"low_angle": (0.70, 0.70, 0.68), "solder": (0.35, 0.35, 0.34)}, 0.0),
    "band": ({"low_angle": (0.75, 0.75, 0.78), "solder": (0.45, 0.45, 0.48)}, 0.0),
    "pin1_dot": ({"low_angle": (0.85, 0.85, 0.82), "solder": (0.60, 0.60, 0.58)}, 0.0),
    "debris_light": ({"low_angle": (0.92, 0.88, 0.70), "solder": (0.35, 0.33, 0.28)}, 0.0),
    "debris_dark": ({"low_angle": (0.05, 0.04, 0.03), "solder": (0.10, 0.08, 0.06)}, 0.0),
}
STYLES = ("low_angle", "solder", "white")


def _albedo(material: str, style: str) -> np.ndarray:
    colours, _ = _MATERIALS[material]
    if style == "white":  # a diffuse white light: between the two
        return (np.asarray(colours["low_angle"]) + np.asarray(colours["solder"])) / 2.0
    return np.asarray(colours[style], dtype=np.float64)


_PALETTES: dict[tuple[str, ...], dict[str, np.ndarray]] = {}


def _palette(styles: tuple[str, ...]) -> dict[str, np.ndarray]:
    """material → (lights, 3) albedo; memoised per style tuple (immutable constants only)."""
    pal = _PALETTES.get(styles)
    if pal is None:
        pal = {m: np.stack([_albedo(m, s) for s in styles]).astype(np.float32) for m in _MATERIALS}
        _PALETTES[styles] = pal
    return pal


@dataclass(frozen=True)
class Prim:
    """One primitive. ``box`` is (x0, y0, x1, y1) for rect/ramp, (cx, cy, r, 0) for disc.

    A ramp's height goes linearly from ``height`` to ``height_to`` along ``ramp`` (+x, -x, +y, -y).
    """

    kind: str
    box: tuple[float, float, float, float]
    material: str
    height: float
    height_to: float = 0.0
    ramp: str = "+x"
    tint: float = 1.0


@dataclass(frozen=True)
class Background:
    """Smooth substrate texture: a few sinusoids, evaluated analytically so a shift is exact."""

    freqs: tuple[tuple[float, float, float, float], ...]  # (kx, ky, phase, amplitude)
    tint: float = 1.0


def rasterise(prims: Sequence[Prim], background: Background, styles: Sequence[str], width: int,
              height: int, margin: int = 3) -> np.ndarray:
    """Material maps of the scene on a (H + 2m, W + 2m) canvas; channels: RGB per light, height, metal.

    At 64×64 the cost is numpy's per-call overhead, not arithmetic, so the work is batched: one
    canvas holds every map (one blend per primitive), and the separable 1-D edge coverages of all
    primitives are computed in a single vectorised pass before the (order-dependent) blending loop.
    The margin lets :func:`shade` shift the result by up to ``margin`` px.
    """
    styles = tuple(styles)
    pal = _palette(styles)
    n = len(styles)
    grid = _Grid(width / DESIGN, height / DESIGN, width, height, margin)
    xs, ys = grid.xs, grid.ys
    tex = np.zeros((ys.size, xs.size), dtype=np.float32)
    for kx, ky, ph, amp in background.freqs:
        tex += amp * np.sin(np.add.outer(ky * ys + ph, kx * xs)).astype(np.float32)
    canvas = np.empty(tex.shape + (3 * n + 2,), dtype=np.float32)
    canvas[..., : 3 * n] = (pal["substrate"].reshape(-1) * background.tint)[None, None, :] * (1.0 + tex)[..., None]
    canvas[..., 3 * n:] = 0.0
    if not prims:
        return canvas
    box = np.array([p.box for p in prims], dtype=np.float32)  # (P, 4)
    disc = np.array([p.kind == "disc" for p in prims])
    r = np.where(disc, box[:, 2], 0.0)
    lo_x, hi_x = np.where(disc, box[:, 0] - r, box[:, 0]), np.where(disc, box[:, 0] + r, box[:, 2])
    lo_y, hi_y = np.where(disc, box[:, 1] - r, box[:, 1]), np.where(disc, box[:, 1] + r, box[:, 3])
    sx, sy = grid.sx, grid.sy
    cov_x = _unit(np.minimum(xs[None, :] - lo_x[:, None], hi_x[:, None] - xs[None, :]) * sx + 0.5)
    cov_y = _unit(np.minimum(ys[None, :] - lo_y[:, None], hi_y[:, None] - ys[None, :]) * sy + 0.5)
    ax = np.clip(np.floor(lo_x * sx - 0.5).astype(int) - 1 + margin, 0, xs.size).tolist()
    bx = np.clip(np.ceil(hi_x * sx - 0.5).astype(int) + 2 + margin, 0, xs.size).tolist()
    ay = np.clip(np.floor(lo_y * sy - 0.5).astype(int) - 1 + margin, 0, ys.size).tolist()
    by = np.clip(np.ceil(hi_y * sy - 0.5).astype(int) + 2 + margin, 0, ys.size).tolist()
    targets = _targets(pal, prims)
    h_ch = 3 * n
    for i, p in enumerate(prims):
        if ax[i] >= bx[i] or ay[i] >= by[i]:
            continue
        sl_y, sl_x = slice(ay[i], by[i]), slice(ax[i], bx[i])
        hp: np.ndarray | None = None
        if p.kind == "disc":
            cx, cy, rad, _ = p.box
            dist = np.sqrt(np.add.outer((ys[sl_y] - cy) ** 2, (xs[sl_x] - cx) ** 2))
            cov = _unit((rad - dist) * min(sx, sy) + 0.5)
        else:
            cov = np.minimum.outer(cov_y[i, sl_y], cov_x[i, sl_x])
            if p.kind == "ramp":
                x0, y0, x1, y1 = p.box
                if p.ramp[1] == "x":
                    t = _unit((xs[sl_x] - x0) / max(x1 - x0, 1e-6))[None, :]
                else:
                    t = _unit((ys[sl_y] - y0) / max(y1 - y0, 1e-6))[:, None]
                if p.ramp[0] == "-":
                    t = 1.0 - t
                hp = p.height + (p.height_to - p.height) * t
        block = canvas[sl_y, sl_x]
        if hp is None:
            block += cov[..., None] * (targets[i] - block)
        else:
            old_h = block[..., h_ch].copy()
            block += cov[..., None] * (targets[i] - block)
            block[..., h_ch] = old_h + cov * (hp - old_h)
    return canvas


def _targets(pal: dict[str, np.ndarray], prims: Sequence[Prim]) -> np.ndarray:
    """(P, channels) vectors the primitives blend towards: RGB per light × tint, height, metallicity."""
    colours = np.stack([pal[p.material].reshape(-1) for p in prims])
    tint = np.array([p.tint for p in prims], dtype=np.float32)
    extra = np.array([(p.height, _MATERIALS[p.material][1]) for p in prims], dtype=np.float32)
    return np.concatenate([colours * tint[:, None], extra], axis=1)


def shade(canvas: np.ndarray, styles: Sequence[str], width: int, height: int,
          offset: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Light the material maps, then shift the lit image by ``offset`` design units (bilinear)
    → float (lights, H, W, 3).

    Lit first, shifted second: the board moves under the camera, the lighting does not change. The
    other order re-derives slopes from a resampled height map, and the specular glint of a 2-px IC
    pin then flips on or off with a sub-pixel shift: a PASS capture with a blob that looks like
    solder (measured: the strongest misalignment-tolerant difference of any PASS row).
    """
    margin = (canvas.shape[0] - height) // 2
    sx, sy = width / DESIGN, height / DESIGN
    n = len(styles)
    hmap, metal = canvas[..., 3 * n], canvas[..., 3 * n + 1]
    grad_y, grad_x = np.gradient(hmap)
    grad = np.hypot(grad_x, grad_y)
    lit = np.empty(canvas.shape[:2] + (3 * n,), dtype=np.float32)
    for i, style in enumerate(styles):
        lit[..., 3 * i: 3 * i + 3] = _shade(style, canvas[..., 3 * i: 3 * i + 3], grad, grad_x, grad_y, metal)
    out = _shift(lit, margin - offset[0] * sx, margin - offset[1] * sy, width, height)
    return np.ascontiguousarray(out.reshape(height, width, n, 3).transpose(2, 0, 1, 3))


def _shift(canvas: np.ndarray, fx: float, fy: float, width: int, height: int) -> np.ndarray:
    """Crop (height, width) starting at fractional pixel position (fy, fx), bilinear."""
    if fx < 0 or fy < 0 or fx + width >= canvas.shape[1] or fy + height >= canvas.shape[0]:
        raise ValueError("shift larger than the rasterised margin")
    x0, y0 = int(np.floor(fx)), int(np.floor(fy))
    tx, ty = np.float32(fx - x0), np.float32(fy - y0)
    rows = canvas[y0: y0 + height + 1]
    rows = rows[:-1] * (1 - ty) + rows[1:] * ty if ty else rows[:-1]
    cols = rows[:, x0: x0 + width + 1]
    return cols[:, :-1] * (1 - tx) + cols[:, 1:] * tx if tx else cols[:, :-1]


def render(prims: Sequence[Prim], background: Background, styles: Sequence[str], width: int, height: int,
           offset: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Rasterise and shade in one go (see :func:`rasterise` and :func:`shade`)."""
    margin = int(np.ceil(max(abs(offset[0]) * width, abs(offset[1]) * height) / DESIGN)) + 1
    return shade(rasterise(prims, background, styles, width, height, margin), styles, width, height, offset)


@dataclass(frozen=True)
class _Grid:
    """Pixel-centre coordinates in design units of a canvas with ``margin`` extra pixels each side."""

    sx: float
    sy: float
    width: int
    height: int
    margin: int

    @property
    def xs(self) -> np.ndarray:
        return ((np.arange(-self.margin, self.width + self.margin) + 0.5) / self.sx).astype(np.float32)

    @property
    def ys(self) -> np.ndarray:
        return ((np.arange(-self.margin, self.height + self.margin) + 0.5) / self.sy).astype(np.float32)

def _unit(x: np.ndarray) -> np.ndarray:
    """Clamp to [0, 1] in place (``np.clip`` costs several µs of dispatch per call on tiny arrays)."""
    np.maximum(x, 0.0, out=x)
    return np.minimum(x, 1.0, out=x)


def _shade(style: str, albedo: np.ndarray, grad: np.ndarray, grad_x: np.ndarray, grad_y: np.ndarray,
           metal: np.ndarray) -> np.ndarray:
    if style == "low_angle":
        # grazing light: slopes and edges light up (height shows), facing edges brighter
        edge = np.clip(1.1 * np.sqrt(grad), 0.0, 0.9)
        facing = np.clip(-(grad_x + grad_y) * 1.5, 0.0, 0.4)
        return albedo * 0.55 + (edge + facing)[..., None] * np.array([0.88, 0.92, 1.0], dtype=np.float32)
    if style == "solder":
        # coaxial light: flat metal mirrors the light back, sloped metal (fillets) goes dark
        flat = np.exp(-((grad / 0.05) ** 2))
        gain = (0.5 + 0.6 * metal * flat) * (1.0 - 0.6 * metal * (1.0 - flat))
        return albedo * gain[..., None]
    return albedo * 0.9 + 0.15 * np.clip(grad, 0.0, 1.0)[..., None]


def photometric(img: np.ndarray, rng: np.random.Generator, gain_range: float, offset_range: float,
                noise_sigma: float) -> np.ndarray:
    """Per-light, per-channel gain/offset and sensor noise; returns uint8 (lights, H, W, 3)."""
    n = img.shape[0]
    gain = 1.0 + rng.uniform(-gain_range, gain_range, size=(n, 1, 1, 1))
    gain = (255.0 * gain * (1.0 + rng.uniform(-0.03, 0.03, size=(n, 1, 1, 3)))).astype(np.float32)
    off = (255.0 * rng.uniform(-offset_range, offset_range, size=(n, 1, 1, 1)) + 0.5).astype(np.float32)
    # float32 throughout: float64 temporaries of this size cost more in page faults than in maths
    noisy = rng.standard_normal(size=img.shape, dtype=np.float32)
    noisy *= np.float32(255.0 * noise_sigma)
    noisy += img * gain
    noisy += off
    return np.clip(noisy, 0.0, 255.0, out=noisy).astype(np.uint8)
