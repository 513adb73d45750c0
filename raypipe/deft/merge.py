"""Merge: the next training set = what we trained on + what this iteration found (the ``data_merge`` stage).

Iteration 1 starts from the base training rows, rewritten ONCE from image-root to workspace-root
coordinates (so every combined CSV trains with ``images_dir = <workspace>``); iteration N > 1 takes
``train_combined_iter<N-1>.csv`` unchanged. Then ``mining_pool.csv`` (SDG + novel mined rows) is
appended. Nothing is deduplicated or dropped: previous rows are retained exactly (as a multiset).

The combined set is validated BEFORE training: every file of every light exists, required
columns are present, no row overlaps the validation set (leakage key), and no training capture is a
KPI capture — by resolved path and by content (sha256), since a copied KPI image is still the KPI.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd

from raypipe._io import atomic_write_json, atomic_write_text
from raypipe.deft._leakage import kpi_overlap, validation_overlap
from raypipe.deft._stage_io import rebase_rows, remove_files
from raypipe.deft.errors import HardStop
from raypipe.rundir import IterationDir, iteration_label, provenance_of
from raypipe.workspace._rows import REQUIRED_COLUMNS, ImageLayout, normalise_label, read_rows, write_rows
from raypipe.workspace._validate import inspect_rows

log = logging.getLogger(__name__)

STAGE = "data_merge"
SOURCES = ("base_train", "previous_iter_train", "sdg", "mined")
_EXAMPLES = 5


def run_merge(iteration: int, iter_dir: Path, *, base_train_csv: Path, base_images_dir: Path,
              prev_combined_csv: Path | None, mining_pool_csv: Path, workspace_root: Path,
              validation_csv: Path, validation_images_dir: Path, kpi_csv: Path, kpi_images_dir: Path,
              layout: ImageLayout) -> dict[str, Any]:
    """Write ``dataset/train_combined_iter<N>.csv``, its provenance and ``merge_validation.json``."""
    root = Path(os.path.realpath(workspace_root))
    it = IterationDir(Path(iter_dir), iteration_label(iteration))
    out = it.dataset
    out.path.mkdir(parents=True, exist_ok=True)
    remove_files(out.path, [p.name for p in out.merge_outputs()])  # the staged synthetic images belong to SDG
    combined_path, prov_path, report_path = out.combined_csv, out.provenance_csv, out.merge_validation

    problems: list[str] = []
    if iteration == 1:
        if prev_combined_csv is not None:
            raise ValueError("iteration 1 merges the base training set; prev_combined_csv must be None")
        prev = _read(base_train_csv, "base training CSV", problems)
        prev = rebase_rows(prev, Path(base_images_dir), root, Path(base_train_csv), STAGE)
        prev_source = pd.Series(["base_train"] * len(prev))
        prev_origin = prev_source.copy()
        prev_origin_iter = pd.Series([0] * len(prev))
    else:
        if prev_combined_csv is None:
            raise ValueError(f"iteration {iteration} merges train_combined_iter{iteration - 1}.csv; "
                             f"prev_combined_csv is required")
        prev = _read(prev_combined_csv, "previous combined CSV", problems)
        prev_source = pd.Series(["previous_iter_train"] * len(prev))
        prev_origin, prev_origin_iter = _previous_origin(Path(prev_combined_csv), len(prev), iteration - 1)
    new = _read(mining_pool_csv, "mining_pool.csv", problems)
    new_source = _classify_pool(new, it.mining.sdg_rows_raw)

    cols = list(REQUIRED_COLUMNS)
    for df in (prev, new):
        cols += [c for c in df.columns if c not in cols]
    combined = pd.concat([prev.reindex(columns=cols, fill_value=""), new.reindex(columns=cols, fill_value="")],
                         ignore_index=True).fillna("")
    combined["label"] = combined["label"].map(normalise_label)
    source = pd.concat([prev_source, new_source], ignore_index=True)
    provenance = pd.DataFrame({
        "row": range(1, len(combined) + 1), "source": source,
        "origin": pd.concat([prev_origin, new_source], ignore_index=True),
        "origin_iteration": pd.concat([prev_origin_iter, pd.Series([iteration] * len(new))], ignore_index=True),
        "input_path": combined["input_path"], "golden_path": combined["golden_path"],
        "label": combined["label"], "object_name": combined["object_name"],
    })
    write_rows(combined, combined_path)
    atomic_write_text(prov_path, provenance.to_csv(index=False))

    report = _validate(combined, combined_path, root, layout, Path(validation_csv), Path(validation_images_dir),
                       Path(kpi_csv), Path(kpi_images_dir), problems)
    report = {"status": "failed" if problems else "passed", "training_csv": str(combined_path),
              "validation_csv": str(Path(validation_csv).resolve()), **report,
              "source_counts": {s: int((source == s).sum()) for s in SOURCES}, "problems": problems}
    atomic_write_json(report_path, report)
    if problems:
        raise HardStop(STAGE, f"merged training set {combined_path} failed validation: {'; '.join(problems)} "
                              f"(see {report_path})",
                       "fix the rows named in merge_validation.json; never train on leaked or missing data")
    log.info("data_merge: %d rows (%s)", len(combined), report["source_counts"])
    return {"combined_training_csv": str(combined_path), "provenance_csv": str(prov_path),
            "merge_validation_report": str(report_path)}


def _read(path: Path | None, what: str, problems: list[str]) -> pd.DataFrame:
    if path is None or not Path(path).is_file():
        raise HardStop(STAGE, f"{what} {path} does not exist", "re-run the stage that writes it")
    df = read_rows(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        problems.append(f"{path}: missing required column(s) {missing}")
        for c in missing:
            df[c] = ""
    return df


def _classify_pool(pool: pd.DataFrame, sdg_rows_csv: Path) -> pd.Series:
    """``sdg`` for the rows the SDG stage wrote (sdg_rows_raw.csv), ``mined`` for the rest."""
    if pool.empty:
        return pd.Series([], dtype=object)
    sdg_keys: set[tuple[str, str, str]] = set()
    if sdg_rows_csv.is_file():
        sdg = read_rows(sdg_rows_csv)
        sdg_keys = set(zip(sdg["input_path"], sdg["golden_path"], sdg["object_name"]))
    keys = zip(pool["input_path"], pool["golden_path"], pool["object_name"])
    return pd.Series(["sdg" if k in sdg_keys else "mined" for k in keys], dtype=object)


def _previous_origin(prev_csv: Path, n: int, prev_iteration: int) -> tuple[pd.Series, pd.Series]:
    """Carry the original source (base_train / sdg / mined) of earlier rows forward, for the report."""
    prov = provenance_of(prev_csv)
    if prov.is_file():
        p = pd.read_csv(prov, dtype=str, keep_default_na=False)
        if len(p) == n and {"origin", "origin_iteration"} <= set(p.columns):
            return p["origin"].reset_index(drop=True), p["origin_iteration"].astype(int).reset_index(drop=True)
    return pd.Series(["previous_iter_train"] * n), pd.Series([prev_iteration] * n)


def _validate(combined: pd.DataFrame, csv: Path, root: Path, layout: ImageLayout, validation_csv: Path,
              val_images: Path, kpi_csv: Path, kpi_images: Path, problems: list[str]) -> dict[str, Any]:
    files = inspect_rows(combined, csv, root, layout, root, confine_to=root, limit=_EXAMPLES)
    if files.missing_file_count:
        problems.append(f"{files.missing_file_count} missing image file(s)")
    if files.escaped_path_count:
        problems.append(f"{files.escaped_path_count} path(s) resolve outside the workspace")
    if files.empty_cell_count:
        problems.append(f"{files.empty_cell_count} empty required cell(s)")
    details = [str(p) for p in files.problems]

    leaks = validation_overlap(combined, root, read_rows(validation_csv), val_images, root)
    if leaks:
        problems.append(f"{len(leaks)} row(s) overlap the validation set {validation_csv}, e.g. {leaks[0]}")
    kpi_hits = kpi_overlap(combined, root, read_rows(kpi_csv), kpi_images, layout)
    if kpi_hits:
        problems.append(f"{len(kpi_hits)} training row(s) use a KPI capture, e.g. {kpi_hits[0][1]}")
    return {"rows_checked": int(len(combined)), "missing_file_count": files.missing_file_count,
            "train_val_leakage_overlap_count": len(leaks), "kpi_overlap_count": len(kpi_hits),
            "files_checked": files.files_checked, "file_problems": details[:_EXAMPLES],
            "train_val_overlaps": leaks[:_EXAMPLES], "kpi_overlaps": [d for _, d in kpi_hits[:_EXAMPLES]]}


__all__ = ["SOURCES", "run_merge"]
