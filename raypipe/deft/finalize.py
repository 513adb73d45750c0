"""Finalize the loop (SPEC §6.8): ``best_model.json``, ``best_model_inference_spec.yaml``, ``loop_stop``.

The handoff files are written BEFORE ``loop_stop`` is committed, so a completed state can never
exist without them (the loop_stop evidence check insists they are on disk). Finalize is re-run
after Phase 3 registers ``final_automl`` (SPEC §7.2); it always re-picks the best over every
complete entry, so the deliverable is the overall best.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from raypipe._io import atomic_write_json, atomic_write_text
from raypipe.deft.state import commit, load_state, ordered_labels, state_path_of
from raypipe.metrics import MetricContract, pick_best
from raypipe.spec import dump_spec, get_dotted, load_spec

BEST_MODEL_JSON = "best_model.json"
INFERENCE_SPEC = "best_model_inference_spec.yaml"
_TRAINING_SETS = ("train_dataset", "validation_dataset", "test_dataset")


@dataclass(frozen=True)
class FinalArtifacts:
    best_label: str
    best_model_json: Path
    inference_spec: Path
    passed: bool  # the best entry meets the contract (target and constraints)


def load_training_spec(training_spec: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """``training_spec`` in the state is a spec path (normally ``RD/<label>/train/experiment.yaml``) or a dict."""
    if isinstance(training_spec, Mapping):
        return copy.deepcopy(dict(training_spec))
    return load_spec(training_spec)


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
    """The ``best_model.json`` object: the one file a user needs to deploy (SPEC §8.2)."""
    ts = entry["training_spec"]
    return {
        "checkpoint": entry["best_ckpt_path"],
        "threshold": float(entry["threshold"]),
        "metric_contract": state["metric_contract"],
        "metric_result": entry["metric_result"],
        "iteration": label,
        # backbone: the weights file the architecture was initialised from (None when trained from
        # scratch); backbone_type: the architecture name as TAO spells it.
        "backbone": get_dotted(spec, "model.backbone.pretrained_backbone_path", None),
        "backbone_type": get_dotted(spec, "model.backbone.type", None),
        "images_dir": state.get("config", {}).get("images_dir"),
        "training_spec": str(ts) if not isinstance(ts, Mapping) else ts,
        "far_pct": float(entry["far_pct"]),
    }


def finalize(run_dir: str | Path, *, stop_reason: str | None = None, label: str | None = None,
             render: bool = True) -> FinalArtifacts:
    """Pick the best complete entry, write the handoff files, commit ``loop_stop``.

    ``stop_reason``: ``metric_met`` | ``max_iterations`` | ``phase3`` (re-run after final_automl);
    None derives it from the state. ``label``: the iteration the event is filed under (default: the
    last one).
    """
    t0 = time.monotonic()
    run_dir = Path(run_dir)
    state_path = state_path_of(run_dir)
    state = load_state(state_path)
    if state.get("status") == "failed":
        raise ValueError(f"{state_path}: the loop hard-stopped; nothing to finalize (fix and --resume first)")
    contract = MetricContract.from_dict(state["metric_contract"])
    labels = ordered_labels(state)
    pick = pick_best(contract, [(lb, state["iterations"][lb]) for lb in labels])
    if pick is None:
        raise ValueError(f"{state_path}: no complete iteration with a metric result to finalize")
    if stop_reason is None:
        last = state["iterations"][labels[-1]]
        stop_reason = ("phase3" if "final_automl" in state["iterations"] else
                       "metric_met" if (last.get("metric_result") or {}).get("passed") else "max_iterations")
    spec = load_training_spec(pick.entry["training_spec"])
    record = best_model_record(state, pick.label, pick.entry, spec)
    bm_path = atomic_write_json(run_dir / BEST_MODEL_JSON, record)
    header = (f"# raypipe: inference spec of {pick.label} ({pick.entry['best_ckpt_path']}).\n"
              f"# Fill dataset.classify.infer_dataset {{csv_path, images_dir}} before running.\n")
    spec_path = atomic_write_text(run_dir / INFERENCE_SPEC,
                                  header + dump_spec(inference_spec(spec, record["checkpoint"], record["threshold"])))
    value = float(pick.entry["metric_result"]["value"])
    summary = (f"{stop_reason}: best={pick.label} {contract.name}={value:.4g}{contract.unit} "
               f"(target {contract.operator} {contract.target:g}{contract.unit}, "
               f"{'passed' if pick.passed else 'not met'}), threshold={record['threshold']:.6g}")
    commit(state_path, label or labels[-1], "loop_stop",
           {"final_artifacts": {"best_model_json": str(bm_path.resolve()), "inference_spec": str(spec_path.resolve())}},
           duration_s=max(time.monotonic() - t0, 1e-3), summary=summary, render=render)
    return FinalArtifacts(pick.label, bm_path.resolve(), spec_path.resolve(), pick.passed)
