"""Finalize the loop: ``best_model.json``, ``best_model_inference_spec.yaml``, then ``loop_stop``.

The handoff files are written BEFORE ``loop_stop`` is committed, so a completed state can never
exist without them (the loop_stop evidence check insists they are on disk). Finalize is re-run
after Phase 3 registers ``final_automl``; it always re-picks the best over every complete entry,
so the deliverable is the overall best.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from raypipe._io import atomic_write_json, atomic_write_text
from raypipe.deft.state import commit, load_state, ordered_labels
from raypipe.metrics import BestPick, MetricContract, pick_best
from raypipe.rundir import FINAL_AUTOML, RunDir
from raypipe.spec import dump_spec, get_dotted, load_training_spec
from raypipe.trajectory import verdict_of

_TRAINING_SETS = ("train_dataset", "validation_dataset", "test_dataset")


@dataclass(frozen=True)
class FinalArtifacts:
    best_label: str
    best_model_json: Path
    inference_spec: Path
    passed: bool  # the best entry meets the contract (target and constraints)


def inference_spec(training_spec: Mapping[str, Any], checkpoint: str | Path, threshold: float) -> dict[str, Any]:
    """A runnable inference spec from the training spec: same architecture/lights, the picked threshold.

    The training datasets are dropped (they are container paths of the training run, meaningless
    where the model is deployed) and ``infer_dataset`` is left empty for the user to fill.
    """
    spec = copy.deepcopy(dict(training_spec))
    out: dict[str, Any] = {}
    if "task" in spec:
        out["task"] = spec["task"]
    model = spec.get("model") or {}
    model.setdefault("classify", {})["eval_margin"] = float(threshold)
    out["model"] = model
    dataset = spec.get("dataset") or {}
    classify = dataset.setdefault("classify", {})
    for key in _TRAINING_SETS:
        classify.pop(key, None)
    classify["infer_dataset"] = {}
    classify["batch_size"] = 1
    classify.setdefault("augmentation_config", {})["augment"] = False
    out["dataset"] = dataset
    out["inference"] = {"checkpoint": str(checkpoint)}
    return out


def best_model_record(state: Mapping[str, Any], label: str, entry: Mapping[str, Any],
                      spec: Mapping[str, Any]) -> dict[str, Any]:
    """The ``best_model.json`` object: the one file a user needs to deploy."""
    ts = entry["training_spec"]
    return {
        "checkpoint": entry["best_ckpt_path"],
        "threshold": float(entry["threshold"]),
        "metric_contract": state["metric_contract"],
        "metric_result": entry["metric_result"],
        "iteration": label,
        # backbone: the weights file the architecture was initialised from (None when trained from
        # scratch); backbone_type: the architecture name as TAO spells it.
        "backbone": get_dotted(dict(spec), "model.backbone.pretrained_backbone_path", None),
        "backbone_type": get_dotted(dict(spec), "model.backbone.type", None),
        "images_dir": state.get("config", {}).get("images_dir"),
        "training_spec": str(ts) if not isinstance(ts, Mapping) else ts,
        "far_pct": float(entry["far_pct"]),
        # kpi_met | kpi_not_met: the run's headline, a plain string (sealed test numbers are added
        # beside it by the final scoring, raypipe.scoring).
        "verdict": verdict_of(entry["metric_result"]),
    }


def pick_final(state: Mapping[str, Any]) -> BestPick:
    """The best complete entry of the state (loop iterations and Phase 3's ``final_automl``)."""
    contract = MetricContract.from_dict(state["metric_contract"])
    pick = pick_best(contract, [(lb, state["iterations"][lb]) for lb in ordered_labels(state)])
    if pick is None:
        raise ValueError(f"{state.get('results_dir')}: no complete iteration with a metric result to finalize")
    return pick


def stop_reason(state: Mapping[str, Any]) -> str:
    """``phase3`` once Phase 3 registered its winner; else ``metric_met`` | ``max_iterations``."""
    if FINAL_AUTOML in state["iterations"]:
        return "phase3"
    last = state["iterations"][ordered_labels(state)[-1]]
    return "metric_met" if (last.get("metric_result") or {}).get("passed") else "max_iterations"


def write_final_artifacts(rd: RunDir, state: Mapping[str, Any]) -> FinalArtifacts:
    """Pick the best complete entry and write ``best_model.json`` and its inference spec (no commit)."""
    if state.get("status") == "failed":
        raise ValueError(f"{rd.deft_state}: the loop hard-stopped; nothing to finalize (fix and --resume first)")
    pick = pick_final(state)
    spec = load_training_spec(pick.entry["training_spec"])
    record = best_model_record(state, pick.label, pick.entry, spec)
    bm_path = atomic_write_json(rd.best_model, record)
    header = (f"# raypipe: inference spec of {pick.label} ({pick.entry['best_ckpt_path']}).\n"
              f"# Fill dataset.classify.infer_dataset {{csv_path, images_dir}} before running.\n")
    spec_path = atomic_write_text(rd.inference_spec,
                                  header + dump_spec(inference_spec(spec, record["checkpoint"], record["threshold"])))
    return FinalArtifacts(pick.label, bm_path.resolve(), spec_path.resolve(), pick.passed)


def finalize(run_dir: str | Path, *, label: str | None = None) -> FinalArtifacts:
    """Write the deliverable and commit ``loop_stop`` (filed under ``label``, default: the last entry).

    The loop's driver runs the ``loop_stop`` stage itself; this is for Phase 3, after it registered
    ``final_automl``, and for callers outside the driver.
    """
    from raypipe.deft.stages import REGISTRY

    t0 = time.monotonic()
    rd = RunDir(run_dir)
    state = load_state(rd.deft_state)
    stage = REGISTRY.stop
    final = write_final_artifacts(rd, state)
    evidence = {"final_artifacts": {"best_model_json": str(final.best_model_json),
                                    "inference_spec": str(final.inference_spec)}}
    commit(rd.deft_state, label or ordered_labels(state)[-1], stage.name, evidence,
           duration_s=max(time.monotonic() - t0, 1e-3), summary=stage.summary(state, label or "", evidence))
    return final
