"""The sealed test split, scored once the run is over: the only evidence no phase could fit.

A workspace may carry ``test/testing_set.csv`` (the KPI CSV's schema and image root). Nothing
before this module reads it: sweeps select on the validation set, the DEFT loop mines and picks on
the KPI set, and the KPI set chooses the deliverable. So KPI gains are not evidence; gains on this
split are. After the run, every trajectory step (Phase 1's best, the baseline, each iteration,
Phase 3's best; the delivered model is one of them) is scored here:

- inference is a Ray task with the loop's training resources (:func:`raypipe._ray.submit_task`),
  one per distinct checkpoint, run concurrently where the cluster has room;
- the metric contract's evaluator turns each ``inference.csv`` into a metric result (an
  ``artifact`` evaluator reads a fixed file made for the KPI set, so the built-in FAR evaluator
  stands in for it here);
- outputs go to ``RD/test/<step>/``; ``test_result.json`` is written last, so a killed scoring
  redoes only the steps without one. A checkpoint already scored (by content: Phase 1's best and
  the pre-seeded baseline are the same bytes) is not scored twice: its step refers to the other.

    outcome = score_sealed_test(rd, test_csv=ws.test_csv, images_dir=ws.images_dir, contract=contract,
                                backend="builtin", backend_options={}, resources={"cpu": 1, "gpu": 0})
    outcome.by_step["iter1"]["test_far_pct"]
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import pandas as pd

from raypipe._io import atomic_write_json, read_json
from raypipe.metrics import MetricContract, MetricUndefinedError, auroc, far_at_recall, run_evaluator
from raypipe.rundir import BASELINE, RunDir, SealedTestDir
from raypipe.spec import load_spec, load_training_spec

if TYPE_CHECKING:
    from raypipe.config import Resources

log = logging.getLogger(__name__)

#: The numbers a scored step contributes to its trajectory row (and, for the delivered step, to
#: ``best_model.json``): FAR at the contract's recall target and AUROC, both on the test split.
ROW_KEYS = ("test_far_pct", "test_auroc")
#: Further numbers kept in the trajectory row: the step's KPI-chosen operating threshold applied
#: unchanged to the test split (what a deployed model would do; the FAR above re-derives its own).
THRESHOLD_KEYS = ("test_far_at_threshold_pct", "test_recall_at_threshold_pct")
SEALED_NOTE = "sealed: read only by the final scoring"
_BUILTIN_EVALUATOR = {"type": "builtin", "id": "far_at_recall"}


class ScoringError(RuntimeError):
    """A step could not be scored (inference or evaluator failed); nothing was recorded for it."""


@dataclass(frozen=True)
class ScoreStep:
    """One trajectory step to score: its checkpoint, the spec to infer with, its KPI threshold."""

    step: str
    checkpoint: Path
    spec: dict[str, Any]
    threshold: float | None


@dataclass
class SealedTestOutcome:
    """What the scoring found: ``by_step`` holds each scored step's ``test_result.json``."""

    test_csv: Path | None
    by_step: dict[str, dict[str, Any]] = field(default_factory=dict)
    scored_now: list[str] = field(default_factory=list)  # steps inferred in this call (not reused)

    @property
    def available(self) -> bool:
        return self.test_csv is not None


def scoring_plan(rd: RunDir) -> list[ScoreStep]:
    """The trajectory's steps with a checkpoint on disk, in trajectory order."""
    from raypipe.trajectory import build_trajectory

    state = read_json(rd.deft_state) if rd.deft_state.is_file() else {}
    entries = state.get("iterations", {})
    steps = []
    for row in build_trajectory(rd.root)["rows"]:
        label = row.get("label")
        if label is not None:
            entry = entries[label]
            ckpt, spec = Path(entry["best_ckpt_path"]), load_training_spec(entry["training_spec"])
        else:  # Phase 1's best: scored on validation, no KPI entry of its own
            found = _phase1_best(rd, entries.get(BASELINE))
            if found is None:
                continue
            ckpt, spec = found
        if ckpt.is_file():
            steps.append(ScoreStep(row["step"], ckpt, spec, row.get("threshold")))
    return steps


def _phase1_best(rd: RunDir, baseline: Mapping[str, Any] | None) -> tuple[Path, dict[str, Any]] | None:
    """Phase 1's winning checkpoint (its local copy when the sweep stored it remotely) and the
    trial's spec kept beside it (else the baseline's spec: the handoff merged the winner's HPs)."""
    sweep = rd.sweep("phase1")
    if not sweep.best_rec.is_file():
        return None
    best = read_json(sweep.best_rec)["best"]
    uri = str(best["checkpoint_uri"])
    ckpt = Path(uri) if "://" not in uri else sweep.checkpoints / str(best["rec_id"]) / uri.rsplit("/", 1)[-1]
    beside = ckpt.parent / "experiment.yaml"
    if beside.is_file():
        return ckpt, load_spec(beside)
    if baseline is not None and baseline.get("training_spec"):
        return ckpt, load_training_spec(baseline["training_spec"])
    return None


def score_sealed_test(rd: RunDir, *, test_csv: Path | None, images_dir: Path, contract: MetricContract, backend: str,
                      backend_options: dict[str, Any], resources: Resources | Mapping[str, float]
                      ) -> SealedTestOutcome:
    """Score every trajectory step on ``test_csv`` (None: the workspace has no test split; nothing
    is written). Steps already scored with the same checkpoint and test split are kept as they are.
    Raises :class:`ScoringError` naming the first step that could not be scored; what was scored
    before it stays on disk."""
    import ray

    from raypipe._ray import submit_task, unwrap_task_error
    from raypipe.deft.evaluate import InferJob, infer_job
    from raypipe.placement import Placement
    from raypipe.tracking import data_digest

    if test_csv is None:
        return SealedTestOutcome(None)
    test_csv = Path(test_csv).resolve()
    outcome = SealedTestOutcome(test_csv)
    csv_digest = data_digest(test_csv)
    plan = scoring_plan(rd)
    digests = {s.step: data_digest(s.checkpoint) for s in plan}
    by_digest: dict[str, str] = {}  # checkpoint digest → the step that scores it
    for s in plan:
        old = _read_result(rd.sealed_test(s.step))
        if old and old.get("checkpoint_digest") == digests[s.step] and old.get("test_csv_digest") == csv_digest \
                and not old.get("same_as"):
            outcome.by_step[s.step] = old
            by_digest.setdefault(digests[s.step], s.step)
    todo = [s for s in plan if s.step not in outcome.by_step and by_digest.setdefault(digests[s.step], s.step) == s.step]
    refs = {}
    for s in todo:
        out = rd.sealed_test(s.step)
        out.result.unlink(missing_ok=True)  # a stale result (other checkpoint) must not survive a failure
        refs[s.step] = submit_task(infer_job, InferJob(backend, dict(backend_options), s.spec, s.checkpoint, test_csv,
                                                       Path(images_dir), out.path),
                                   resources=resources, placement=Placement(str(rd.root), "test", f"test/{s.step}"))
    steps = {s.step: s for s in plan}
    for name, ref in refs.items():
        try:
            csv = Path(ray.get(ref))
        except Exception as exc:  # a boundary: the task's own error, named by step
            raise ScoringError(f"sealed test split: inference of {name} ({steps[name].checkpoint}) failed: "
                               f"{unwrap_task_error(exc)}") from exc
        result = _evaluate(steps[name], csv, rd.sealed_test(name), contract)
        outcome.by_step[name] = _write_result(rd.sealed_test(name), {
            **result, "step": name, "checkpoint": str(steps[name].checkpoint),
            "checkpoint_digest": digests[name], "test_csv": str(test_csv), "test_csv_digest": csv_digest,
            "same_as": None})
        outcome.scored_now.append(name)
    for s in plan:  # the steps whose checkpoint another step scored
        source = by_digest[digests[s.step]]
        if s.step not in outcome.by_step and source in outcome.by_step:
            same = {k: v for k, v in outcome.by_step[source].items() if k not in THRESHOLD_KEYS}
            # The threshold numbers depend on the step's own KPI threshold: recomputed from the shared CSV.
            same.update(_at_threshold(*_labels_scores(rd.sealed_test(source).inference_csv), s.threshold))
            outcome.by_step[s.step] = _write_result(rd.sealed_test(s.step), {**same, "step": s.step,
                                                                              "same_as": source})
    return outcome


def _evaluate(step: ScoreStep, csv: Path, out: SealedTestDir, contract: MetricContract) -> dict[str, Any]:
    """The contract's evaluator on one inference CSV, plus AUROC and the threshold numbers."""
    from raypipe.metrics import ContractError, EvaluatorInputError

    if contract.evaluator.get("type") == "artifact":
        contract = dataclasses.replace(contract, evaluator={**_BUILTIN_EVALUATOR, "parameters": {
            "recall_target_pct": contract.recall_target_pct}})
    y, s = _labels_scores(csv)
    base: dict[str, Any] = {"rows": int(len(y)), "defect_rows": int(y.sum()), "evaluator": contract.evaluator}
    try:
        result = run_evaluator(contract, csv, out.metric_result, iter_label=f"test/{step.step}")
    except MetricUndefinedError as exc:  # e.g. a split without defect rows: nothing to retry
        return {**base, "metric_result": None, "test_far_pct": None, "test_auroc": None,
                "note": f"metric undefined on the test split: {exc}", **dict.fromkeys(THRESHOLD_KEYS)}
    except (ContractError, EvaluatorInputError) as exc:
        raise ScoringError(f"sealed test split: the evaluator failed on {step.step}: {exc}") from exc
    far = result["value"] if result["name"] == "far_pct" else far_at_recall(
        y, s, contract.recall_target_pct / 100.0).far * 100.0
    return {**base, "metric_result": result, "test_far_pct": float(far), "test_auroc": _auroc(y, s),
            **_at_threshold(y, s, step.threshold)}


def _labels_scores(csv: Path) -> tuple[np.ndarray, np.ndarray]:
    df = pd.read_csv(csv, dtype={"label": str}, keep_default_na=False)
    y = (df["label"].astype(str).str.strip().str.upper() != "PASS").to_numpy()
    return y, df["siamese_score"].to_numpy(dtype=np.float64)


def _auroc(y: np.ndarray, s: np.ndarray) -> float | None:
    value = auroc(y, s) if 0 < y.sum() < len(y) else math.nan
    return float(value) if math.isfinite(value) else None


def _at_threshold(y: np.ndarray, s: np.ndarray, threshold: float | None) -> dict[str, float | None]:
    """FAR and recall (%) when the step's KPI threshold is applied as is (defect iff score > threshold)."""
    if threshold is None or not math.isfinite(threshold):
        return dict.fromkeys(THRESHOLD_KEYS)
    pred = s > threshold
    passes, defects = int((~y).sum()), int(y.sum())
    return {"test_far_at_threshold_pct": 100.0 * float((pred & ~y).sum()) / passes if passes else None,
            "test_recall_at_threshold_pct": 100.0 * float((pred & y).sum()) / defects if defects else None}


def _read_result(out: SealedTestDir) -> dict[str, Any] | None:
    try:
        doc = read_json(out.result)
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _write_result(out: SealedTestDir, doc: dict[str, Any]) -> dict[str, Any]:
    atomic_write_json(out.result, doc)
    return doc


def read_sealed_results(rd: RunDir) -> dict[str, dict[str, Any]]:
    """Each scored step's ``test_result.json`` by step (empty when nothing was scored)."""
    if not rd.test.is_dir():
        return {}
    found = {}
    for d in sorted(rd.test.iterdir()):
        doc = _read_result(SealedTestDir(d)) if d.is_dir() else None
        if doc is not None:
            found[d.name] = doc
    return found


def unscored_steps(rd: RunDir) -> list[str]:
    """The trajectory steps a complete run still owes the sealed test split (empty when the
    workspace has none): what ``--resume`` of a complete run still has to do."""
    if rd.trajectory.is_file() and (read_json(rd.trajectory).get("sealed_test") or {}).get("status") == "absent":
        return []
    done = read_sealed_results(rd)
    return [s.step for s in scoring_plan(rd) if s.step not in done]


def record_on_best_model(rd: RunDir, trajectory: Mapping[str, Any]) -> dict[str, Any] | None:
    """Copy the delivered row's ``test_far_pct`` / ``test_auroc`` into ``best_model.json`` (dropped
    when the row has none, so a re-finalized deliverable never keeps another model's numbers)."""
    if not rd.best_model.is_file():
        return None
    best = read_json(rd.best_model)
    row: Mapping[str, Any] = next((r for r in trajectory.get("rows", []) if r.get("delivered")), {})
    updated = {k: v for k, v in best.items() if k not in ROW_KEYS}
    updated.update({k: row[k] for k in ROW_KEYS if row.get(k) is not None})
    if updated != best:
        atomic_write_json(rd.best_model, updated)
    return updated


def describe_test_split(csv: Path | None) -> str:
    """One line for pre-flight and summaries: rows, label counts and the seal, or its absence."""
    if csv is None or not Path(csv).is_file():
        return "no sealed test split (test/testing_set.csv)"
    from raypipe.workspace import read_rows

    counts = read_rows(csv)["label"].map(lambda s: s.strip()).value_counts()
    labels = ", ".join(f"{k}={v}" for k, v in counts.items())
    return f"sealed test split: {int(counts.sum())} rows ({labels}); {SEALED_NOTE}"


__all__ = ["ROW_KEYS", "SEALED_NOTE", "THRESHOLD_KEYS", "ScoreStep", "ScoringError", "SealedTestOutcome",
           "describe_test_split", "read_sealed_results", "record_on_best_model", "score_sealed_test", "scoring_plan",
           "unscored_steps"]
