"""``routing``: the previous iteration's RCA gaps split into the mining and the SDG subsets.

Both parquet files are always written (possibly empty); both empty is a hard stop. The rules live
in :mod:`raypipe.deft.routing`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, TypedDict

from raypipe.deft.stages._checks import parquet_rows, readable_parquet
from raypipe.deft.stages.base import FilePath, ResourceClass, Stage
from raypipe.rundir import iteration_label, iteration_number

if TYPE_CHECKING:
    from raypipe.deft.context import StageContext


class _RoutingRequired(TypedDict):
    routing_mining_parquet: FilePath
    routing_anomalygen_parquet: FilePath


class RoutingEvidence(_RoutingRequired, total=False):
    routing_summary: FilePath


class RoutingStage(Stage):
    name = "routing"
    resources = ResourceClass.CPU_STAGE
    evidence = RoutingEvidence

    def run(self, ctx: StageContext, state: Mapping[str, Any], label: str) -> dict[str, Any]:
        from raypipe.deft.routing import run_routing
        from raypipe.deft.stages.anomalygen import sdg_backend

        previous = iteration_label(iteration_number(label) - 1)
        gaps = state["iterations"][previous]["rca_gaps_parquet"]
        out = ctx.fresh_attempt_dir(ctx.rd.iteration(label).routing_root)
        sdg = ctx.cfg.phase2.sdg
        return ctx.run_task(f"{label}/routing", self.resources, run_routing, Path(gaps), ctx.inputs.pool_csv, out,
                            supported_labels=sdg_backend(sdg).supported_labels(),
                            synthesise_below_pool_rows=sdg.synthesise_below_pool_rows)

    def check(self, state: Mapping[str, Any], label: str, evidence: dict[str, Any]) -> None:
        for key in ("routing_mining_parquet", "routing_anomalygen_parquet"):
            readable_parquet(label, self.name, key, Path(evidence[key]))

    def summary(self, state: Mapping[str, Any], label: str, evidence: Mapping[str, Any]) -> str:
        return (f"routed {parquet_rows(Path(evidence['routing_mining_parquet']))} gap rows to mining, "
                f"{parquet_rows(Path(evidence['routing_anomalygen_parquet']))} to SDG")
