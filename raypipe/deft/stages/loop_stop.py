"""``loop_stop``: the deliverable — ``best_model.json`` and its inference spec — then the state is complete.

The files are written BEFORE the stage is committed, so a completed state can never exist without
them (the check insists they are on disk). It is committed once, under the loop's last iteration,
with TAO's reason (``metric_met`` or ``max_iterations``); after Phase 3 registers ``final_automl``
the files are rewritten without a commit (:func:`raypipe.deft.finalize.refresh_handoff`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, TypedDict

from raypipe.deft.stages._checks import existing_file, fail
from raypipe.deft.stages.base import ResourceClass, Stage

if TYPE_CHECKING:
    from raypipe.deft.context import StageContext


class LoopStopEvidence(TypedDict):
    final_artifacts: dict[str, str]  # {best_model_json, inference_spec}: absolute paths


class LoopStopStage(Stage):
    name = "loop_stop"
    resources = ResourceClass.DRIVER
    evidence = LoopStopEvidence

    def run(self, ctx: StageContext, state: Mapping[str, Any], label: str) -> dict[str, Any]:
        from raypipe.deft.finalize import write_final_artifacts

        final = write_final_artifacts(ctx.rd, state)
        return {"final_artifacts": {"best_model_json": str(final.best_model_json),
                                    "inference_spec": str(final.inference_spec)}}

    def check(self, state: Mapping[str, Any], label: str, evidence: dict[str, Any]) -> None:
        artifacts = evidence["final_artifacts"]
        if not isinstance(artifacts, Mapping):
            fail(label, self.name, "'final_artifacts' must be a mapping")
        for key in ("best_model_json", "inference_spec"):
            existing_file(label, self.name, f"final_artifacts.{key}", artifacts.get(key))
        evidence["final_artifacts"] = {k: str(v) for k, v in artifacts.items()}

    def summary(self, state: Mapping[str, Any], label: str, evidence: Mapping[str, Any]) -> str:
        from raypipe.deft.finalize import pick_final, stop_reason
        from raypipe.metrics import MetricContract

        contract = MetricContract.from_dict(state["metric_contract"])
        pick = pick_final(state)
        value = float(pick.entry["metric_result"]["value"])
        return (f"{stop_reason(state)}: best={pick.label} {contract.name}={value:.4g}{contract.unit} "
                f"(target {contract.operator} {contract.target:g}{contract.unit}, "
                f"{'passed' if pick.passed else 'not met'}), threshold={float(pick.entry['threshold']):.6g}")
