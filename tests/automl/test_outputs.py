"""best_rec.json exactly in TAO AutoML's format (checked against the shipped JSON Schema) and trials.csv."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pandas as pd
import pytest

from raypipe.automl import BestRecError, TrialRecord, best_rec_schema, build_best_rec, rec_specs, validate_best_rec
from raypipe.automl._outputs import TRIALS_COLUMNS, write_best_rec, write_trials_csv

SPEC: dict[str, Any] = {"train": {"num_epochs": 4, "optim": {"lr": 3e-4}, "classify": {"cls_weight": [1.0, 12.5]}},
                        "dataset": {"classify": {"batch_size": 16}}}


def _recs() -> list[TrialRecord]:
    return [
        TrialRecord("t1", 0, "complete", {"train.optim.lr": 3e-4}, val_far=20.0, val_loss=0.4,
                    pred_counts={"PASS": 9, "NO_PASS": 7}, checkpoint="/x/trial_t1/checkpoint_000001/model_epoch_002_step_00010.pth",
                    checkpoint_epoch=2, checkpoint_step=10, epochs_run=4, job_id="trial_t1"),
        TrialRecord("t2", 1, "failed", {"train.optim.lr": 1e-2}, error="TrainingError: loss is NaN", job_id="trial_t2"),
    ]


def _doc() -> dict[str, Any]:
    recs = _recs()
    specs = rec_specs(SPEC, {"train.optim.lr": 3e-4, "train.classify.cls_weight[1]": 12.5},
                      {"train.num_epochs": 4, "dataset.classify.batch_size": 16})
    return build_best_rec(experiment_id="phase1", metric_name="far_pct", best=recs[0], best_specs=specs,
                          records=recs, scores={"t1": 20.0, "t2": None})


def test_best_rec_has_exactly_the_spec_fields(tmp_path: Path) -> None:
    doc = _doc()
    jsonschema.validate(doc, best_rec_schema())
    assert set(doc) == {"schema_version", "experiment_id", "metric_name", "direction", "best", "all_recs"}
    assert set(doc["best"]) == {"rec_id", "score", "specs", "observed_budget", "checkpoint_uri", "checkpoint_epoch",
                                "checkpoint_step"}
    assert doc["best"]["specs"] == {"train": {"optim": {"lr": 3e-4}, "classify": {"cls_weight": [1.0, 12.5]}},
                                    "dataset": {"classify": {"batch_size": 16}}}
    assert doc["best"]["observed_budget"] == {"num_epochs": 4}  # the budget moved out of specs
    assert (doc["best"]["checkpoint_epoch"], doc["best"]["checkpoint_step"]) == (2, 10)
    assert doc["all_recs"] == [{"rec_id": "t1", "score": 20.0, "job_id": "trial_t1"},
                               {"rec_id": "t2", "score": None, "job_id": "trial_t2"}]
    path = write_best_rec(tmp_path / "best_rec.json", doc)
    assert json.loads(path.read_text()) == doc


@pytest.mark.parametrize("mutate, where", [
    (lambda d: d.update(extra=1), "<root>"),
    (lambda d: d["best"].update(trial_dir="x"), "best"),
    (lambda d: d["all_recs"][0].update(status="complete"), "all_recs/0"),
    (lambda d: d["best"]["specs"].update({"train.optim.lr": 1.0}), "best/specs"),
    (lambda d: d["best"]["specs"]["train"].update(num_epochs=4), "best/specs"),
    (lambda d: d["best"]["specs"].update(epochs=4), "best/specs"),
    (lambda d: d["best"].update(score="20"), "best/score"),
    (lambda d: d.update(direction="min"), "direction"),
    (lambda d: d["best"].pop("checkpoint_step"), "best"),
])
def test_schema_rejects_anything_else(mutate: Any, where: str) -> None:
    doc = copy.deepcopy(_doc())
    mutate(doc)
    with pytest.raises(BestRecError, match=where):
        validate_best_rec(doc)


def test_rec_specs_drop_budget_keys_and_keep_whole_lists() -> None:
    specs = rec_specs(SPEC, {"train.classify.cls_weight[1]": 12.5}, {"train.num_epochs": 4})
    assert specs == {"train": {"classify": {"cls_weight": [1.0, 12.5]}}}


def test_best_rec_needs_a_checkpoint() -> None:
    recs = _recs()
    with pytest.raises(BestRecError, match="t2"):
        build_best_rec(experiment_id="e", metric_name="far_pct", best=recs[1], best_specs={}, records=recs,
                       scores={"t1": 20.0, "t2": None})


def test_trials_csv_one_row_per_trial(tmp_path: Path) -> None:
    path = write_trials_csv(tmp_path / "trials.csv", _recs(), "far_pct")
    df = pd.read_csv(path)
    # the fixed columns, then one per hyper-parameter (the JSON column stays for code that reads it)
    assert tuple(df.columns) == (*TRIALS_COLUMNS, "train.optim.lr")
    assert list(df["train.optim.lr"]) == [3e-4, 1e-2]
    assert list(df["trial_id"]) == ["t1", "t2"] and list(df["status"]) == ["complete", "failed"]
    assert json.loads(df.loc[0, "params"]) == {"train.optim.lr": 3e-4}
    assert df.loc[0, "metric"] == 20.0 and pd.isna(df.loc[1, "metric"])
    assert df.loc[1, "error"] == "TrainingError: loss is NaN"
