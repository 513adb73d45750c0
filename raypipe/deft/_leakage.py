"""Leakage checks of generated training rows: the leakage key against validation, KPI captures by path and content.

Key and path comparisons are the workspace package's (one coordinate system for image-root- and
workspace-root-relative rows); on top of them, KPI captures are also compared by CONTENT (sha256):
a KPI image copied under another name is still the KPI image.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from pathlib import Path

import pandas as pd

from raypipe.workspace._rows import ImageLayout
from raypipe.workspace._validate import capture_overlap, leakage_overlap


def validation_overlap(rows: pd.DataFrame, rows_images: Path, validation: pd.DataFrame, val_images: Path,
                       root: Path) -> list[str]:
    """One description per (row, validation row) pair equal on the leakage key."""
    pairs = leakage_overlap(rows, rows_images, validation, val_images, root)
    return [f"row {a} = validation row {b} ({rows['object_name'].iloc[a - 1]})" for a, b in pairs]


def sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def kpi_overlap(train: pd.DataFrame, train_images: Path, kpi: pd.DataFrame, kpi_images: Path,
                layout: ImageLayout) -> list[tuple[int, str]]:
    """Training rows (1-based, description) with a capture file that IS a KPI capture file —
    the same resolved path, or the same bytes under another path.

    Only files whose size equals some KPI capture's size are hashed, so the cost is a ``stat`` per
    file plus hashes of the rare same-size pairs, not a hash of the whole training set.
    """
    hits: dict[int, str] = {}
    for a, b in capture_overlap(train, train_images, kpi, kpi_images, layout):
        hits.setdefault(a, f"row {a}: a capture file of KPI row {b} (same path)")
    kpi_by_size: dict[int, list[Path]] = defaultdict(list)
    for rec in kpi.to_dict(orient="records"):
        for p in layout.capture_paths(Path(kpi_images), rec):
            try:
                kpi_by_size[os.path.getsize(p)].append(p)
            except OSError:
                continue
    kpi_hashes: dict[int, dict[str, Path]] = {}
    for i, rec in enumerate(train.to_dict(orient="records"), start=1):
        if i in hits:
            continue
        for p in layout.capture_paths(Path(train_images), rec):
            try:
                size = os.path.getsize(p)
            except OSError:
                continue  # a missing file is reported by the missing-file check
            if size not in kpi_by_size:
                continue
            if size not in kpi_hashes:
                kpi_hashes[size] = {sha256(k): k for k in kpi_by_size[size]}
            twin = kpi_hashes[size].get(sha256(p))
            if twin is not None:
                hits[i] = f"row {i}: {p} has the same content as KPI capture {twin}"
                break
    return sorted(hits.items())


__all__ = ["kpi_overlap", "sha256", "validation_overlap"]
