"""Data mining: find pool samples that look like the weak KPI samples (the ``data_mining`` stage).

The routed targets (RCA's weakest KPI samples, one row per sample) and the pool go through the
SAME embedder (:mod:`raypipe.embedding`: the pool in parallel Ray tasks, both through a cache keyed
by image content and embedder version), then the selection recipe of
:mod:`raypipe.deft._selection` picks rows: centred cosine, label-aware per-target top-k, rows mined
in earlier iterations removed from the search space first, a similarity cut.

Each mined row remembers the label of the target that found it (``target_label``), so mining
precision (pool label == target label) and pool recall per kind are measured every iteration
(``mining_stats.csv``); the pool label stays the row's label: the pool is labelled, mining only
chooses which rows to add.

Identity of a pool sample (ledger ``selected_filepaths``): the absolute path of its capture without
the light suffix, ``<pool image root>/<input_path>/<object_name>`` — the same for every light and
every iteration, and needing no knowledge of the lights.

TAO's records are written as TAO's commit script expects them: the resolved pool CSV before the
pool is read, one log per step (target embeddings, source embeddings, nearest neighbours) and the
ledger ``RD/mining_history.json`` in TAO's format, with an empty entry for a skipped iteration so
the next one still verifies.
"""

from __future__ import annotations

import io
import logging
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from raypipe import tao_interop as ti
from raypipe._io import atomic_write_bytes, atomic_write_json, atomic_write_text, read_json
from raypipe.deft._leakage import validation_overlap
from raypipe.deft._selection import SelectionConfig, headline, mining_stats, select, stats_frame
from raypipe.deft._stage_io import rebase_rows, remove_files, sample_key, write_parquet
from raypipe.deft.errors import HardStop
from raypipe.embedding import Embedder, EmbeddingCache, EmbedStats, embed_rows
from raypipe.rundir import MiningDir
from raypipe.workspace._rows import PASS, REQUIRED_COLUMNS, normalise_label, read_rows, write_rows

if TYPE_CHECKING:
    from raypipe.placement import Placement

log = logging.getLogger(__name__)

STAGE = "data_mining"
# columns mined.parquet adds to the pool row (dropped again when writing mining_pool.csv)
MINED_COLUMNS = ["filepath", "similarity", "target_label", "target_object_name", "target_filepath",
                 "n_targets", "pool_row"]
# mining_stats.csv: the per-label record of _selection.LabelStats, plus the embedder's own precision
# when the same targets search the whole pool label-blind (a diagnostic: nothing is mined by it)
BLIND_PRECISION = "label_blind_precision"


# --------------------------------------------------------------------------- inputs

@dataclass(frozen=True)
class Embedding:
    """How the stage embeds: the embedder, its cache (None: off), parallel Ray tasks and their resources."""

    embedder: Embedder
    cache: EmbeddingCache | None = None
    workers: int = 0  # 0: in this process
    resources: dict[str, float] = field(default_factory=lambda: {"cpu": 1.0, "gpu": 0.0})
    placement: Placement | None = None  # where each embedding task records itself

    def rows(self, rows: pd.DataFrame, images_dir: Path, what: str) -> tuple[np.ndarray, EmbedStats]:
        """``embed_rows`` with errors turned into a hard stop naming ``what`` was being embedded."""
        try:
            return embed_rows(self.embedder, rows, Path(images_dir), cache=self.cache, workers=self.workers,
                              resources=self.resources, placement=self.placement)
        except ValueError as exc:  # unreadable image, malformed vectors (a Ray task's error is one too)
            raise HardStop(STAGE, f"embedding {what} with {self.embedder.name} failed: {exc}",
                           "fix or remove the named image, or choose another phase2.mining_filter.embedder") from None

    def facts(self, stats: EmbedStats, dim: int, images_dir: Path) -> dict[str, Any]:
        """What one embedding step did, for its TAO step log."""
        emb = self.embedder
        out: dict[str, Any] = {"embedder": emb.name, "embedder_version": emb.version}
        source = getattr(emb, "weights_source", None) or getattr(emb, "ckpt", None)
        if source is not None:
            out["weights"] = str(source)
        out.update({"images_dir": str(images_dir), "rows": stats.rows, "dimension": dim,
                    "cache": str(self.cache.path) if self.cache is not None else "disabled",
                    "cache_hits": stats.cache_hits, "embedded_now": stats.computed, "workers": stats.workers,
                    "chunks": stats.chunks, "seconds": round(stats.seconds, 2)})
        return out


@dataclass(frozen=True)
class MiningInputs:
    """What one ``data_mining`` run reads, and where it writes."""

    mining_gaps: Path  # routing's mining_gaps.parquet: the weak targets (absolute image dirs)
    pool_csv: Path | None
    pool_images_dir: Path  # root of the pool CSV's relative paths
    out: MiningDir  # RD/iter<N>/mining_filter/
    workspace_root: Path
    selection: SelectionConfig
    history_path: Path  # the ledger RD/mining_history.json
    resolved_pool_csv: Path  # RD/inputs/mining_pool.resolved.csv: the pool with one canonical filepath per row
    iteration: int
    validation_csv: Path
    validation_images_dir: Path
    sdg_rows_csv: Path | None  # this iteration's SDG rows (None: SDG skipped)

    @property
    def iter_dir(self) -> Path:
        return Path(self.out.path).parent


# --------------------------------------------------------------------------- the stage

def run_mining(inputs: MiningInputs, *, embedding: Embedding) -> dict[str, Any]:
    """Mine the pool for the routed weak targets; write ``mining_filter/*`` and update the ledger."""
    out = inputs.out
    out.path.mkdir(parents=True, exist_ok=True)
    # sdg_rows_raw.csv (the SDG stage's) stays
    remove_files(out.path, [p.name for p in out.mining_outputs()] + list(ti.MINING_LOG_FILES.values()))
    root = Path(inputs.workspace_root).resolve()
    sdg_rows = read_rows(inputs.sdg_rows_csv) if inputs.sdg_rows_csv is not None and \
        Path(inputs.sdg_rows_csv).is_file() else None
    gaps = pd.read_parquet(inputs.mining_gaps)
    if gaps.empty:
        return _skip(inputs, sdg_rows, root)

    pool = _read_pool(inputs, embedding.embedder)
    targets = _workspace_relative(gaps.loc[~sample_key(gaps).duplicated()].reset_index(drop=True), root,
                                  Path(inputs.mining_gaps))
    no_pool_rows = sorted(set(targets["label"].map(normalise_label)) - set(pool["label"].map(normalise_label)))
    if no_pool_rows:  # warn BEFORE mining: these targets can only pull rows of other labels
        log.warning("data_mining: target label(s) %s have no rows in the pool %s", no_pool_rows, inputs.pool_csv)

    t_emb, t_stats = embedding.rows(targets, root, "the targets")
    p_emb, p_stats = embedding.rows(pool, Path(inputs.pool_images_dir), f"the pool {inputs.pool_csv}")

    t0 = time.perf_counter()
    identity = _identities(pool, Path(inputs.pool_images_dir))
    ledger = _read_ledger(Path(inputs.history_path))
    earlier = {fp for e in ledger["iterations"] if e["iteration"] < inputs.iteration for fp in e["selected_filepaths"]}
    mined_before = identity.isin(earlier).to_numpy()
    sel = inputs.selection
    pairs, selected = select(targets["label"], t_emb, pool["label"], p_emb, sel, mined_before)
    stats = mining_stats(inputs.iteration, targets["label"], selected, pool["label"], mined_before)
    table = stats_frame(stats)
    table[BLIND_PRECISION] = _label_blind_precision(targets, t_emb, pool, p_emb, sel, mined_before, stats)
    knn_seconds = time.perf_counter() - t0

    cands = _candidates(pool, identity, targets, pairs)
    mined = _mined_rows(cands, pool, inputs, root)
    n_kept = int(cands["kept"].sum())
    n_sdg = 0 if sdg_rows is None else len(sdg_rows)
    others = [e for e in ledger["iterations"] if e["iteration"] != inputs.iteration]
    cumulative = len({fp for e in others for fp in e["selected_filepaths"]} | set(mined["filepath"]))
    excluded = int(mined_before.sum()) if sel.history_aware else 0
    precision = headline(stats)
    summary: dict[str, Any] = {
        "iteration": inputs.iteration, "topn": sel.top_k_per_target, "candidate_unique_count": len(cands),
        "already_mined_count": int(cands["already_mined"].sum()), "selected_count": len(mined),
        "cumulative_unique_count": cumulative, "kept_count": n_kept,
        "similarity_threshold": float(sel.min_similarity), "metric": "cosine (pool-centred)",
        "label_mode": sel.label_mode, "history_aware": sel.history_aware,
        "excluded_mined_earlier": excluded,
        "embedder": embedding.embedder.name, "embedder_version": embedding.embedder.version,
        "target_count": len(targets), "pool_count": len(pool), "sdg_row_count": n_sdg,
        "labels_without_pool_rows": no_pool_rows,
        "warnings": [f"target label {lab} has no rows in the pool" for lab in no_pool_rows],
        "mining_precision": _precision(mined), **precision,
        "history_file": str(Path(inputs.history_path).resolve()),
    }
    evidence = _write_outputs(inputs, cands, mined, summary, table, targets=targets, pool=pool, identity=identity,
                              t_emb=t_emb, p_emb=p_emb)
    evidence.update(ti.write_mining_logs(inputs.iter_dir, {
        "mining_target_log": {"targets_from": str(inputs.mining_gaps), **embedding.facts(t_stats, t_emb.shape[1], root)},
        "mining_source_log": {"pool_csv": str(inputs.pool_csv), "resolved_pool_csv": str(inputs.resolved_pool_csv),
                              **embedding.facts(p_stats, p_emb.shape[1], Path(inputs.pool_images_dir))},
        "mining_knn_log": _knn_facts(summary, pool_searchable=int((~mined_before).sum()) if sel.history_aware
                                     else len(pool), seconds=knn_seconds),
    }))
    pool_path = _write_mining_pool(out, sdg_rows, mined[list(pool.columns)], inputs.validation_csv,
                                   inputs.validation_images_dir, root)
    if mined.empty and n_sdg == 0:
        raise HardStop(STAGE, f"nothing new to train on: 0 novel mined rows ({n_kept} kept, "
                              f"{excluded} mined earlier) and no SDG rows",
                       "lower phase2.mining_filter.min_similarity, add pool rows, or enable SDG for these labels")
    # the ledger moves only when the stage succeeds, after the files its digests cover
    _write_ledger(inputs, others, mined["filepath"], summary)
    log.info("data_mining: %d candidates, %d kept, %d selected (defect-target precision %s); mining_pool.csv %d rows",
             len(cands), n_kept, len(mined), _fmt(precision["defect_precision"]), len(mined) + n_sdg)
    return {**evidence, "mining_pool_csv": str(pool_path), "mining_history": str(Path(inputs.history_path).resolve())}


def _skip(inputs: MiningInputs, sdg_rows: pd.DataFrame | None, root: Path) -> dict[str, Any]:
    """No target routed to mining: ``mining_pool.csv`` holds the SDG rows alone (a hard stop if none).

    The ledger still gets this iteration's entry, empty: TAO's history filter requires iterations
    numbered from 1 without gaps, so a skipped iteration N must not break iteration N+1.
    """
    out = inputs.out
    n_sdg = 0 if sdg_rows is None else len(sdg_rows)
    pool_path = _write_mining_pool(out, sdg_rows, None, inputs.validation_csv, inputs.validation_images_dir, root)
    if n_sdg == 0:
        raise HardStop(STAGE, "nothing new to train on: no mining targets and no SDG rows",
                       "route labels to mining (pool rows with the gap labels) or to SDG (recipes)")
    ledger = _read_ledger(Path(inputs.history_path))
    others = [e for e in ledger["iterations"] if e["iteration"] != inputs.iteration]
    empty = pd.DataFrame({"filepath": pd.Series([], dtype=str)})
    write_parquet(empty, out.candidates)
    write_parquet(empty, out.mined)
    atomic_write_json(out.history_summary, {
        "iteration": inputs.iteration, "topn": inputs.selection.top_k_per_target, "candidate_unique_count": 0,
        "already_mined_count": 0, "selected_count": 0,
        "cumulative_unique_count": len({fp for e in others for fp in e["selected_filepaths"]}),
        "skipped": "no gap was routed to mining", "sdg_row_count": n_sdg})
    _write_ledger(inputs, others, pd.Series([], dtype=str), {"candidate_unique_count": 0, "already_mined_count": 0})
    log.info("data_mining: skipped (empty mining subset); mining_pool.csv holds %d SDG rows", n_sdg)
    return {"data_mining_skipped": True, "mining_pool_csv": str(pool_path)}


def _read_pool(inputs: MiningInputs, embedder: Embedder) -> pd.DataFrame:
    """The pool, after writing its resolved copy (every file checked): a broken row stops here, named."""
    pool_csv = inputs.pool_csv
    if pool_csv is None or not Path(pool_csv).is_file():
        raise HardStop(STAGE, f"mining is routed but the pool {pool_csv} does not exist",
                       "restore augmentation/mining_pool/mining_pool.csv or set mining_pool_csv")
    pool = read_rows(pool_csv)
    if pool.empty:
        raise HardStop(STAGE, f"mining is routed but the pool {pool_csv} has no rows", "add rows to the mining pool")
    layout = embedder.layout
    try:
        ti.write_resolved_mining_pool(pool_csv, inputs.pool_images_dir, inputs.resolved_pool_csv,
                                      light=layout.lights[0], image_ext=layout.image_ext)
    except ValueError as exc:  # names the pool CSV, the row and the column
        raise HardStop(STAGE, str(exc), "restore the named pool images or remove their rows from the pool") from None
    return pool


def _label_blind_precision(targets: pd.DataFrame, t_emb: np.ndarray, pool: pd.DataFrame, p_emb: np.ndarray,
                           sel: SelectionConfig, mined_before: np.ndarray, stats: list[Any]) -> list[float | None]:
    """Per label (in ``stats`` order), the same-label precision the embedder reaches when the same
    targets search the whole pool: in ``label`` mode the mined rows carry the target's label by
    construction, this says whether the embedding itself finds the right kind. One more exact search."""
    if sel.label_mode != "none":
        _, chosen = select(targets["label"], t_emb, pool["label"], p_emb, replace(sel, label_mode="none"), mined_before)
        blind = {s.label: s.precision for s in mining_stats(0, targets["label"], chosen, pool["label"], mined_before)}
    else:
        blind = {s.label: s.precision for s in stats}
    return [blind.get(s.label) for s in stats]


def _candidates(pool: pd.DataFrame, identity: pd.Series, targets: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """One row per distinct pool row among the targets' top-k: its best similarity and the target that found it."""
    n_targets = pairs.groupby("pool_index")["target_index"].nunique()
    # best pair per pool row; ties → lower target index (deterministic)
    best = pairs.sort_values(["similarity", "target_index"], ascending=[False, True], kind="mergesort") \
        .drop_duplicates("pool_index").sort_values("pool_index", kind="mergesort")
    p_idx = best["pool_index"].to_numpy(dtype=np.int64)
    t = targets.iloc[best["target_index"].to_numpy(dtype=np.int64)].reset_index(drop=True)
    cand = pool.iloc[p_idx].reset_index(drop=True)
    cand["filepath"] = identity.to_numpy()[p_idx]
    cand["similarity"] = best["similarity"].to_numpy(dtype=np.float64)
    cand["target_label"] = t["label"].map(normalise_label).to_numpy()
    cand["target_object_name"] = t["object_name"].astype(str).to_numpy()
    cand["target_filepath"] = (t["filepath"] if "filepath" in t.columns else sample_key(t)).astype(str).to_numpy()
    cand["n_targets"] = n_targets.reindex(p_idx).to_numpy(dtype=np.int64)
    cand["pool_row"] = p_idx + 1  # 1-based row of the pool CSV
    cand["kept"] = best["kept"].to_numpy(dtype=bool)
    # history-aware search never offers a row mined earlier, so none is "already mined" here; the
    # column stays because TAO's history filter reports it
    cand["already_mined"] = False
    cand["selected"] = cand["kept"]
    return cand


def _mined_rows(cands: pd.DataFrame, pool: pd.DataFrame, inputs: MiningInputs, root: Path) -> pd.DataFrame:
    """The selected candidates as pool rows (workspace-root-relative) plus the mining columns."""
    mined = cands[cands["selected"]].copy()
    mined.index = mined["pool_row"].to_numpy() - 1  # so an error names the pool CSV row
    mined = rebase_rows(mined, Path(inputs.pool_images_dir), root, Path(str(inputs.pool_csv)), STAGE)
    mined["label"] = mined["label"].map(normalise_label)
    return mined[list(pool.columns) + MINED_COLUMNS].reset_index(drop=True)


def _write_outputs(inputs: MiningInputs, cands: pd.DataFrame, mined: pd.DataFrame, summary: dict[str, Any],
                   table: pd.DataFrame, *, targets: pd.DataFrame, pool: pd.DataFrame, identity: pd.Series,
                   t_emb: np.ndarray, p_emb: np.ndarray) -> dict[str, Any]:
    """Every ``mining_filter/`` file but the logs and ``mining_pool.csv``; returns the evidence naming them."""
    from raypipe.deft._selection import centred_unit

    out = inputs.out
    n_cand, n_kept = len(cands), int(cands["kept"].sum())
    knn = atomic_write_text(out.knn_summary, pd.DataFrame([{
        "candidate_count": n_cand, "kept_count": n_kept, "rejected_count": n_cand - n_kept,
        "similarity_threshold": float(inputs.selection.min_similarity)}]).to_csv(index=False))
    t_unit, p_unit = centred_unit(t_emb, p_emb)  # what the search compared
    src_emb = _write_embeddings(out.source_embeddings, identity, pool["label"], p_unit)
    tgt_emb = _write_embeddings(out.target_embeddings, targets["filepath"].astype(str)
                                if "filepath" in targets.columns else sample_key(targets), targets["label"], t_unit)
    stats_path = atomic_write_text(out.stats, table.to_csv(index=False))
    cand_path = write_parquet(cands, out.candidates)
    mined_path = write_parquet(mined, out.mined)
    summary_path = atomic_write_json(out.history_summary, summary)
    return {"mining_mined_parquet": str(mined_path), "mining_candidate_parquet": str(cand_path),
            "mining_summary": str(knn), "mining_history_summary": str(summary_path),
            "mining_target_embeddings": str(tgt_emb), "mining_source_embeddings": str(src_emb),
            "mining_stats_csv": str(stats_path), "mining_mined_count": int(len(mined))}


def _knn_facts(summary: dict[str, Any], *, pool_searchable: int, seconds: float) -> dict[str, Any]:
    return {"index": "faiss.IndexFlatIP (exact)", "metric": summary["metric"], "k": summary["topn"],
            "label_mode": summary["label_mode"], "history_aware": summary["history_aware"],
            "targets": summary["target_count"], "pool_rows": summary["pool_count"],
            "pool_rows_searchable": pool_searchable, "candidates": summary["candidate_unique_count"],
            "kept": summary["kept_count"], "rejected": summary["candidate_unique_count"] - summary["kept_count"],
            "min_similarity": summary["similarity_threshold"], "selected": summary["selected_count"],
            "defect_target_precision": _fmt(summary["defect_precision"]),
            "pass_target_precision": _fmt(summary["pass_precision"]), "seconds": round(seconds, 2)}


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
    return (pool["input_path"].map(dirs) + "/" + pool["object_name"]).reset_index(drop=True)


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


# --------------------------------------------------------------------------- the ledger

def _read_ledger(path: Path) -> dict[str, Any]:
    if not path.exists():
        return ti.mining_ledger([])
    try:
        data = read_json(path)
        if not (isinstance(data, dict) and isinstance(data.get("iterations"), list)
                and all("iteration" in e and isinstance(e.get("selected_filepaths"), list) for e in data["iterations"])):
            raise ValueError("expected {'iterations': [{'iteration', 'selected_filepaths', ...}, ...]}")
    except ValueError as exc:
        raise HardStop(STAGE, f"{path}: not a mining history ledger ({exc})",
                       "restore mining_history.json from loop_log.jsonl or delete it to mine from scratch") from None
    return data


def _write_ledger(inputs: MiningInputs, others: list[dict[str, Any]], selected: pd.Series,
                  counts: dict[str, Any]) -> None:
    """This iteration's entry in TAO's format (digests of the files just written), replacing an earlier attempt's."""
    out = inputs.out
    entry = ti.mining_ledger_entry(
        iteration=inputs.iteration, topn=inputs.selection.top_k_per_target, candidate_parquet=out.candidates,
        output_parquet=out.mined, summary_file=out.history_summary,
        candidate_unique_count=int(counts["candidate_unique_count"]),
        already_mined_count=int(counts["already_mined_count"]), selected_filepaths=selected.astype(str).tolist())
    atomic_write_json(inputs.history_path, ti.mining_ledger(others + [entry]))


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
    same = mined["label"].astype(str).map(normalise_label) == mined["target_label"].astype(str).map(normalise_label)
    return float(same.mean())


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def summary_line(stats_csv: Path | str, mined_count: int) -> str:
    """The data_mining event's one-line summary: rows mined and the per-kind outcome in brief."""
    table = pd.read_csv(stats_csv, keep_default_na=False, na_values=[""])
    defect = table[table["label"] != PASS]
    mined = int(defect["mined"].sum())
    same = int(defect["same_label"].sum())
    precision = f"{same / mined:.2f}" if mined else "-"
    recall = ", ".join(f"{r.label} {r.cumulative_recall:.2f}" for r in defect.itertuples()
                       if pd.notna(r.cumulative_recall) and r.targets > 0)
    n_pass = int(table.loc[table["label"] == PASS, "mined"].sum())
    return (f"mined {mined_count} novel pool rows ({mined} for defect targets, precision {precision}; {n_pass} for "
            f"PASS targets); cumulative pool recall {recall or '-'}")


__all__ = ["BLIND_PRECISION", "Embedding", "MiningInputs", "run_mining", "summary_line"]
