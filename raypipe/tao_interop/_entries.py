"""Iteration entries TAO reads beyond the per-stage paths: an evaluate's ``metric_result`` and
Phase 3's ``iterations.final_automl``.

TAO keeps the evaluator's JSON as written (threshold, diagnostics and all), adds where it came
from and recomputes ``passed`` from the contract; best_model.json copies it from there.

TAO's three-phase skill registers Phase 3's winner as ``iterations.final_automl`` — an entry "with
the same shape as iteration entries" — and re-runs the handoff. It files NO stage event for it:
``commit_stage.py`` accepts only ``baseline`` and ``iter<N>`` labels, and the loop ended with its one
``loop_stop``. Phase 3 trains on the final iteration's combined CSV (not the best iteration's).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

FINAL_AUTOML = "final_automl"
LOOP_LABEL = re.compile(r"^(baseline|iter[1-9][0-9]*)$")


def metric_result_record(evaluator_output: Mapping[str, Any], *, evidence_path: str | Path,
                         passed: bool) -> dict[str, Any]:
    """``iterations.<label>.metric_result``: evaluator output + ``evidence_path`` + recomputed ``passed``."""
    out = dict(evaluator_output)
    out["evidence_path"] = str(Path(evidence_path).resolve())
    out["passed"] = bool(passed)
    return out


def phase3_training_csv(state: Mapping[str, Any]) -> Path:
    """The CSV Phase 3 trains on: the last loop iteration's combined CSV, else the base training CSV
    (the baseline met the KPI and the loop added nothing)."""
    merged = [(int(label[4:]), entry["combined_training_csv"]) for label, entry in state.get("iterations", {}).items()
              if label.startswith("iter") and LOOP_LABEL.match(label) and entry.get("combined_training_csv")]
    if merged:
        return Path(max(merged)[1])
    return Path(state["config"]["training_csv"])


def record_training_data(spec: Mapping[str, Any], *, train_csv: str | Path, images_dir: str | Path,
                         val_csv: str | Path, val_images_dir: str | Path) -> dict[str, Any]:
    """A copy of ``spec`` whose dataset block names the CSVs a training actually read.

    Every spec raypipe records (a trial's ``experiment.yaml``, ``final_automl/best_spec.yaml``, an
    entry's ``training_spec``) must say what the model was trained on; TAO's report and anyone
    re-running the spec read it from ``dataset.classify.{train,validation}_dataset``.
    """
    out = copy.deepcopy(dict(spec))
    classify = out.setdefault("dataset", {}).setdefault("classify", {})
    classify["train_dataset"] = {"csv_path": str(Path(train_csv).resolve()),
                                 "images_dir": str(Path(images_dir).resolve())}
    classify["validation_dataset"] = {"csv_path": str(Path(val_csv).resolve()),
                                      "images_dir": str(Path(val_images_dir).resolve())}
    return out


def final_automl_entry(*, best_ckpt_path: str | Path, training_spec: str | Path, metric_result: Mapping[str, Any],
                       threshold: float | None, training_csv: str | Path, metric_name: str,
                       inference_csv: str | Path | None = None,
                       parent_ckpt_path: str | Path | None = None) -> dict[str, Any]:
    """``iterations.final_automl``: what TAO's handoff picks from, and what its report shows.

    ``status: complete`` and a ``metric_result`` make it a candidate of the best-model pick;
    ``training_spec`` is the spec the winner trained with; ``combined_training_csv`` is the CSV it
    actually trained on (the report counts its rows).
    """
    entry: dict[str, Any] = {"status": "complete", "stage_completed": "evaluate",
                             "best_ckpt_path": str(Path(best_ckpt_path).resolve()),
                             "training_spec": str(Path(training_spec).resolve()),
                             "combined_training_csv": str(Path(training_csv).resolve()),
                             "metric_result": dict(metric_result), "threshold": threshold,
                             "source": "automl_phase3"}
    if metric_name == "far_pct":
        entry["far_pct"] = float(metric_result["value"])
    if inference_csv is not None:
        entry["inference_csv"] = str(Path(inference_csv).resolve())
    if parent_ckpt_path is not None:
        entry["parent_ckpt_path"] = str(Path(parent_ckpt_path).resolve())
    return entry
