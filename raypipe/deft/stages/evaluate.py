"""``evaluate``: KPI inference with the best-val and the latest checkpoint, the better one committed.

The metric result is re-validated against the contract and against the ``metric_result.json``
on disk (``passed`` is recomputed, never trusted), then stored as TAO stores it: the evaluator's
output as written (threshold, diagnostics and all) plus ``evidence_path`` and ``passed``. Phase
3's winner is checked with this stage's evidence too (label ``final_automl``, scored by the same
code, plus the CSV it trained on), but registered without an event.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, TypedDict

from raypipe import tao_interop as ti
from raypipe.deft.stages._checks import existing_file, fail, finite, json_file, training_spec, under
from raypipe.deft.stages.base import FilePath, ResourceClass, Stage
from raypipe.rundir import FINAL_AUTOML, RunDir

if TYPE_CHECKING:
    from raypipe.deft.context import StageContext


class _EvaluateRequired(TypedDict):
    best_ckpt_path: FilePath
    metric_result: dict[str, Any]  # {name, value, unit, passed, constraints, evidence_path}
    threshold: float
    far_pct: float
    training_spec: str | dict[str, Any]


class EvaluateEvidence(_EvaluateRequired, total=False):
    inference_csv: FilePath  # required for loop iterations (checked below)
    source: str  # automl_phase3 for final_automl
    best_ckpt_kind: str  # best_val | latest
    candidates: dict[str, float]  # kind → metric value
    parent_ckpt_path: str
    combined_training_csv: FilePath  # final_automl: the CSV Phase 3 trained on (TAO's report counts its rows)


class EvaluateStage(Stage):
    name = "evaluate"
    resources = ResourceClass.TRAIN
    evidence = EvaluateEvidence

    def run(self, ctx: StageContext, state: Mapping[str, Any], label: str) -> dict[str, Any]:
        from raypipe.deft.evaluate import run_evaluate
        from raypipe.spec import load_training_spec

        entry = state["iterations"][label]
        inputs = ctx.inputs
        latest = entry.get("latest_ckpt_path")
        return run_evaluate(
            label=label, out=ctx.rd.iteration(label),
            ckpts={"best_val": Path(entry["best_ckpt_path"]), "latest": Path(latest) if latest else None},
            spec=load_training_spec(entry["training_spec"]), training_spec=entry["training_spec"],
            contract=ctx.contract, kpi_csv=inputs.kpi_csv, images_dir=inputs.images_dir, backend=inputs.backend,
            backend_options=inputs.backend_options, resources=ctx.resources(self.resources),
            placement=ctx.placement(f"{label}/inference"))

    def check(self, state: Mapping[str, Any], label: str, evidence: dict[str, Any]) -> None:
        from raypipe.metrics import ContractError, MetricContract, validate_result

        ckpt = Path(evidence["best_ckpt_path"])
        if label != FINAL_AUTOML:
            train_dir = RunDir(state["results_dir"]).iteration(label).train.path
            if not under(ckpt, train_dir):
                fail(label, self.name, f"checkpoint {ckpt} does not lie under {train_dir}")
            if "inference_csv" not in evidence:
                fail(label, self.name, "missing evidence field(s) ['inference_csv']")
        elif "combined_training_csv" not in evidence:
            fail(label, self.name, "missing evidence field(s) ['combined_training_csv'] (the CSV Phase 3 trained on)")
        training_spec(label, self.name, evidence["training_spec"])
        contract = MetricContract.from_dict(state["metric_contract"])
        mr = evidence["metric_result"]
        if not isinstance(mr, Mapping):
            fail(label, self.name, "'metric_result' must be a mapping")
        try:
            checked = validate_result(contract, mr)
        except ContractError as exc:
            fail(label, self.name, f"metric result rejected by the contract: {exc}")
        evidence_path = existing_file(label, self.name, "metric_result.evidence_path", mr.get("evidence_path"))
        written = json_file(label, self.name, evidence_path)
        try:
            on_disk = validate_result(contract, written)
        except ContractError as exc:
            fail(label, self.name, f"{evidence_path} is not a valid metric result: {exc}")
        if not math.isclose(float(on_disk["value"]), float(checked["value"]), rel_tol=1e-9, abs_tol=1e-12):
            fail(label, self.name, f"metric_result value {checked['value']} differs from {evidence_path} "
                                   f"({on_disk['value']})")
        for key in ("threshold", "far_pct"):
            if not finite(evidence[key]):
                fail(label, self.name, f"'{key}' must be a finite number, got {evidence[key]!r}")
        evidence["metric_result"] = ti.metric_result_record(written, evidence_path=evidence_path,
                                                            passed=on_disk["passed"])

    def summary(self, state: Mapping[str, Any], label: str, evidence: Mapping[str, Any]) -> str:
        if label == FINAL_AUTOML:
            value = (evidence.get("metric_result") or {}).get("value")
            return f"Phase 3 AutoML winner evaluated on the KPI set: {value}"
        mr = evidence["metric_result"]
        cands = ", ".join(f"{k} {v:.2f}" for k, v in (evidence.get("candidates") or {}).items())
        recall = (mr.get("constraints") or {}).get("recall_pct", float("nan"))
        return (f"KPI {mr['name']}={mr['value']:.2f}{mr['unit']} ({evidence.get('best_ckpt_kind', 'best_val')}; "
                f"{cands}) threshold={evidence['threshold']:.4g} recall={recall:.1f}%")
