"""Data mining: find pool samples that look like the weak KPI samples (the ``data_mining`` stage).

Targets (the routed weak samples, one row per sample) and the pool are embedded with the SAME
embedder, L2-normalised, and searched with an exact FAISS inner-product index (= cosine). A pool
row is a *candidate* when it is among the ``top_k_per_target`` neighbours of some target; it is
*kept* when its best cosine over the targets reaches ``min_similarity``; it is *selected* (novel)
when no earlier iteration already mined it (the ledger ``RD/mining_history.json``).

Each mined row remembers the label of the target that found it (``target_label``) so mining
precision (pool label == target label) can be measured; the pool label stays the row's label:
the pool is labelled, mining only chooses which rows to add.

Identity of a pool sample (ledger ``selected_filepaths``): the absolute path of its capture without
the light suffix, ``<pool image root>/<input_path>/<object_name>`` — the same for every light and
every iteration, and needing no knowledge of the lights.
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from raypipe._io import atomic_write_bytes, atomic_write_json, atomic_write_text, read_json
from raypipe.deft._leakage import validation_overlap
from raypipe.deft._stage_io import rebase_rows, remove_files, sample_key, write_parquet
from raypipe.deft.errors import HardStop
from raypipe.rundir import MiningDir
from raypipe.workspace._rows import REQUIRED_COLUMNS, ImageLayout, normalise_label, read_rows, write_rows

log = logging.getLogger(__name__)

STAGE = "data_mining"
EmbedFn = Callable[[pd.DataFrame, Path], np.ndarray]  # (rows, images_dir) -> float32 [n, d]
# columns mined.parquet adds to the pool row (dropped again when writing mining_pool.csv)
MINED_COLUMNS = ["filepath", "similarity", "target_label", "target_object_name", "target_filepath",
                 "n_targets", "pool_row"]


# --------------------------------------------------------------------------- search

def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32, C-contiguous, as FAISS wants); zero rows stay zero."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.where(norms > 0, norms, 1.0), dtype=np.float32)


def cosine_knn(targets: np.ndarray, pool: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` by inner product of L2-normalised vectors (= cosine) with ``faiss.IndexFlatIP``.

    Flat (exact) search: a few hundred targets against a 1M pool takes seconds on 2 cores
    (measured by ``benchmarks/mining_scale.py``); an approximate index would only add recall loss.
    Returns (similarities, pool indices), each ``[n_targets, min(k, n_pool)]``, best first.
    """
    import faiss

    if pool.ndim != 2 or targets.ndim != 2 or pool.shape[1] != targets.shape[1]:
        raise ValueError(f"embedding shapes do not match: targets {targets.shape}, pool {pool.shape}")
    k = min(int(k), pool.shape[0])
    index = faiss.IndexFlatIP(pool.shape[1])
    index.add(np.ascontiguousarray(pool, dtype=np.float32))
    sims, idx = index.search(np.ascontiguousarray(targets, dtype=np.float32), k)
    return sims, idx


# --------------------------------------------------------------------------- a deterministic embedder

def pixel_embedder(layout: ImageLayout, size: int = 16) -> EmbedFn:
    """Embedder of ``phase2.mining_filter.embedder: pixels``: per light, the capture and its difference
    to the golden, downsampled to ``size``×``size``, mean-centred per vector. Deterministic and
    model-free (a fallback when no checkpoint exists, and the embedder of the tests)."""

    def embed(rows: pd.DataFrame, images_dir: Path) -> np.ndarray:
        from PIL import Image

        def small(p: Path) -> np.ndarray:
            with Image.open(p) as im:
                return np.asarray(im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0

        out = np.empty((len(rows), len(layout.lights) * 2 * size * size * 3), dtype=np.float32)
        for i, rec in enumerate(rows.to_dict(orient="records")):
            feats = []
            for cap, gold in zip(layout.capture_paths(Path(images_dir), rec), layout.golden_paths(Path(images_dir), rec)):
                c, g = small(cap), small(gold)
                feats += [c.ravel(), 2.0 * (c - g).ravel()]
            v = np.concatenate(feats)
            out[i] = v - v.mean()
        return out

    return embed


# --------------------------------------------------------------------------- the stage

@dataclass(frozen=True)
class MiningInputs:
    """What one ``data_mining`` run reads, and where it writes."""

    mining_gaps: Path  # routing's mining_gaps.parquet: the weak targets (absolute image dirs)
    pool_csv: Path | None
    pool_images_dir: Path  # root of the pool CSV's relative paths
    out: MiningDir  # RD/iter<N>/mining_filter/
    workspace_root: Path
    top_k_per_target: int
    min_similarity: float  # cosine
    history_path: Path  # the ledger RD/mining_history.json
    iteration: int
    validation_csv: Path
    validation_images_dir: Path
    sdg_rows_csv: Path | None  # this iteration's SDG rows (None: SDG skipped)


def run_mining(inputs: MiningInputs, *, embed: EmbedFn) -> dict[str, Any]:
    """Mine the pool for the routed weak targets; write ``mining_filter/*`` and update the ledger."""
    if inputs.top_k_per_target < 1:
        raise ValueError(f"mining_filter.top_k_per_target must be >= 1, got {inputs.top_k_per_target}")
    out = inputs.out
    out.path.mkdir(parents=True, exist_ok=True)
    remove_files(out.path, [p.name for p in out.mining_outputs()])  # sdg_rows_raw.csv (the SDG stage's) stays
    root = Path(inputs.workspace_root).resolve()
    sdg_rows = read_rows(inputs.sdg_rows_csv) if inputs.sdg_rows_csv is not None and \
        Path(inputs.sdg_rows_csv).is_file() else None
    gaps = pd.read_parquet(inputs.mining_gaps)
    if gaps.empty:
        return _skip(inputs, sdg_rows, root)

    pool = _read_pool(inputs.pool_csv)
    targets = gaps.loc[~sample_key(gaps).duplicated()].reset_index(drop=True)
    no_pool_rows = sorted(set(targets["label"].astype(str).str.strip().str.upper())
                          - set(pool["label"].astype(str).str.strip().str.upper()))
    if no_pool_rows:  # warn BEFORE mining: these targets can only pull rows of other labels
        log.warning("data_mining: target label(s) %s have no rows in the pool %s", no_pool_rows, inputs.pool_csv)
    t_n, p_n = _embeddings(embed, targets, pool, inputs, root)
    sims, idx = cosine_knn(t_n, p_n, inputs.top_k_per_target)

    identity = _identities(pool, Path(inputs.pool_images_dir))
    history = _read_history(Path(inputs.history_path))
    earlier = {fp for e in history["iterations"] if e["iteration"] < inputs.iteration for fp in e["selected_filepaths"]}
    cands = _candidates(pool, identity, targets, sims, idx)
    cands["kept"] = cands["similarity"] >= inputs.min_similarity
    cands["already_mined"] = cands["kept"] & cands["filepath"].isin(earlier)
    cands["selected"] = cands["kept"] & ~cands["already_mined"]
    mined = _mined_rows(cands, pool, inputs, root)

    entry = {"iteration": inputs.iteration, "topn": inputs.top_k_per_target, "candidate_unique_count": len(cands),
             "already_mined_count": int(cands["already_mined"].sum()), "selected_count": len(mined),
             "selected_filepaths": sorted(mined["filepath"])}
    _record(history, entry)
    n_sdg = 0 if sdg_rows is None else len(sdg_rows)
    evidence = _write_outputs(inputs, cands, mined, entry, history, targets=targets, pool=pool, identity=identity,
                              t_n=t_n, p_n=p_n, no_pool_rows=no_pool_rows, n_sdg=n_sdg)
    pool_path = _write_mining_pool(out, sdg_rows, mined[list(pool.columns)], inputs.validation_csv,
                                   inputs.validation_images_dir, root)
    n_kept = int(cands["kept"].sum())
    if mined.empty and n_sdg == 0:
        raise HardStop(STAGE, f"nothing new to train on: 0 novel mined rows ({n_kept} kept, "
                              f"{entry['already_mined_count']} already mined earlier) and no SDG rows",
                       "lower phase2.mining_filter.min_similarity, add pool rows, or enable SDG for these labels")
    atomic_write_json(inputs.history_path, history)  # the ledger moves only when the stage succeeds
    log.info("data_mining: %d candidates, %d kept, %d already mined, %d selected; mining_pool.csv %d rows",
             len(cands), n_kept, entry["already_mined_count"], len(mined), len(mined) + n_sdg)
    return {**evidence, "mining_pool_csv": str(pool_path)}


def _skip(inputs: MiningInputs, sdg_rows: pd.DataFrame | None, root: Path) -> dict[str, Any]:
    """No target routed to mining: ``mining_pool.csv`` holds the SDG rows alone (a hard stop if none)."""
    _forget_iteration(Path(inputs.history_path), inputs.iteration)  # a re-run that now skips leaves no stale entry
    pool_path = _write_mining_pool(inputs.out, sdg_rows, None, inputs.validation_csv, inputs.validation_images_dir,
                                   root)
    n_sdg = 0 if sdg_rows is None else len(sdg_rows)
    if n_sdg == 0:
        raise HardStop(STAGE, "nothing new to train on: no mining targets and no SDG rows",
                       "route labels to mining (pool rows with the gap labels) or to SDG (recipes)")
    log.info("data_mining: skipped (empty mining subset); mining_pool.csv holds %d SDG rows", n_sdg)
    return {"data_mining_skipped": True, "mining_pool_csv": str(pool_path)}


def _read_pool(pool_csv: Path | None) -> pd.DataFrame:
    if pool_csv is None or not Path(pool_csv).is_file():
        raise HardStop(STAGE, f"mining is routed but the pool {pool_csv} does not exist",
                       "restore augmentation/mining_pool/mining_pool.csv or set mining_pool_csv")
    pool = read_rows(pool_csv)
    if pool.empty:
        raise HardStop(STAGE, f"mining is routed but the pool {pool_csv} has no rows", "add rows to the mining pool")
    return pool


def _embeddings(embed: EmbedFn, targets: pd.DataFrame, pool: pd.DataFrame, inputs: MiningInputs,
                root: Path) -> tuple[np.ndarray, np.ndarray]:
    """Targets and pool through the same embedder, pool-centred and L2-normalised."""
    t_emb = _embed(embed, _workspace_relative(targets, root, Path(inputs.mining_gaps)), root, "targets")
    p_emb = _embed(embed, pool, Path(inputs.pool_images_dir), f"pool {inputs.pool_csv}")
    if t_emb.shape[1] != p_emb.shape[1]:
        raise HardStop(STAGE, f"embedder returned {t_emb.shape[1]}-d target and {p_emb.shape[1]}-d pool vectors",
                       "use the same embedder for targets and pool")
    # Cosine on pool-centred vectors: raw model features share a large common component (every
    # pair scores ≥ 0.96), which would make min_similarity a no-op. Centring keeps what differs.
    centre = p_emb.mean(axis=0, keepdims=True)
    return l2_normalise(t_emb - centre), l2_normalise(p_emb - centre)


def _mined_rows(cands: pd.DataFrame, pool: pd.DataFrame, inputs: MiningInputs, root: Path) -> pd.DataFrame:
    """The selected candidates as pool rows (workspace-root-relative) plus the mining columns."""
    mined = cands[cands["selected"]].copy()
    mined.index = mined["pool_row"].to_numpy() - 1  # so an error names the pool CSV row
    mined = rebase_rows(mined, Path(inputs.pool_images_dir), root, Path(str(inputs.pool_csv)), STAGE)
    mined["label"] = mined["label"].map(normalise_label)
    return mined[list(pool.columns) + MINED_COLUMNS].reset_index(drop=True)


def _record(history: dict[str, Any], entry: dict[str, Any]) -> None:
    """This iteration's ledger entry, replacing an earlier attempt's (in memory; written on success)."""
    history["iterations"] = sorted([e for e in history["iterations"] if e["iteration"] != entry["iteration"]]
                                   + [entry], key=lambda e: e["iteration"])
    history["cumulative_unique_count"] = len({fp for e in history["iterations"] for fp in e["selected_filepaths"]})


def _write_outputs(inputs: MiningInputs, cands: pd.DataFrame, mined: pd.DataFrame, entry: dict[str, Any],
                   history: dict[str, Any], *, targets: pd.DataFrame, pool: pd.DataFrame, identity: pd.Series,
                   t_n: np.ndarray, p_n: np.ndarray, no_pool_rows: list[str], n_sdg: int) -> dict[str, Any]:
    """Every ``mining_filter/`` file but ``mining_pool.csv``; returns the evidence naming them."""
    out = inputs.out
    n_cand, n_kept = len(cands), int(cands["kept"].sum())
    knn = atomic_write_text(out.knn_summary, pd.DataFrame([{
        "candidate_count": n_cand, "kept_count": n_kept, "rejected_count": n_cand - n_kept,
        "similarity_threshold": float(inputs.min_similarity)}]).to_csv(index=False))
    src_emb = _write_embeddings(out.source_embeddings, identity, pool["label"], p_n)
    tgt_emb = _write_embeddings(out.target_embeddings, targets["filepath"].astype(str)
                                if "filepath" in targets.columns else sample_key(targets), targets["label"], t_n)
    cand_path = write_parquet(cands, out.candidates)
    mined_path = write_parquet(mined, out.mined)
    summary_path = atomic_write_json(out.history_summary, {
        **{k: v for k, v in entry.items() if k != "selected_filepaths"},
        "kept_count": n_kept, "similarity_threshold": float(inputs.min_similarity), "metric": "cosine",
        "target_count": len(targets), "pool_count": len(pool), "sdg_row_count": n_sdg,
        "labels_without_pool_rows": no_pool_rows,
        "warnings": [f"target label {lab} has no rows in the pool" for lab in no_pool_rows],
        "mining_precision": _precision(mined), "cumulative_unique_count": history["cumulative_unique_count"],
        "history_file": str(Path(inputs.history_path).resolve()),
    })
    return {"mining_mined_parquet": str(mined_path), "mining_candidate_parquet": str(cand_path),
            "mining_summary": str(knn), "mining_history_summary": str(summary_path),
            "mining_target_embeddings": str(tgt_emb), "mining_source_embeddings": str(src_emb),
            "mining_mined_count": int(len(mined))}


def _embed(embed: EmbedFn, rows: pd.DataFrame, images_dir: Path, what: str) -> np.ndarray:
    vecs = np.asarray(embed(rows, images_dir))
    if vecs.ndim != 2 or vecs.shape[0] != len(rows):
        raise HardStop(STAGE, f"embedder returned shape {vecs.shape} for {len(rows)} {what} rows",
                       "the embedder must return one vector per row")
    if not np.isfinite(vecs).all():
        raise HardStop(STAGE, f"embedder returned NaN/inf for {what}", "check the embedding checkpoint")
    return vecs


def _workspace_relative(targets: pd.DataFrame, root: Path, gaps: Path) -> pd.DataFrame:
    """RCA writes absolute target directories; an embedder (a TAO container mounting the workspace)
    is happiest with the workspace-root-relative form every generated CSV uses. Outside the
    workspace (an unusual KPI image root) the absolute form is kept."""
    try:
        return rebase_rows(targets, root, root, gaps, STAGE)
    except HardStop:
        return targets


def _identities(pool: pd.DataFrame, images_dir: Path) -> pd.Series:
    dirs = {d: os.path.realpath(d if os.path.isabs(d) else images_dir / d) for d in pool["input_path"].unique()}
    return pool["input_path"].map(dirs) + "/" + pool["object_name"]


def _candidates(pool: pd.DataFrame, identity: pd.Series, targets: pd.DataFrame,
                sims: np.ndarray, idx: np.ndarray) -> pd.DataFrame:
    """One row per unique candidate pool sample: its best similarity and the target that found it."""
    t_rows = np.repeat(np.arange(sims.shape[0]), sims.shape[1])
    pairs = pd.DataFrame({"pool_index": idx.ravel(), "target_index": t_rows, "similarity": sims.ravel()})
    pairs = pairs[pairs["pool_index"] >= 0]  # FAISS pads with -1 when k > pool size
    pairs["filepath"] = identity.to_numpy()[pairs["pool_index"].to_numpy()]
    n_targets = pairs.groupby("filepath")["target_index"].nunique()
    # best pair per sample identity; ties → lower target/pool index (deterministic)
    best = (pairs.sort_values(["similarity", "target_index", "pool_index"], ascending=[False, True, True],
                              kind="mergesort").drop_duplicates("filepath"))
    cand = pool.iloc[best["pool_index"].to_numpy()].reset_index(drop=True)
    t = targets.iloc[best["target_index"].to_numpy()].reset_index(drop=True)
    cand["filepath"] = best["filepath"].to_numpy()
    cand["similarity"] = best["similarity"].to_numpy().astype(np.float64)
    cand["target_label"] = t["label"].map(normalise_label).to_numpy()
    cand["target_object_name"] = t["object_name"].astype(str).to_numpy()
    cand["target_filepath"] = (t["filepath"] if "filepath" in t.columns else sample_key(t)).astype(str).to_numpy()
    cand["n_targets"] = cand["filepath"].map(n_targets).astype(int).to_numpy()
    cand["pool_row"] = best["pool_index"].to_numpy() + 1  # 1-based row of the pool CSV
    return cand


def _write_mining_pool(out: MiningDir, sdg_rows: pd.DataFrame | None, mined: pd.DataFrame | None,
                       validation_csv: Path, validation_images_dir: Path, root: Path) -> Path:
    """``mining_pool.csv`` = SDG rows + novel mined rows, leakage-checked against validation at once."""
    parts = [df for df in (sdg_rows, mined) if df is not None]
    cols = list(REQUIRED_COLUMNS)
    for df in parts:
        cols += [c for c in df.columns if c not in cols]
    pool = pd.concat([df.reindex(columns=cols, fill_value="") for df in parts], ignore_index=True) \
        if parts else pd.DataFrame(columns=cols)
    path = write_rows(pool.fillna(""), out.mining_pool)
    _leakage_check(path, pool, root, Path(validation_csv), Path(validation_images_dir))
    return path


def _leakage_check(path: Path, rows: pd.DataFrame, root: Path, validation_csv: Path, val_images: Path) -> None:
    if rows.empty:
        return
    hits = validation_overlap(rows, root, read_rows(validation_csv), val_images, root)
    if hits:
        raise HardStop(STAGE, f"{path}: {len(hits)} row(s) overlap the validation set {validation_csv} "
                              f"(first: {hits[0]})", "remove validation samples from the mining pool")


def _read_history(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"identity": "filepath", "iterations": [], "cumulative_unique_count": 0}
    try:
        data = read_json(path)
        assert isinstance(data, dict) and isinstance(data.get("iterations"), list)
    except (ValueError, AssertionError) as exc:
        raise HardStop(STAGE, f"{path}: not a mining history ledger ({exc})",
                       "restore mining_history.json from loop_log.jsonl or delete it to mine from scratch") from None
    return data


def _forget_iteration(path: Path, iteration: int) -> None:
    if not path.exists():
        return
    history = _read_history(path)
    kept = [e for e in history["iterations"] if e["iteration"] != iteration]
    if len(kept) != len(history["iterations"]):
        history["iterations"] = kept
        history["cumulative_unique_count"] = len({fp for e in kept for fp in e["selected_filepaths"]})
        atomic_write_json(path, history)


def _write_embeddings(path: Path, ids: pd.Series, labels: pd.Series, vecs: np.ndarray) -> Path:
    """(filepath, label, embedding[d]) with a fixed-size list column: compact and zero-copy for big pools."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    emb = pa.FixedSizeListArray.from_arrays(pa.array(vecs.astype(np.float32).ravel()), vecs.shape[1])
    table = pa.table({"filepath": pa.array(ids.astype(str).to_list()),
                      "label": pa.array(labels.astype(str).to_list()), "embedding": emb})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return atomic_write_bytes(path, buf.getvalue())


def _precision(mined: pd.DataFrame) -> float | None:
    if mined.empty:
        return None
    same = mined["label"].astype(str).str.upper() == mined["target_label"].astype(str).str.upper()
    return float(same.mean())


__all__ = ["EmbedFn", "MiningInputs", "cosine_knn", "l2_normalise", "pixel_embedder", "run_mining"]
