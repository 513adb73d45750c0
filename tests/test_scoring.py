"""``raypipe.scoring``: every trajectory step scored on the sealed test split, once, resumably.

The run dir is built by hand around real checkpoints (untrained networks of different seeds: no
training needed to tell them apart) so each behaviour is cheap to set up; inference is the real
builtin backend as Ray tasks on a private local Ray.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import pytest

from raypipe._io import atomic_write_json, read_json
from raypipe.metrics import MetricContract, auroc, far_at_recall
from raypipe.placement import read_placements
from raypipe.rundir import RunDir
from raypipe.scoring import ScoringError, describe_test_split, record_on_best_model, score_sealed_test
from raypipe.spec import dump_spec, load_spec
from raypipe.trajectory import format_table, write_trajectory

CONTRACT = MetricContract()
THRESHOLDS = {"baseline": 0.5, "iter1": 0.45, "final_automl": 0.55}


def _entry(rd: RunDir, label: str, ckpt: Path, spec_path: Path, far: float) -> dict[str, Any]:
    return {"status": "complete", "best_ckpt_path": str(ckpt), "training_spec": str(spec_path),
            "threshold": THRESHOLDS[label], "far_pct": far,
            "metric_result": {"name": "far_pct", "value": far, "unit": "%", "passed": far < 10.0,
                              "constraints": {"recall_pct": 100.0}}}


def _checkpoint(spec: dict[str, Any], path: Path, seed: int) -> Path:
    from raypipe.backends.builtin import save_untrained_checkpoint

    path.parent.mkdir(parents=True, exist_ok=True)
    return save_untrained_checkpoint(spec, path, seed=seed)


@pytest.fixture(scope="module")
def run(tiny_workspace_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A finished run's files: Phase 1's winner (the same bytes as the baseline), iter1, Phase 3's
    winner (delivered), and a workspace with a sealed test split; Ray up for the module."""
    from raypipe._ray import ray_session
    from raypipe.backends.builtin import resolve_backbone

    ws = Path(shutil.copytree(tiny_workspace_template, tmp_path_factory.mktemp("sc") / "ws"))  # the demo's test split
    rd = RunDir(ws / "results" / "run_20260101_000000")
    spec, _ = resolve_backbone(load_spec(ws / "specs" / "baseline_spec.yaml"))
    spec_path = rd.root / "specs" / "spec.yaml"
    spec_path.parent.mkdir(parents=True)
    spec_path.write_text(dump_spec(spec))
    trial = rd.sweep("phase1").path / "phase1" / "trial_a_00000" / "checkpoint_000000"
    p1 = _checkpoint(spec, trial / "model_epoch_000_step_3.pth", seed=1)
    (trial / "experiment.yaml").write_text(dump_spec(spec))
    base = rd.iteration("baseline").train.path / "model_epoch_000_step_3.pth"
    base.parent.mkdir(parents=True)
    shutil.copyfile(p1, base)  # the handoff's copy: same bytes, another file
    it1 = _checkpoint(spec, rd.iteration("iter1").train.path / "model_epoch_000_step_6.pth", seed=2)
    p3 = _checkpoint(spec, rd.sweep("phase3").path / "final_automl" / "trial_b" / "m.pth", seed=3)
    atomic_write_json(rd.sweep("phase1").best_rec, {"best": {"score": 30.0, "checkpoint_uri": str(p1),
                                                             "rec_id": "a_00000"}})
    atomic_write_json(rd.deft_state, {"metric_contract": CONTRACT.to_dict(), "iterations": {
        "baseline": _entry(rd, "baseline", base, spec_path, 40.0),
        "iter1": _entry(rd, "iter1", it1, spec_path, 20.0),
        "final_automl": _entry(rd, "final_automl", p3, spec_path, 15.0)}})
    atomic_write_json(rd.best_model, {"iteration": "final_automl", "checkpoint": str(p3), "threshold": 0.55})
    with ray_session(num_cpus=2):
        yield {"ws": ws, "rd": rd, "first": _score(ws, rd)}


def _score(ws: Path, rd: RunDir, **kw: Any) -> Any:
    return score_sealed_test(rd, test_csv=kw.get("test_csv", ws / "test" / "testing_set.csv"),
                             images_dir=ws / "images", contract=CONTRACT, backend="builtin",
                             backend_options={"device": "cpu"}, resources={"cpu": 1, "gpu": 0})


def test_every_step_is_scored_and_a_shared_checkpoint_once(run: dict[str, Any]) -> None:
    rd, out = run["rd"], run["first"]
    assert sorted(out.scored_now) == ["iter1", "phase1_best", "phase3_best"]  # baseline = Phase 1's bytes
    assert set(out.by_step) == {"phase1_best", "baseline", "iter1", "phase3_best"}
    assert out.by_step["baseline"]["same_as"] == "phase1_best"
    assert not rd.sealed_test("baseline").inference_csv.exists()
    for key in ("test_far_pct", "test_auroc"):
        assert out.by_step["baseline"][key] == out.by_step["phase1_best"][key]
    # Inference ran as Ray tasks, one per distinct checkpoint, recorded from inside the worker.
    placed = sorted(p["what"] for p in read_placements(rd) if p.get("phase") == "test")
    assert placed == ["test/iter1", "test/phase1_best", "test/phase3_best"]
    assert all(p["assigned_resources"] for p in read_placements(rd) if p.get("phase") == "test")


def _keys(df: pd.DataFrame) -> list[tuple[str, str]]:
    """A row's identity: its capture directory and the object in it."""
    return list(zip(df["input_path"], df["object_name"]))


def test_numbers_are_the_test_splits_own(run: dict[str, Any]) -> None:
    ws, rd, out = run["ws"], run["rd"], run["first"]
    test = pd.read_csv(ws / "test" / "testing_set.csv", dtype=str, keep_default_na=False)
    kpi = pd.read_csv(ws / "kpi" / "testing_set.csv", dtype=str, keep_default_na=False)
    for step in ("phase1_best", "iter1", "phase3_best"):
        inf = pd.read_csv(rd.sealed_test(step).inference_csv, dtype={"label": str}, keep_default_na=False)
        assert sorted(_keys(inf)) == sorted(_keys(test))  # the test rows, not the KPI rows
        assert not set(_keys(inf)) & set(_keys(kpi))
        y = (inf["label"].str.upper() != "PASS").to_numpy()
        s = inf["siamese_score"].to_numpy(dtype=np.float64)
        res = out.by_step[step]
        assert res["rows"] == len(test) and res["defect_rows"] == int(y.sum())
        assert res["test_far_pct"] == pytest.approx(far_at_recall(y, s, 1.0).far * 100)
        assert res["test_auroc"] == pytest.approx(auroc(y, s))
        assert res["metric_result"]["name"] == "far_pct" and Path(res["metric_result"]["evidence_path"]).is_file()
    # The KPI threshold applied unchanged: recomputed by hand for iter1 (defect iff score > threshold).
    inf = pd.read_csv(rd.sealed_test("iter1").inference_csv, dtype={"label": str}, keep_default_na=False)
    y, pred = (inf["label"].str.upper() != "PASS").to_numpy(), inf["siamese_score"].to_numpy() > THRESHOLDS["iter1"]
    assert out.by_step["iter1"]["test_far_at_threshold_pct"] == pytest.approx(100 * (pred & ~y).sum() / (~y).sum())
    assert out.by_step["iter1"]["test_recall_at_threshold_pct"] == pytest.approx(100 * (pred & y).sum() / y.sum())
    assert out.by_step["phase1_best"]["test_far_at_threshold_pct"] is None  # no KPI threshold of its own


def test_trajectory_table_and_best_model_carry_the_test_numbers(run: dict[str, Any]) -> None:
    rd, out = run["rd"], run["first"]
    traj = write_trajectory(rd.root)
    rows = {r["step"]: r for r in traj["rows"]}
    assert list(rows) == ["phase1_best", "baseline", "iter1", "phase3_best"]
    for step, r in rows.items():
        assert r["test_far_pct"] == out.by_step[step]["test_far_pct"]
    assert traj["sealed_test"]["status"] == "scored" and traj["sealed_test"]["rows"] == out.by_step["iter1"]["rows"]
    table = format_table(traj)
    assert "test FAR" in table.splitlines()[0]
    assert f"{out.by_step['phase3_best']['test_far_pct']:.2f}%" in next(ln for ln in table.splitlines()
                                                                       if ln.startswith("phase3_best"))
    best = record_on_best_model(rd, traj)
    assert best is not None and read_json(rd.best_model) == best
    assert best["test_far_pct"] == out.by_step["phase3_best"]["test_far_pct"]
    assert best["test_auroc"] == out.by_step["phase3_best"]["test_auroc"]


def test_a_killed_scoring_redoes_only_what_is_missing(run: dict[str, Any]) -> None:
    ws, rd, first = run["ws"], run["rd"], run["first"]
    kept = {s: rd.sealed_test(s).result.read_bytes() for s in ("phase1_best", "phase3_best")}
    rd.sealed_test("iter1").result.unlink()  # killed after iter1's inference, before its result
    again = _score(ws, rd)
    assert again.scored_now == ["iter1"]
    assert {s: rd.sealed_test(s).result.read_bytes() for s in kept} == kept
    assert again.by_step["iter1"]["test_far_pct"] == first.by_step["iter1"]["test_far_pct"]  # same inference
    assert _score(ws, rd).scored_now == []  # nothing missing: nothing runs


def test_a_changed_checkpoint_is_scored_again(run: dict[str, Any]) -> None:
    ws, rd = run["ws"], run["rd"]
    state = read_json(rd.deft_state)
    spec = load_spec(state["iterations"]["iter1"]["training_spec"])
    _checkpoint(spec, Path(state["iterations"]["iter1"]["best_ckpt_path"]), seed=7)  # iter1 re-trained
    again = _score(ws, rd)
    assert again.scored_now == ["iter1"]
    assert again.by_step["iter1"]["checkpoint_digest"] != run["first"].by_step["iter1"]["checkpoint_digest"]


def test_a_failed_step_is_named_and_records_nothing(run: dict[str, Any]) -> None:
    ws, rd = run["ws"], run["rd"]
    ckpt = Path(read_json(rd.deft_state)["iterations"]["iter1"]["best_ckpt_path"])
    saved = ckpt.read_bytes()
    try:
        ckpt.write_bytes(b"not a checkpoint")
        with pytest.raises(ScoringError, match="inference of iter1"):
            _score(ws, rd)
        assert not rd.sealed_test("iter1").result.exists()  # no stale result of the old checkpoint either
        assert rd.sealed_test("phase3_best").result.is_file()  # what was scored stays
    finally:
        ckpt.write_bytes(saved)


def test_a_workspace_without_a_test_split_scores_nothing(run: dict[str, Any], tmp_path: Path) -> None:
    rd = RunDir(tmp_path / "run_x")
    out = score_sealed_test(rd, test_csv=None, images_dir=run["ws"] / "images", contract=CONTRACT,
                            backend="builtin", backend_options={}, resources={"cpu": 1, "gpu": 0})
    assert not out.available and out.by_step == {} and not rd.test.exists()
    assert describe_test_split(None).startswith("no sealed test split")
    line = describe_test_split(run["ws"] / "test" / "testing_set.csv")
    assert "sealed: read only by the final scoring" in line and "PASS=" in line
