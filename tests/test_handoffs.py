"""The Phase 1 → 2 handoff: the winner's spec goes to the run dir, the workspace spec is never written."""

from __future__ import annotations

from pathlib import Path

import yaml

from raypipe._io import atomic_write_json
from raypipe.automl import RankedTrial, SweepResult
from raypipe.handoffs import Phase1Handoff, phase1_to_phase2
from raypipe.rundir import RunDir

WS_SPEC = {"train": {"num_epochs": 4, "optim": {"lr": 1e-3, "momentum": 0.9}},
           "model": {"backbone": {"type": "builtin_siamese"},
                     "classify": {"difference_module": "learnable", "learnable_difference_modules": 4}},
           "dataset": {"classify": {"batch_size": 32, "train_dataset": {"csv_path": "/data/train.csv"}}}}


def _sweep(tmp: Path, ranked: list[RankedTrial], winner_specs: dict) -> SweepResult:
    rec = tmp / "phase1_automl" / "best_rec.json"
    atomic_write_json(rec, {"best": {"rec_id": ranked[0].trial_id, "specs": winner_specs}})
    return SweepResult(best_rec_path=rec, trials_csv=tmp / "trials.csv", best_spec={}, best_checkpoint=Path(),
                       best_score=ranked[0].score, best_trial_id=ranked[0].trial_id, ranked=ranked, baseline_eval=None,
                       noise_guard=None, failed=[],
                       trial_specs={t.trial_id: {"train": {"optim": {"lr": 2e-4}}} for t in ranked})


def _ckpt(tmp: Path, name: str, step: int) -> Path:
    p = tmp / "storage" / name / f"model_epoch_000_step_{step:05d}.pth"
    p.parent.mkdir(parents=True)
    p.write_bytes(b"weights of " + name.encode())
    return p


def test_winner_merged_into_the_run_dir_and_the_workspace_spec_untouched(tmp_path: Path) -> None:
    ws_spec = tmp_path / "ws" / "specs" / "baseline_spec.yaml"
    ws_spec.parent.mkdir(parents=True)
    ws_spec.write_text(yaml.safe_dump(WS_SPEC))
    before = ws_spec.read_bytes()
    rd = RunDir(tmp_path / "ws" / "results" / "run_20260101_000000")
    winner = {"train": {"optim": {"lr": 3e-4}}, "model": {"classify": {"learnable_difference_modules": 2},
                                                          "backbone": {"type": "other"}},
              "dataset": {"classify": {"train_dataset": {"csv_path": "/elsewhere.csv"}}}}
    sweep = _sweep(tmp_path, [RankedTrial("t1", 12.5, _ckpt(tmp_path, "t1", 7), {"PASS": 3, "NO_PASS": 2})], winner)
    handoff = phase1_to_phase2(rd, ws_spec, sweep, WS_SPEC)

    assert ws_spec.read_bytes() == before  # read, never written
    assert sorted(p.name for p in ws_spec.parent.iterdir()) == ["baseline_spec.yaml"]  # no .orig beside it
    assert handoff.merged_spec == rd.baseline_spec_automl.resolve()
    merged = yaml.safe_load(rd.baseline_spec_automl.read_text())
    assert merged["train"]["optim"] == {"lr": 3e-4, "momentum": 0.9}  # the winner's HPs over the workspace spec
    assert merged["model"]["classify"]["learnable_difference_modules"] == 2  # the winner's architecture
    assert merged["model"]["backbone"] == {"type": "builtin_siamese"}  # architecture and data stay the workspace's
    assert merged["dataset"] == WS_SPEC["dataset"]
    assert handoff.baseline_ckpt.parent == rd.iteration("baseline").train.path.resolve()
    assert handoff.baseline_ckpt.read_bytes() == b"weights of t1" and handoff.trial_id == "t1"
    assert Phase1Handoff.from_json(handoff.to_json()) == handoff


def test_a_collapsed_winner_hands_over_the_next_trial(tmp_path: Path) -> None:
    ws_spec = tmp_path / "baseline_spec.yaml"
    ws_spec.write_text(yaml.safe_dump(WS_SPEC))
    ranked = [RankedTrial("t1", 5.0, _ckpt(tmp_path, "t1", 3), {"PASS": 10, "NO_PASS": 0}),
              RankedTrial("t2", 8.0, _ckpt(tmp_path, "t2", 4), {"PASS": 6, "NO_PASS": 4})]
    handoff = phase1_to_phase2(RunDir(tmp_path / "rd"), ws_spec, _sweep(tmp_path, ranked, {}), WS_SPEC)
    assert handoff.trial_id == "t2" and handoff.score == 8.0 and "collapsed" in handoff.note
    spec = yaml.safe_load(Path(handoff.training_spec_path).read_text())
    assert spec["train"]["optim"]["lr"] == 2e-4  # t2's own spec, not the winner's
