"""``data_mining``: pool rows that look like the routed weak samples (k-NN over embeddings).

The search runs in the driver (FAISS over a few hundred targets is light); the embeddings are Ray
tasks with the training resources. The algorithm lives in :mod:`raypipe.deft.mining`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Mapping, TypedDict

from raypipe.deft.stages._checks import fail, readable_parquet
from raypipe.deft.stages.base import FilePath, ResourceClass, Stage
from raypipe.rundir import iteration_number

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from raypipe.deft.context import StageContext
    from raypipe.deft.mining import EmbedFn


class _DataMiningRequired(TypedDict):
    mining_mined_parquet: FilePath
    mining_candidate_parquet: FilePath
    mining_summary: FilePath  # knn_summary.csv
    mining_history_summary: FilePath
    mining_target_embeddings: FilePath
    mining_source_embeddings: FilePath
    mining_mined_count: int  # rows of mining_mined_parquet


class DataMiningEvidence(_DataMiningRequired, total=False):
    mining_pool_csv: FilePath  # SDG rows + novel mined rows: what the merge appends


class _DataMiningSkippedRequired(TypedDict):
    data_mining_skipped: Literal[True]  # no gap was routed to mining


class DataMiningSkipped(_DataMiningSkippedRequired, total=False):
    mining_pool_csv: FilePath  # the SDG rows alone


class DataMiningStage(Stage):
    name = "data_mining"
    resources = ResourceClass.DRIVER
    evidence = DataMiningEvidence
    skipped_evidence = DataMiningSkipped

    def run(self, ctx: StageContext, state: Mapping[str, Any], label: str) -> dict[str, Any]:
        from raypipe.deft.mining import MiningInputs, run_mining

        entry = state["iterations"][label]
        it = ctx.rd.iteration(label)
        sdg_rows = None if entry.get("anomalygen_skipped") else \
            Path(entry.get("anomalygen_sdg_rows_csv") or it.mining.sdg_rows_raw)
        ctx.placement(f"{label}/data_mining").record()
        inputs = ctx.inputs
        mf = ctx.cfg.phase2.mining_filter
        return run_mining(MiningInputs(
            mining_gaps=Path(entry["routing_mining_parquet"]), pool_csv=inputs.pool_csv,
            pool_images_dir=inputs.pool_images, out=it.mining, workspace_root=inputs.root,
            top_k_per_target=mf.top_k_per_target, min_similarity=mf.min_similarity,
            history_path=ctx.rd.mining_history, iteration=iteration_number(label), validation_csv=inputs.val_csv,
            validation_images_dir=inputs.images_dir, sdg_rows_csv=sdg_rows), embed=_embedder(ctx, state, label))

    def check(self, state: Mapping[str, Any], label: str, evidence: dict[str, Any]) -> None:
        count = evidence["mining_mined_count"]
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            fail(label, self.name, f"'mining_mined_count' must be a non-negative int, got {count!r}")
        rows = readable_parquet(label, self.name, "mining_mined_parquet", Path(evidence["mining_mined_parquet"]))
        if rows != count:
            fail(label, self.name, f"mining_mined_count={count} but {evidence['mining_mined_parquet']} has {rows} rows")
        for key in ("mining_candidate_parquet", "mining_target_embeddings", "mining_source_embeddings"):
            readable_parquet(label, self.name, key, Path(evidence[key]))

    def summary(self, state: Mapping[str, Any], label: str, evidence: Mapping[str, Any]) -> str:
        if evidence.get("data_mining_skipped"):
            return "mining skipped: no gap routed to mining"
        return f"mined {evidence['mining_mined_count']} novel pool rows"


def _embedder(ctx: StageContext, state: Mapping[str, Any], label: str) -> EmbedFn:
    """Embeddings as Ray tasks with the training resources: the best model so far, or pixels."""
    from raypipe.deft._embed import EmbedJob, run_embed
    from raypipe.spec import load_training_spec

    kind = ctx.cfg.phase2.mining_filter.embedder
    best = ctx.best_so_far(state)
    inputs = ctx.inputs
    job = EmbedJob(kind, inputs.backend, inputs.backend_options, load_training_spec(best["training_spec"]),
                   Path(best["best_ckpt_path"]) if kind == "model" else None, inputs.layout)

    def embed(rows: pd.DataFrame, images_dir: Path) -> np.ndarray:
        from raypipe._ray import run_task

        placement = replace(ctx.placement(f"{label}/embed"), extra={"rows": len(rows)})
        return run_task(run_embed, job, rows, Path(images_dir), resources=ctx.resources(ResourceClass.TRAIN),
                        placement=placement)

    return embed
