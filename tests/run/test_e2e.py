"""End to end: ``python -m raypipe.run`` on the smoke profile (SIGKILL + ``--resume`` at every moment of a
run: ``tests/adversarial/test_kill_resume.py``).

One smoke run (the session fixture ``smoke_run``) serves every check of a finished run: its artifacts, the
delivered model on new data, the sealed test split, MLflow, a resume of its final scoring, and a
second identical run that must reproduce it (determinism).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import SmokeRun, run_smoke
from tests.run._artifacts import check_complete_run
from tests.run._mlflow_checks import check_outcome, check_store
from tests.tracking._server import post_json, running_mlflow_server

pytestmark = pytest.mark.slow
TIMEOUT = 900


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "raypipe.run", *args]


@pytest.fixture
def smoke(smoke_run: SmokeRun) -> SmokeRun:
    """The session's one smoke run (``tests/conftest.py``), finished and successful."""
    assert smoke_run.proc.returncode == 0, smoke_run.proc.stdout[-3000:] + smoke_run.proc.stderr[-3000:]
    return smoke_run


def test_smoke_run_end_to_end(smoke: SmokeRun) -> None:
    rd = smoke.run_dir
    check_complete_run(rd)
    # Phase 3 starts at Phase 1's winner (same seed): the sampler must not draw that point again
    trials = pd.read_csv(rd / "final_automl" / "trials.csv")
    params = trials.loc[trials["trial_id"] != "baseline", "params"]
    assert len(params) == 2 and params.is_unique, params.tolist()
    out = smoke.proc.stdout
    assert "Phase 3 best" in out and str(rd / "best_model.json") in out
    # What the user reads: every phase under its own name, each DEFT stage as it commits, a closing
    # summary, and none of the libraries' chatter (Ray worker prefixes, the end-of-sweep SIGTERM
    # traceback, MLflow's store creation) or Python dicts.
    both = smoke.proc.stdout + smoke.proc.stderr
    for phase in ("Phase 1", "Phase 2", "Phase 3"):
        assert f"  {phase}   " in out, phase
    assert " evaluate " in out and " rca " in out and "[final_automl]" not in both
    assert "Run complete" in out and "total time" in out and "mlflow ui" in out
    for chatter in ("(pid=", "Exception ignored", "SystemExit", "Creating initial MLflow", "{'PASS'", "## 1."):
        assert chatter not in both, chatter
    # The closing summary leads with the verdict (never a bare "complete") and the sealed test FAR.
    best = json.loads((rd / "best_model.json").read_text())
    verdict = "KPI met" if best["verdict"] == "kpi_met" else "KPI not met"
    head = next(line for line in out.splitlines() if line.startswith("complete"))
    assert head.startswith(f"complete, {verdict}: sealed test FAR@100%R {best['test_far_pct']:.2f}%"), head
    assert out.index(head) < out.rindex("Phase 1 best")


def test_delivered_model_scores_new_data(smoke: SmokeRun, tmp_path: Path) -> None:
    rd, out = smoke.run_dir, tmp_path / "scored"
    p = subprocess.run([sys.executable, "-m", "raypipe.infer", "--best-model", str(rd / "best_model.json"),
                        "--csv", str(smoke.workspace / "kpi" / "testing_set.csv"),
                        "--images-dir", str(smoke.workspace / "images"), "--output-dir", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    result = json.loads((out / "metric_result.json").read_text())
    best = json.loads((rd / "best_model.json").read_text())
    assert result["value"] == pytest.approx(best["far_pct"])


def test_sealed_test_split_scores_every_step(smoke: SmokeRun) -> None:
    rd = smoke.run_dir
    traj = json.loads((rd / "trajectory.json").read_text())
    rows = {r["step"]: r for r in traj["rows"]}
    assert traj["sealed_test"]["status"] == "scored"
    assert traj["sealed_test"]["rows"] == len(pd.read_csv(smoke.workspace / "test" / "testing_set.csv"))
    for step, row in rows.items():
        result = json.loads((rd / "test" / step / "test_result.json").read_text())
        assert row["test_far_pct"] == result["test_far_pct"] and 0.0 <= row["test_far_pct"] <= 100.0, step
        assert row["test_auroc"] == result["test_auroc"], step
    # Phase 1's winner and the pre-seeded baseline are one checkpoint: inferred once.
    assert json.loads((rd / "test" / "baseline" / "test_result.json").read_text())["same_as"] == "phase1_best"
    delivered = next(r for r in traj["rows"] if r["delivered"])
    best = json.loads((rd / "best_model.json").read_text())
    assert best["verdict"] == ("kpi_met" if best["metric_result"]["passed"] else "kpi_not_met")
    assert (best["test_far_pct"], best["test_auroc"]) == (delivered["test_far_pct"], delivered["test_auroc"])
    html = (rd / "DEFT_Loop_Report.html").read_text()
    assert "sealed test FAR" in html and f"{best['test_far_pct']:.2f}" in html
    # Inference on the test split ran as Ray tasks, after every phase.
    placed = [json.loads(line) for line in (rd / "placement.jsonl").read_text().splitlines() if line.strip()]
    tests = [p for p in placed if p["phase"] == "test"]
    assert sorted(p["what"] for p in tests) == sorted(f"test/{s}" for s in rows if s != "baseline")
    assert min(p["ts"] for p in tests) > max(p["ts"] for p in placed if p["phase"] != "test")


def test_mlflow_store_holds_the_run_and_its_outcome(smoke: SmokeRun) -> None:
    rd, uri, store = smoke.run_dir, smoke.uri, smoke.store
    check_store(uri, rd, phase1_trials=2, epochs=1, secret=smoke.secret, store_dir=store)
    outcome = check_outcome(uri, rd)
    best = json.loads((rd / "best_model.json").read_text())
    assert outcome["metrics"]["test_far_pct"] == pytest.approx(best["test_far_pct"])
    # The same store through `mlflow server` and its REST API.
    with running_mlflow_server(uri, store / "artifacts", smoke.cwd) as url:
        found = post_json(f"{url}/api/2.0/mlflow/runs/search",
                          {"experiment_ids": [e["experiment_id"] for e in post_json(
                              f"{url}/api/2.0/mlflow/experiments/search", {"max_results": 100})["experiments"]],
                           "max_results": 1000})["runs"]
    names = {r["info"]["run_name"] for r in found}
    assert {"phase1", "phase2", "phase3", "iter1"} <= names
    assert sum(1 for r in found if any(t["key"] == "mlflow.parentRunId" for t in r["data"].get("tags", []))) >= 6


def _comparable(rd: Path) -> dict:
    """What a run delivers and measures, without what names this run (paths, trial ids, times)."""
    traj = json.loads((rd / "trajectory.json").read_text())
    rows = [{k: v for k, v in r.items() if k != "checkpoint"} for r in traj["rows"]]
    best = json.loads((rd / "best_model.json").read_text())
    keep = ("iteration", "threshold", "far_pct", "metric_result", "verdict", "test_far_pct", "test_auroc")
    return {"rows": rows, "delivered": traj["delivered"],
            "best_model": {k: best.get(k) for k in keep if k != "metric_result"},
            "kpi_result": {k: v for k, v in best["metric_result"].items() if k != "evidence_path"}}


def test_same_config_and_seed_give_the_same_run(smoke: SmokeRun, tiny_workspace_template: Path,
                                                tmp_path_factory: pytest.TempPathFactory) -> None:
    """Determinism: a second run of the same config and seed delivers the same model and the same
    numbers, Phase 1's and Phase 3's concurrent trials included."""
    import torch

    from raypipe.backends.builtin._checkpoint import load_checkpoint

    again = run_smoke(tiny_workspace_template, tmp_path_factory.mktemp("smoke_again"))
    assert again.proc.returncode == 0, again.proc.stdout[-3000:] + again.proc.stderr[-3000:]
    first, second = _comparable(smoke.run_dir), _comparable(again.run_dir)
    assert [r["step"] for r in second["rows"]] == [r["step"] for r in first["rows"]]
    for a, b in zip(first["rows"], second["rows"]):
        assert a == b, a["step"]
    assert second == first
    weights = [load_checkpoint(json.loads((rd / "best_model.json").read_text())["checkpoint"])["state_dict"]
               for rd in (smoke.run_dir, again.run_dir)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0]), "the delivered weights differ"


def test_resume_of_an_unscored_run_scores_only_what_is_missing(smoke: SmokeRun) -> None:
    """A run killed during the final scoring: ``--resume`` scores the missing steps and nothing else."""
    rd = smoke.run_dir
    before = json.loads((rd / "trajectory.json").read_text())
    placements = (rd / "placement.jsonl").read_text()
    events = len(json.loads((rd / "deft_state.json").read_text())["events"])
    for step in ("iter1", "phase3_best"):
        (rd / "test" / step / "test_result.json").unlink()
    p = subprocess.run(_cmd("--resume", str(rd)), cwd=smoke.cwd, capture_output=True, text=True, timeout=TIMEOUT,
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    new = [json.loads(line) for line in (rd / "placement.jsonl").read_text()[len(placements):].splitlines()]
    assert sorted(r["what"] for r in new) == ["test/iter1", "test/phase3_best"]  # no phase ran again
    assert len(json.loads((rd / "deft_state.json").read_text())["events"]) == events
    assert json.loads((rd / "trajectory.json").read_text())["rows"] == before["rows"]
