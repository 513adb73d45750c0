"""``rca``: the weakest KPI samples of an evaluated iteration, committed under that iteration.

Its gaps feed the next iteration's routing (RCA of ``iter<N>`` → ``iter<N+1>``); there is no RCA
after the final evaluate. The algorithm lives in :mod:`raypipe.deft.rca`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, TypedDict

from raypipe.deft.stages._checks import fail, finite, readable_parquet
from raypipe.deft.stages.base import FilePath, ResourceClass, Stage

if TYPE_CHECKING:
    from raypipe.deft.context import StageContext


class _RcaRequired(TypedDict):
    rca_gaps_parquet: FilePath
    rca_threshold: float
    rca_target_defects: list[str]  # defect labels by FN count (desc), then FP rate (desc)


class RcaEvidence(_RcaRequired, total=False):
    rca_dir: str


class RcaStage(Stage):
    name = "rca"
    resources = ResourceClass.CPU_STAGE
    evidence = RcaEvidence

    def run(self, ctx: StageContext, state: Mapping[str, Any], label: str) -> dict[str, Any]:
        from raypipe.deft.rca import run_rca

        entry = state["iterations"][label]
        rca = ctx.rd.iteration(label)
        out = ctx.fresh_attempt_dir(rca.rca_root)
        p2 = ctx.cfg.phase2
        return ctx.run_task(f"{label}/rca", self.resources, run_rca, Path(entry["inference_csv"]), out,
                            layout=ctx.inputs.layout, images_dir=ctx.inputs.images_dir,
                            min_recall=p2.rca.min_recall, top_k_per_label=p2.rca.top_k_per_label)

    def check(self, state: Mapping[str, Any], label: str, evidence: dict[str, Any]) -> None:
        readable_parquet(label, self.name, "rca_gaps_parquet", Path(evidence["rca_gaps_parquet"]))
        if not finite(evidence["rca_threshold"]):
            fail(label, self.name, f"'rca_threshold' must be a finite number, got {evidence['rca_threshold']!r}")
        targets = evidence["rca_target_defects"]
        if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
            fail(label, self.name, f"'rca_target_defects' must be a list of labels, got {targets!r}")

    def summary(self, state: Mapping[str, Any], label: str, evidence: Mapping[str, Any]) -> str:
        return (f"RCA at threshold {evidence['rca_threshold']:.4g}: targets "
                f"{', '.join(evidence['rca_target_defects']) or 'none'}")
