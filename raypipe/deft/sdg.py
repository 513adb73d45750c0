"""The built-in synthetic data generator: the ``builtin`` SDG backend of the ``anomalygen`` stage.

It synthesises ``num_sdg`` defect samples for the labels routed to SDG, allocated in proportion to
their weak-sample counts per ``<TEXTURE>+<LABEL>`` (texture = the component type column when the
rows carry one, else ``PCB``). Each sample is a procedural defect (see ``_recipes``) drawn onto a
GOLDEN image of a TRAINING row — never a KPI capture: a training golden that is a KPI capture file
stops the stage, because training on it would leak the KPI set.

Layout written (AnomalyGen's, so TAO users can read it):
- ``anomalygen/sdg/reconstructed_image/<T>+<label>_<idx>.png``: the defect drawn on the golden
  (all lights side by side when there are several), ``original_image/<same name>``: the golden;
- ``anomalygen/sdg/SDG_result.csv`` and ``allocation.json``;
- ChangeNet rows ``mining_filter/sdg_rows_raw.csv`` with images staged per light under
  ``dataset/images/synthetic_iter<N>_{ng,ok}/<stem>_<light><ext>``: the NG image is the
  reconstructed image made to look like a capture (shared sub-pixel misalignment, per-light
  gain/offset/noise, as the real captures), so "synthetic" is not a shortcut for "defect";
  the OK image is the untouched golden.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from raypipe._io import atomic_write_json, atomic_write_text
from raypipe.deft._recipes import apply_recipe, capture_like, labels_with_recipe, recipe_for, sample_geometry
from raypipe.deft._stage_io import fresh_dir, remove_files, sample_key
from raypipe.deft.errors import HardStop
from raypipe.rundir import IterationDir, iteration_label
from raypipe.workspace._rows import REQUIRED_COLUMNS, ImageLayout, normalise_label, read_rows, write_rows

log = logging.getLogger(__name__)

STAGE = "anomalygen"
TEXTURE_COLUMNS = ("comp_type_1", "comp_type", "component_type")
DEFAULT_TEXTURE = "PCB"
_STEM_IDX = re.compile(r"_(\d+)$")
_MAX_TRIES = 5


def supported_sdg_labels(recipes: Mapping[str, str], configured: list[str] | None) -> set[str]:
    """Upper-cased labels the SDG may be routed: ``configured`` when given, else every label with a recipe."""
    labels = {str(x).strip().upper() for x in configured} if configured is not None else labels_with_recipe(recipes)
    return labels - {"PASS"}


def allocate(weights: Mapping[str, int], total: int) -> dict[str, int]:
    """Split ``total`` over keys in proportion to ``weights`` (largest remainder, ties by key); zeros dropped."""
    keys = sorted(k for k, v in weights.items() if v > 0)
    wsum = sum(weights[k] for k in keys)
    if total <= 0 or wsum <= 0:
        return {}
    exact = {k: total * weights[k] / wsum for k in keys}
    counts = {k: math.floor(v) for k, v in exact.items()}
    left = total - sum(counts.values())
    for k in sorted(keys, key=lambda k: (-(exact[k] - counts[k]), k))[:left]:
        counts[k] += 1
    return {k: v for k, v in counts.items() if v > 0}


def label_from_stem(stem: str) -> str:
    """``<T>+<label>_<idx>`` → normalised ``label`` (AnomalyGen's file-name convention)."""
    after = stem.split("+", 1)[1] if "+" in stem else stem
    return normalise_label(_STEM_IDX.sub("", after))


def run_sdg(anomalygen_gaps_parquet: Path, train_csv: Path, train_images_dir: Path, iter_dir: Path, *,
            workspace_root: Path, layout: ImageLayout, num_sdg: int, recipes: Mapping[str, str],
            iteration: int, seed: int, kpi_capture_files: set[Path]) -> dict[str, Any]:
    """Synthesise the SDG samples of iteration ``iteration``; returns the ``anomalygen`` evidence."""
    it = IterationDir(Path(iter_dir).resolve(), iteration_label(iteration))
    workspace_root = Path(workspace_root).resolve()
    sdg = it.sdg
    fresh_dir(sdg.path)
    ng_dir = fresh_dir(it.dataset.synthetic_ng)
    ok_dir = fresh_dir(it.dataset.synthetic_ok)
    rows_csv = it.mining.sdg_rows_raw
    remove_files(rows_csv.parent, [rows_csv.name])
    for d in (ng_dir, ok_dir):
        _under_root(d, workspace_root)

    gaps = pd.read_parquet(anomalygen_gaps_parquet)
    if gaps.empty or num_sdg <= 0:
        log.info("anomalygen: nothing to synthesise (%d gap rows, num_SDG=%d)", len(gaps), num_sdg)
        return {"anomalygen_skipped": True}

    samples = gaps.loc[~sample_key(gaps).duplicated()].copy()
    samples["_texture"] = _textures(samples)
    samples["_label"] = samples["label"].map(normalise_label)
    weights = samples.groupby(["_texture", "_label"]).size()
    allocation = allocate({f"{t}+{lab}": int(n) for (t, lab), n in weights.items()}, num_sdg)

    train = read_rows(train_csv)
    train_tex = _textures(train).reset_index(drop=True)
    _refuse_kpi_sources(train, Path(train_images_dir), layout, kpi_capture_files, Path(train_csv))
    rng = np.random.default_rng([int(seed), int(iteration), 0x5D6])

    results: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    extra_cols = [c for c in train.columns if c not in REQUIRED_COLUMNS]
    rel_ng, rel_ok = _under_root(ng_dir, workspace_root), _under_root(ok_dir, workspace_root)
    for key, count in allocation.items():
        texture, label = key.split("+", 1)
        recipe = recipe_for(label, recipes)
        pool = np.flatnonzero((train_tex == texture).to_numpy()) if texture != DEFAULT_TEXTURE else np.array([], int)
        if pool.size == 0:  # no training part of that type: any training golden will do
            pool = np.arange(len(train))
        if pool.size == 0:
            raise HardStop(STAGE, f"{train_csv}: no training rows to take golden images from",
                           "the training CSV must have rows")
        order = pool[rng.permutation(pool.size)]
        for idx in range(count):
            ti = int(order[idx % order.size])
            src = train.iloc[ti]
            stem = f"{_safe(texture)}+{_safe(label)}_{idx:04d}"
            goldens_files = layout.golden_paths(Path(train_images_dir), src)
            goldens = [_load(p) for p in goldens_files]
            geom, recon = _synthesise(recipe, goldens, rng)
            capture = capture_like(recon, rng)
            for light, img in zip(layout.lights, capture):
                _save(ng_dir / f"{stem}_{light}{layout.image_ext}", img)
            for light, img in zip(layout.lights, goldens):
                _save(ok_dir / f"{stem}_{light}{layout.image_ext}", img)
            rec_file, orig_file = sdg.reconstructed / f"{stem}.png", sdg.original / f"{stem}.png"
            _save(rec_file, _tile(recon))
            _save(orig_file, _tile(goldens))
            results.append({
                "file": str(rec_file), "label": label_from_stem(stem), "source_golden": ";".join(map(str, goldens_files)),
                "source_row": ti + 1, "texture": texture, "recipe": recipe,
                "parameters": json.dumps(geom, sort_keys=True), "psnr": _psnr(recon, goldens),
                "original_file": str(orig_file),
            })
            row = {"input_path": rel_ng, "golden_path": rel_ok, "label": label_from_stem(stem), "object_name": stem}
            row.update({c: src[c] for c in extra_cols})
            rows.append(row)

    result_csv = atomic_write_text(sdg.result_csv, pd.DataFrame(results).to_csv(index=False))
    alloc_json = atomic_write_json(sdg.allocation_json, allocation)
    write_rows(pd.DataFrame(rows, columns=list(REQUIRED_COLUMNS) + extra_cols), rows_csv)
    log.info("anomalygen: %d synthetic samples %s", len(rows), allocation)
    return {"anomalygen_sdg_csv": str(result_csv), "anomalygen_allocation_json": str(alloc_json),
            "anomalygen_amp_allocated": int(sum(allocation.values())), "anomalygen_sdg_rows_csv": str(rows_csv)}


def _synthesise(recipe: str, goldens: list[np.ndarray], rng: np.random.Generator) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Draw one geometry into every light; redraw when the result is invisible (e.g. a symmetric part rotated)."""
    for _ in range(_MAX_TRIES):
        geom = sample_geometry(recipe, goldens, rng)
        recon = [apply_recipe(g, geom, i) for i, g in enumerate(goldens)]
        if max(float(np.abs(r - g).max()) for r, g in zip(recon, goldens)) > 8 / 255:
            return geom, recon
    return geom, recon


def _texture_column(df: pd.DataFrame) -> str | None:
    return next((c for c in TEXTURE_COLUMNS if c in df.columns), None)


def _textures(df: pd.DataFrame) -> pd.Series:
    col = _texture_column(df)
    if col is None:
        return pd.Series([DEFAULT_TEXTURE] * len(df), index=df.index)
    t = df[col].astype(str).str.strip().map(lambda s: _safe(s) if s and s.lower() not in ("nan", "none") else DEFAULT_TEXTURE)
    return t.reset_index(drop=True).set_axis(df.index)


def _refuse_kpi_sources(train: pd.DataFrame, images_dir: Path, layout: ImageLayout,
                        kpi_capture_files: set[Path], train_csv: Path) -> None:
    """A training golden that is a KPI capture file would leak the KPI set into the synthetic data."""
    kpi = {os.path.realpath(p) for p in kpi_capture_files}
    if not kpi:
        return
    for i, rec in enumerate(train.to_dict(orient="records")):
        for p in layout.golden_paths(images_dir, rec):
            if os.path.realpath(p) in kpi:
                raise HardStop(STAGE, f"{train_csv}: row {i + 1}, column 'golden_path': golden file {p} is a KPI "
                                      f"capture file; SDG never draws on KPI images",
                               "remove the KPI images from the training set (train/KPI leakage)")


def _under_root(path: Path, root: Path) -> str:
    try:
        return Path(path).resolve().relative_to(root).as_posix()
    except ValueError:
        raise HardStop(STAGE, f"{path} is not inside the workspace {root}; generated rows must be "
                              f"workspace-root-relative", "keep the run dir under <workspace>/results") from None


def _safe(text: str) -> str:
    return re.sub(r"[/\\+\x00]", "_", str(text).strip())


def _load(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "RGB"):
                im = im.convert("RGB")
            arr = np.asarray(im, dtype=np.float64) / 255.0
    except OSError as exc:
        raise HardStop(STAGE, f"cannot read golden image {path}: {exc}", "run `python -m raypipe.workspace check`") from exc
    return arr[..., None] if arr.ndim == 2 else arr


def _save(path: Path, img: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    u8 = (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    Image.fromarray(u8[..., 0] if u8.shape[2] == 1 else u8).save(path)


def _tile(images: list[np.ndarray]) -> np.ndarray:
    h = max(i.shape[0] for i in images)
    return np.concatenate([np.pad(i, ((0, h - i.shape[0]), (0, 0), (0, 0))) for i in images], axis=1)


def _as_written(a: np.ndarray) -> np.ndarray:
    """The 8-bit values a saved image holds: PSNR compares the files as written."""
    return np.round(np.clip(a, 0, 1) * 255.0)


def _psnr(recon: list[np.ndarray], goldens: list[np.ndarray]) -> float:
    q = _as_written
    mse = float(np.mean(np.concatenate([((q(r) - q(g)) ** 2).ravel() for r, g in zip(recon, goldens)])))
    return float("inf") if mse == 0 else round(10.0 * math.log10(255.0 ** 2 / mse), 3)


__all__ = ["allocate", "label_from_stem", "run_sdg", "supported_sdg_labels"]
