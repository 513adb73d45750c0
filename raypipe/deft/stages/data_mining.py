"""``data_mining``: pool rows that look like the routed weak samples (k-NN over embeddings).

The embeddings are Ray tasks with the training resources (``phase2.mining_filter.workers`` of them
in parallel over chunks of the pool, cached by image content); the search runs in the driver
(FAISS over a few hundred targets is light). The algorithm lives in :mod:`raypipe.deft.mining`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Mapping, TypedDict

from raypipe.deft.stages._checks import fail, readable_parquet
from raypipe.deft.stages.base import FilePath, ResourceClass, Stage
from raypipe.rundir import iteration_number

if TYPE_CHECKING:
    from raypipe.deft.context import StageContext
    from raypipe.deft.mining import Embedding


class _DataMiningRequired(TypedDict):
    mining_mined_parquet: FilePath
    mining_candidate_parquet: FilePath
    mining_summary: FilePath  # knn_summary.csv
    mining_history_summary: FilePath
    mining_target_embeddings: FilePath
    mining_source_embeddings: FilePath
    mining_mined_count: int  # rows of mining_mined_parquet
    mining_target_log: FilePath  # TAO's three step logs and the run-level ledger
    mining_source_log: FilePath
    mining_knn_log: FilePath
    mining_history: FilePath


class DataMiningEvidence(_DataMiningRequired, total=False):
    mining_pool_csv: FilePath  # SDG rows + novel mined rows: what the merge appends
    mining_stats_csv: FilePath  # per label: targets, mined, same-label precision, pool recall


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
        from raypipe import tao_interop as ti
        from raypipe.deft._selection import SelectionConfig
        from raypipe.deft.mining import MiningInputs, run_mining

        entry = state["iterations"][label]
        it = ctx.rd.iteration(label)
        sdg_rows = None if entry.get("anomalygen_skipped") else \
            Path(entry.get("anomalygen_sdg_rows_csv") or it.mining.sdg_rows_raw)
        ctx.placement(f"{label}/data_mining").record()
        inputs = ctx.inputs
        mf = ctx.cfg.phase2.mining_filter
        resolved = state.get("config", {}).get("resolved_mining_pool_csv") or ctx.rd.root / ti.RESOLVED_POOL_CSV
        return run_mining(MiningInputs(
            mining_gaps=Path(entry["routing_mining_parquet"]), pool_csv=inputs.pool_csv,
            pool_images_dir=inputs.pool_images, out=it.mining, workspace_root=inputs.root,
            selection=SelectionConfig(mf.top_k_per_target, mf.min_similarity, mf.label_mode, history_aware=True),
            history_path=ctx.rd.mining_history, resolved_pool_csv=Path(resolved), iteration=iteration_number(label),
            validation_csv=inputs.val_csv, validation_images_dir=inputs.images_dir, sdg_rows_csv=sdg_rows),
            embedding=embedding_for(ctx, state, label))

    def check(self, state: Mapping[str, Any], label: str, evidence: dict[str, Any]) -> None:
        count = evidence["mining_mined_count"]
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            fail(label, self.name, f"'mining_mined_count' must be a non-negative int, got {count!r}")
        rows = readable_parquet(label, self.name, "mining_mined_parquet", Path(evidence["mining_mined_parquet"]))
        if rows != count:
            fail(label, self.name, f"mining_mined_count={count} but {evidence['mining_mined_parquet']} has {rows} rows")
        for key in ("mining_candidate_parquet", "mining_target_embeddings", "mining_source_embeddings"):
            readable_parquet(label, self.name, key, Path(evidence[key]))
        from raypipe import tao_interop as ti

        for key in ti.MINING_LOG_FILES:  # TAO refuses a placeholder: a step log states facts, then its status
            lines = Path(evidence[key]).read_text(errors="replace").strip().splitlines()
            if len(lines) < 3 or lines[-1] != ti.STATUS_PASS:
                fail(label, self.name, f"'{key}' {evidence[key]} is not a step log (facts, then '{ti.STATUS_PASS}')")

    def summary(self, state: Mapping[str, Any], label: str, evidence: Mapping[str, Any]) -> str:
        from raypipe.deft.mining import summary_line

        if evidence.get("data_mining_skipped"):
            return "mining skipped: no gap routed to mining"
        if evidence.get("mining_stats_csv"):
            return summary_line(evidence["mining_stats_csv"], evidence["mining_mined_count"])
        return f"mined {evidence['mining_mined_count']} novel pool rows"


def embedding_for(ctx: StageContext, state: Mapping[str, Any], label: str) -> Embedding:
    """The configured embedder, its content cache and its Ray tasks (``phase2.resources.train`` each).

    ``model`` embeds with the best checkpoint so far (its vectors, and so its cache entries, change
    with every new best). The cache lives in the user's cache dir by default, never in the
    workspace: a run writes only under its run dir.
    """
    from raypipe.deft.errors import HardStop
    from raypipe.deft.mining import Embedding
    from raypipe.embedding import EmbeddingCache, default_cache_dir, make_embedder

    mf = ctx.cfg.phase2.mining_filter
    inputs = ctx.inputs
    options: dict[str, Any] = {}
    if mf.embedder == "model":
        from raypipe.spec import load_training_spec

        best = ctx.best_so_far(state)
        options = {"backend": inputs.backend, "backend_options": inputs.backend_options,
                   "spec": load_training_spec(best["training_spec"]), "ckpt": Path(best["best_ckpt_path"])}
    embedder = make_embedder(mf.embedder, inputs.layout, **options)
    cache = None
    if mf.cache.enabled:
        cache_dir = Path(mf.cache.dir).expanduser().resolve() if mf.cache.dir else default_cache_dir()
        root, results = Path(inputs.root).resolve(), ctx.rd.root.resolve().parent
        if cache_dir.is_relative_to(root) and not cache_dir.is_relative_to(results):
            raise HardStop("data_mining", f"phase2.mining_filter.cache.dir {cache_dir} lies inside the workspace "
                                          f"{root}, which a run never writes", "set it outside the workspace, or "
                                                                                "null for the user cache dir")
        cache = EmbeddingCache(cache_dir, embedder)
    return Embedding(embedder, cache, workers=mf.workers, resources=ctx.resources(ResourceClass.TRAIN).as_dict(),
                     placement=ctx.placement(f"{label}/embed"))
