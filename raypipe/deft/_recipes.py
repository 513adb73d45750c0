"""Procedural defect recipes drawn onto golden images (the built-in synthetic data generation).

A recipe works in two steps so that every light shows the SAME defect:
1. :func:`sample_geometry` draws the geometry once per synthetic sample, in normalised image
   coordinates, from all lights of the golden together (e.g. where the component body is);
2. :func:`apply_recipe` draws it into ONE light, taking the colours from that light's own golden
   (board colour, metal highlight, ...) — one geometry, per-light appearance, like a real AOI camera.

The demo generator (``raypipe.workspace._scene``) draws its defects into a scene description, which
a golden IMAGE does not carry, so those functions cannot be reused here; the defect kinds and their
look (paste on empty pads, a metal bridge, a lifted end, a solder blob, a speck or fibre, a part
rotated by 180°) follow it. Images are float arrays (H, W, C) in [0, 1].
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

RECIPES = ("bridge", "missing", "shift", "tombstone", "excess_solder", "foreign_material", "polarity", "texture")
# common AOI spellings of the same defects; a label equal to a recipe name maps to it directly
ALIASES = {
    "solder_bridge": "bridge", "short": "bridge", "missing_component": "missing", "missing_part": "missing",
    "misalignment": "shift", "offset": "shift", "skew": "shift", "excess": "excess_solder",
    "foreign_object": "foreign_material", "debris": "foreign_material", "contamination": "foreign_material",
    "reversed": "polarity", "wrong_polarity": "polarity", "billboard": "tombstone",
}
DEFAULT_RECIPE = "texture"


def recipe_for(label: str, recipes: Mapping[str, str]) -> str:
    """Recipe of a label: config ``recipes`` (label → recipe) first, then the name/alias, else ``texture``."""
    key = str(label).strip().lower()
    configured = {str(k).strip().lower(): str(v).strip().lower() for k, v in recipes.items()}
    name = configured.get(key) or (key if key in RECIPES else ALIASES.get(key, DEFAULT_RECIPE))
    if name not in RECIPES:
        raise ValueError(f"phase2.sdg.recipes: label '{label}' maps to unknown recipe '{name}' "
                         f"(known: {', '.join(RECIPES)})")
    return name


def labels_with_recipe(recipes: Mapping[str, str]) -> set[str]:
    """Upper-cased labels that have an explicit recipe (the default SDG-supported labels)."""
    names = set(RECIPES) - {DEFAULT_RECIPE} | set(ALIASES) | {str(k).strip().lower() for k in recipes}
    for k in recipes:
        recipe_for(k, recipes)  # validate the mapping early
    return {n.upper() for n in names}


# --------------------------------------------------------------------------- geometry (all lights)

def board_colour(img: np.ndarray) -> np.ndarray:
    """Median colour of the outer 10 % frame: the bare board around the component."""
    h, w = img.shape[:2]
    b = max(1, int(round(0.1 * min(h, w))))
    frame = np.concatenate([img[:b].reshape(-1, img.shape[2]), img[-b:].reshape(-1, img.shape[2]),
                            img[:, :b].reshape(-1, img.shape[2]), img[:, -b:].reshape(-1, img.shape[2])])
    return np.median(frame, axis=0)


def component_box(goldens: list[np.ndarray]) -> tuple[float, float, float, float] | None:
    """Normalised (x0, y0, x1, y1) of what stands out from the board near the centre, from all lights."""
    dev = None
    for img in goldens:
        h, w = img.shape[:2]
        d = np.abs(img - board_colour(img)).mean(axis=2)
        d = _resize_nearest(d, 64, 64)  # lights may differ in size: compare on a common grid
        dev = d if dev is None else dev + d
    assert dev is not None
    dev /= len(goldens)
    c = dev[10:54, 10:54]  # the central ~70 %: ignore traces at the border
    thr = max(0.06, float(np.quantile(c, 0.6)))
    ys, xs = np.nonzero(c > thr)
    if xs.size < 0.03 * c.size:
        return None
    x0, x1 = np.quantile(xs, [0.08, 0.92]) + 10
    y0, y1 = np.quantile(ys, [0.08, 0.92]) + 10
    if x1 - x0 < 6 or y1 - y0 < 6:
        return None
    return (float(x0 / 64), float(y0 / 64), float((x1 + 1) / 64), float((y1 + 1) / 64))


def sample_geometry(recipe: str, goldens: list[np.ndarray], rng: np.random.Generator) -> dict[str, Any]:
    """Draw one recipe's geometry (JSON-able, normalised coordinates) for a multi-light golden."""
    box = component_box(goldens)
    if box is None:  # nothing stands out: assume a centred part of typical size
        horiz = bool(rng.random() < 0.5)
        a, b = rng.uniform(0.30, 0.40), rng.uniform(0.15, 0.22)
        hx, hy = (a, b) if horiz else (b, a)
        cx, cy = 0.5 + rng.uniform(-0.03, 0.03), 0.5 + rng.uniform(-0.03, 0.03)
        box = (cx - hx / 2, cy - hy / 2, cx + hx / 2, cy + hy / 2)
    x0, y0, x1, y1 = box
    horiz = (x1 - x0) >= (y1 - y0)
    end = float(rng.choice([-1.0, 1.0]))
    g: dict[str, Any] = {"recipe": recipe, "box": [round(v, 5) for v in box], "horizontal": horiz,
                         "end": end, "seed": int(rng.integers(0, 2**31 - 1))}
    if recipe == "shift":
        mag = float(rng.uniform(0.05, 0.08) * rng.choice([-1, 1]))
        along = bool(rng.random() < 0.5)
        g["dx"], g["dy"] = ((mag, 0.0) if along == horiz else (0.0, mag))
    elif recipe == "excess_solder":
        g["radius"] = float(rng.uniform(0.05, 0.075))
    elif recipe == "bridge":
        g["side"] = float(rng.choice([-1.0, 1.0]))
        g["width"] = float(rng.uniform(0.04, 0.07))
        g["reach"] = float(rng.uniform(0.12, 0.2))
    elif recipe == "foreign_material":
        # as the demo draws it: a 3–5 px speck (at 64 px) or a fibre, on the board beside the part
        g["variant"] = int(rng.integers(0, 3))  # 0 light speck, 1 dark speck, 2 fibre
        g["cx"], g["cy"] = _beside_box(box, rng)
        g["radius"] = float(rng.uniform(0.023, 0.038))
        g["angle"] = float(rng.uniform(0, np.pi))
    elif recipe == "texture":
        g["cx"], g["cy"] = float(rng.uniform(0.25, 0.75)), float(rng.uniform(0.25, 0.75))
        g["rx"], g["ry"] = float(rng.uniform(0.07, 0.16)), float(rng.uniform(0.07, 0.16))
        g["strength"] = float(rng.uniform(0.35, 0.6))
    return g


def _beside_box(box: tuple[float, float, float, float], rng: np.random.Generator) -> tuple[float, float]:
    """A normalised point in view (0.11..0.89) outside ``box`` grown by 0.04: debris on the bare board.
    A dark speck on a dark body is invisible in every light, so no recipe should draw one there."""
    x0, y0, x1, y1 = box
    for _ in range(200):
        x, y = float(rng.uniform(0.11, 0.89)), float(rng.uniform(0.11, 0.89))
        if not (x0 - 0.04 < x < x1 + 0.04 and y0 - 0.04 < y < y1 + 0.04):
            return x, y
    return 0.11, 0.11  # a part that fills the view: the corner is board


# --------------------------------------------------------------------------- drawing (one light)

def apply_recipe(img: np.ndarray, geom: Mapping[str, Any], light_index: int) -> np.ndarray:
    """Draw ``geom`` into one light's golden ``img`` (float H×W×C in [0, 1]); returns a new image."""
    h, w = img.shape[:2]
    pal = _palette(img)
    rng = np.random.default_rng([int(geom["seed"]), light_index])
    out = img.copy()
    x0, y0, x1, y1 = (geom["box"][0] * w, geom["box"][1] * h, geom["box"][2] * w, geom["box"][3] * h)
    horiz, end = bool(geom["horizontal"]), float(geom["end"])
    recipe = geom["recipe"]

    def ends(frac: float) -> tuple[tuple[float, float, float, float], tuple[float, float, float, float]]:
        """The two end regions (``frac`` of the long side) of the box: (low end, high end)."""
        if horiz:
            d = (x1 - x0) * frac
            return (x0, y0, x0 + d, y1), (x1 - d, y0, x1, y1)
        d = (y1 - y0) * frac
        return (x0, y0, x1, y0 + d), (x0, y1 - d, x1, y1)

    if recipe == "missing":
        out = _blend(out, _rect(h, w, x0, y0, x1, y1), _board_fill(pal, h, w, rng))
        for r in ends(0.22):
            out = _blend(out, _rect(h, w, *_shrink(r, 0.15)), pal["paste"])
    elif recipe == "shift":
        dx, dy = geom["dx"] * w, geom["dy"] * h
        moved = _sample(img, -dx, -dy)  # moved(x) = img(x - d): the part moved by d
        out = _blend(out, _rect(h, w, x0, y0, x1, y1), _board_fill(pal, h, w, rng))
        out = _blend(out, _rect(h, w, x0 + dx, y0 + dy, x1 + dx, y1 + dy), moved)
    elif recipe == "polarity":
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        out = _blend(out, _rect(h, w, x0, y0, x1, y1), _rot180(img, cx, cy))
    elif recipe == "tombstone":
        low, high = ends(0.3)
        lifted, standing = (low, high) if end > 0 else (high, low)
        out = _blend(out, _rect(h, w, *lifted), pal["paste"])  # the pad the part left
        out = _blend(out, _rect(h, w, *standing), pal["bright"])  # the end face seen from above
    elif recipe == "excess_solder":
        low, high = ends(0.0)
        ex, ey = ((x0, (y0 + y1) / 2) if end < 0 else (x1, (y0 + y1) / 2)) if horiz else \
            (((x0 + x1) / 2, y0) if end < 0 else ((x0 + x1) / 2, y1))
        r = geom["radius"] * min(h, w)
        a = _disc(h, w, ex, ey, r)
        yy, xx = np.mgrid[0:h, 0:w] + 0.5
        rho = np.clip(np.hypot(xx - ex, yy - ey) / max(r, 1e-6), 0, 1)[..., None]
        dome = pal["bright"] * (1.0 - 0.45 * rho ** 2)  # a dome: bright cap, darker flanks
        out = _blend(out, a, dome)
    elif recipe == "bridge":
        side, bw, reach = geom["side"], geom["width"], geom["reach"]
        if horiz:
            px = (x1 - 0.15 * (x1 - x0)) if end > 0 else (x0 + 0.15 * (x1 - x0))
            edge = y1 if side > 0 else y0
            ya, yb = sorted((edge - 0.03 * h, edge + side * reach * h))
            box = (px - bw * w / 2, ya, px + bw * w / 2, yb)
        else:
            py = (y1 - 0.15 * (y1 - y0)) if end > 0 else (y0 + 0.15 * (y1 - y0))
            edge = x1 if side > 0 else x0
            xa, xb = sorted((edge - 0.03 * w, edge + side * reach * w))
            box = (xa, py - bw * h / 2, xb, py + bw * h / 2)
        out = _blend(out, _rect(h, w, *box), pal["bright"] * 0.92)
    elif recipe == "foreign_material":
        cx, cy, r = geom["cx"] * w, geom["cy"] * h, max(geom["radius"] * min(h, w), 0.8)
        if geom["variant"] < 2:
            if geom["variant"] == 0:
                colour = pal["bright"]
            else:  # dark debris: darker than a bright board, a dull brown speck on a dark one
                board = pal["board"]
                colour = board * 0.25 if board.mean() > 0.15 else board * 0.5 + np.full_like(board, 0.14)
            out = _blend(out, _disc(h, w, cx, cy, r), colour)
        else:  # a fibre about 1.5 px thick and 9 px long at 64 px
            ex, ey = 0.07 * w * np.cos(geom["angle"]), 0.07 * h * np.sin(geom["angle"])
            a = np.zeros((h, w, 1))
            for k in np.linspace(-1, 1, 9):
                a = np.maximum(a, _disc(h, w, cx + k * ex, cy + k * ey, max(0.0125 * min(h, w), 0.7)))
            out = _blend(out, a, pal["bright"])
    elif recipe == "texture":
        cx, cy, rx, ry = geom["cx"] * w, geom["cy"] * h, geom["rx"] * w, geom["ry"] * h
        yy, xx = np.mgrid[0:h, 0:w] + 0.5
        a = np.exp(-(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2) ** 2)[..., None]
        pattern = _smooth_noise(h, w, int(geom["seed"]))[..., None]  # same pattern in every light
        delta = (pal["bright"] - pal["board"]) * geom["strength"] * pattern
        out = np.clip(out + a * delta, 0.0, 1.0)
    else:
        raise ValueError(f"unknown recipe '{recipe}'")
    return np.clip(out, 0.0, 1.0)


def _palette(img: np.ndarray) -> dict[str, np.ndarray]:
    lum = img.mean(axis=2)
    flat = img.reshape(-1, img.shape[2])
    hi = flat[lum.ravel() >= np.quantile(lum, 0.97)].mean(axis=0)
    lo = flat[lum.ravel() <= np.quantile(lum, 0.03)].mean(axis=0)
    board = board_colour(img)
    bright = np.maximum(hi, board + 0.25)
    return {"board": board, "bright": np.clip(bright, 0, 1), "dark": lo,
            "paste": np.clip(0.45 * board + 0.55 * np.full_like(board, 0.55), 0, 1)}


def _board_fill(pal: Mapping[str, np.ndarray], h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    return np.clip(pal["board"] + rng.normal(0.0, 0.012, size=(h, w, pal["board"].shape[0])), 0, 1)


def _shrink(r: tuple[float, float, float, float], f: float) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = r
    dx, dy = (x1 - x0) * f / 2, (y1 - y0) * f / 2
    return (x0 + dx, y0 + dy, x1 - dx, y1 - dy)


def _rect(h: int, w: int, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """Anti-aliased coverage (H, W, 1) of a pixel-coordinate rectangle."""
    xs, ys = np.arange(w) + 0.5, np.arange(h) + 0.5
    cx = np.clip(np.minimum(xs - x0, x1 - xs) + 0.5, 0, 1)
    cy = np.clip(np.minimum(ys - y0, y1 - ys) + 0.5, 0, 1)
    return (cy[:, None] * cx[None, :])[..., None]


def _disc(h: int, w: int, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    return np.clip(r - np.hypot(xx - cx, yy - cy) + 0.5, 0, 1)[..., None]


def _blend(img: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> np.ndarray:
    return img * (1.0 - alpha) + alpha * colour


def _sample(img: np.ndarray, sx: np.ndarray | float, sy: np.ndarray | float) -> np.ndarray:
    """Bilinear sample of ``img`` at (x + sx, y + sy) for every pixel (edges replicated)."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    return _bilinear(img, xx + sx, yy + sy)


def _bilinear(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    x = np.clip(x, 0, w - 1)
    y = np.clip(y, 0, h - 1)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
    bot = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
    return top * (1 - fy) + bot * fy


def _rot180(img: np.ndarray, cx: float, cy: float) -> np.ndarray:
    """``img`` rotated by 180° about pixel-coordinate point (cx, cy)."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    return _bilinear(img, 2 * cx - xx - 0.5, 2 * cy - yy - 0.5)


def _smooth_noise(h: int, w: int, seed: int) -> np.ndarray:
    """A blotchy pattern in [-1, 1]: coarse noise upsampled bilinearly."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(-1, 1, size=(6, 6, 1))
    ys = np.linspace(0, 5, h)[:, None] * np.ones((1, w))
    xs = np.linspace(0, 5, w)[None, :] * np.ones((h, 1))
    return _bilinear(coarse, xs, ys)[..., 0]


def _resize_nearest(a: np.ndarray, h: int, w: int) -> np.ndarray:
    ys = (np.arange(h) * a.shape[0] / h).astype(int)
    xs = (np.arange(w) * a.shape[1] / w).astype(int)
    return a[ys][:, xs]


# --------------------------------------------------------------------------- capture look

def capture_like(images: list[np.ndarray], rng: np.random.Generator, *, max_shift_px: float = 2.0,
                 gain_range: float = 0.12, offset_range: float = 0.04,
                 noise_sigma: tuple[float, float] = (0.015, 0.035)) -> list[np.ndarray]:
    """Turn golden-based images into what a capture looks like: one sub-pixel misalignment shared
    by all lights (the board moved, not the lights), per-light gain/offset and sensor noise.

    Defaults match the demo's real captures (``raypipe.workspace._demo.render_row``), so a model
    cannot tell a synthetic NG from a real capture by its alignment or noise.
    """
    from raypipe.workspace._render import photometric

    dx, dy = rng.uniform(-max_shift_px, max_shift_px, size=2)
    sigma = float(rng.uniform(*noise_sigma))
    out = []
    for img in images:
        h, w = img.shape[:2]
        shifted = _sample(img, -dx * w / 64.0, -dy * h / 64.0)  # shift in 64-px design units, as the demo
        rgb = shifted if shifted.shape[2] == 3 else np.repeat(shifted[..., :1], 3, axis=2)
        u8 = photometric(rgb[None], rng, gain_range=gain_range, offset_range=offset_range, noise_sigma=sigma)[0]
        f = u8.astype(np.float64) / 255.0
        out.append(f if shifted.shape[2] == 3 else f.mean(axis=2, keepdims=True))
    return out


__all__ = ["ALIASES", "DEFAULT_RECIPE", "RECIPES", "apply_recipe", "board_colour", "capture_like",
           "component_box", "labels_with_recipe", "recipe_for", "sample_geometry"]
