"""The DEFT loop on Ray: a full run on the tiny demo workspace, a hard stop, and SIGKILL + resume.

Real Ray (local, 2 CPUs), the real built-in backend (1 epoch) and the real stage modules.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml

from raypipe._io import read_json, read_jsonl
from raypipe.config import load_config
from raypipe.deft import LoopConfig, LoopContext, initialise_state, load_state, next_stage, run_loop
from raypipe.deft.driver import config_block, iteration_metrics, resume_command
from raypipe.deft.state import LOOP_LOG, STATE_FILE, NextStep

FAST = ["spec_overrides.train.num_epochs=1", "tracking.enabled=false"]


@pytest.fixture(scope="module")
def demo_ws(tmp_path_factory) -> Path:
    from raypipe.workspace import generate_demo

    root = tmp_path_factory.mktemp("deft_driver") / "ws"
    generate_demo(root, seed=0, scale=0.05)
    return root


@pytest.fixture(scope="module")
def ray_local():
    import ray

    # address="local": a fresh cluster of our own, never someone else's `ray start` on this machine
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _ctx(ws: Path, cfg: dict, tracking=None) -> LoopContext:
    from raypipe.spec import load_spec, nest_dotted

    spec = nest_dotted(dict(cfg["spec_overrides"]), load_spec(ws / "specs" / "baseline_spec.yaml"))
    return LoopContext.from_root(ws, spec=spec, backend="builtin", backend_options={"device": "cpu"},
                                 tracking=tracking)


def _stage_walk_is_valid(state: dict) -> None:
    """Replays the events through next_stage: every ok event is exactly the step the state demanded."""
    events = state["events"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert all(isinstance(e["duration_sec"], int) and e["duration_sec"] >= 1 for e in events)
    it = iter(events)
    replay = {"status": "in_progress", "max_iterations": state["max_iterations"], "iterations": {}}
    for ev in it:
        if ev["status"] != "ok" or ev["stage"] == "loop_stop":
            continue
        expected = next_stage(replay)
        assert (expected.label, expected.stage) == (ev["iter"], ev["stage"]), (expected, ev)
        entry = replay["iterations"].setdefault(ev["iter"], {})
        entry["stage_completed"] = ev["stage"]
        if ev["stage"] == "evaluate":
            entry["metric_result"] = state["iterations"][ev["iter"]]["metric_result"]


def _no_duplicate_training_rows(state: dict) -> None:
    for label, e in state["iterations"].items():
        if not e.get("combined_training_csv"):
            continue
        df = pd.read_csv(e["combined_training_csv"], dtype=str, keep_default_na=False)
        key = df["input_path"] + "|" + df["golden_path"] + "|" + df["object_name"] + "|" + df["label"]
        dup = key[key.duplicated()]
        assert dup.empty, f"{label}: duplicated training rows {dup.tolist()[:5]}"
        prov = pd.read_csv(e["provenance_csv"], dtype=str, keep_default_na=False)
        assert len(prov) == len(df)


def test_loop_config_from_config():
    lc = LoopConfig.from_config(load_config(None, ["phase2.max_iterations=2", "phase2.mining_filter.embedder=pixels",
                                                   "phase2.resources.train.gpu=0.5", "seed=7"]))
    assert lc.max_iterations == 2 and lc.embedder == "pixels" and lc.train_resources == {"cpu": 1.0, "gpu": 0.5}
    assert lc.cpu_stage_resources == {"cpu": 1.0} and lc.seed == 7 and lc.num_sdg == 120
    assert lc.contract.name == "far_pct" and lc.contract.operator == "<" and lc.min_similarity == 0.8
    assert lc.spec_overrides["train.num_epochs"] == 4
    with pytest.raises(ValueError, match="embedder"):
        LoopConfig(embedder="clip")
    with pytest.raises(ValueError, match="max_iterations"):
        LoopConfig(max_iterations=0)


def test_hard_stop_commits_error_and_prints_resume_command(demo_ws, ray_local):
    """A pre-seeded baseline whose checkpoint is not a model: evaluate fails → hard stop, no loop_stop."""
    cfg = load_config(None, FAST)
    ctx = _ctx(demo_ws, cfg)
    lc = LoopConfig.from_config(cfg)
    rd = demo_ws / "results" / "run_hardstop"
    bad = rd / "baseline" / "train" / "model_epoch_001_step_00010.pth"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a torch checkpoint")
    spec_file = bad.parent / "experiment.yaml"
    spec_file.write_text(json.dumps(ctx.spec))
    initialise_state(rd, config_block=config_block(ctx, lc, rd), metric_contract=lc.metric_contract,
                     max_iterations=1, execution_policy={},
                     baseline={"best_ckpt_path": str(bad), "training_spec": str(spec_file), "train_metric": 1.0})
    outcome = run_loop(rd, lc, ctx)
    assert outcome.status == "failed"
    assert outcome.message.rstrip().endswith(resume_command(rd)) and "What to fix first:" in outcome.message
    state = load_state(rd / STATE_FILE)
    assert state["status"] == "failed" and state["iterations"]["baseline"]["status"] == "failed"
    last = state["events"][-1]
    assert (last["iter"], last["stage"], last["status"]) == ("baseline", "evaluate", "error")
    assert "loop_stop" not in {e["stage"] for e in state["events"]} and "final_artifacts" not in state
    assert next_stage(state) == NextStep("baseline", "halt")
    assert read_jsonl(rd / LOOP_LOG) == state["events"]
    assert not (rd / "best_model.json").exists()
    assert resume_command(rd) in (rd / "DEFT_Loop_Report.html").read_text()


@pytest.mark.slow
def test_full_loop_two_iterations(demo_ws, ray_local, tmp_path):
    from raypipe.tracking import child_run, resolve_tracking_uri, start_pipeline_run

    cfg = load_config(None, [*FAST, "phase2.max_iterations=2", "phase2.sdg.num_SDG=24"])
    uri = resolve_tracking_uri(str(tmp_path / "mlruns"), tmp_path)
    top = start_pipeline_run(uri, "deft-test", demo_ws / "results" / "run_full", {})
    with child_run(top, "phase2", key="phase2") as p2:
        ctx = _ctx(demo_ws, cfg, tracking=p2.context())
        rd = demo_ws / "results" / "run_full"
        outcome = run_loop(rd, LoopConfig.from_config(cfg), ctx)
    assert outcome.status == "complete", outcome.message
    state = load_state(rd / STATE_FILE)
    assert state["status"] == "complete" and state["completed_at"] and state["final_artifacts"]
    _stage_walk_is_valid(state)
    stages = [(e["iter"], e["stage"]) for e in state["events"]]
    assert stages[-1][1] == "loop_stop" and Counter(stages)[("baseline", "train")] == 1
    assert read_jsonl(rd / LOOP_LOG) == state["events"]
    _no_duplicate_training_rows(state)
    labels = [lb for lb in state["iterations"]]
    assert labels[0] == "baseline"
    for label in labels:
        e = state["iterations"][label]
        assert e["status"] == "complete" and Path(e["best_ckpt_path"]).is_relative_to((rd / label / "train").resolve())
        assert (rd / label / "inference" / "best_val" / "metric_result.json").is_file()
        assert (rd / label / "inference" / "latest" / "inference.csv").is_file()
    if not state["iterations"]["iter1"]["metric_result"]["passed"]:
        assert "iter2" in state["iterations"]
        # iteration 2 keeps iteration 1's rows exactly and warm-starts from the best so far
        c1 = pd.read_csv(state["iterations"]["iter1"]["combined_training_csv"], dtype=str, keep_default_na=False)
        c2 = pd.read_csv(state["iterations"]["iter2"]["combined_training_csv"], dtype=str, keep_default_na=False)
        assert c2.iloc[: len(c1)].equals(c1) and len(c2) > len(c1)
        exp = yaml.safe_load((rd / "iter2" / "train" / "experiment.yaml").read_text())
        ws_ckpts = {state["iterations"][lb]["best_ckpt_path"] for lb in ("baseline", "iter1")}
        assert exp["train"]["pretrained_model_path"] in ws_ckpts
        assert state["current_iteration"] == 2
    bm = read_json(rd / "best_model.json")
    assert bm["iteration"] in state["iterations"] and Path(bm["checkpoint"]).is_file()
    assert (rd / "best_model_inference_spec.yaml").is_file() and (rd / "DEFT_Loop_Report.html").is_file()
    hist = read_json(rd / "mining_history.json")
    assert [h["iteration"] for h in hist["iterations"]] == sorted({h["iteration"] for h in hist["iterations"]})
    # tracking: one nested run per iteration, with its KPI numbers
    import mlflow

    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([top.experiment_id], "tags.`raypipe.key` = 'phase2/iter1'")
    assert len(runs) == 1
    m = runs[0].data.metrics
    assert m["kpi_far_pct"] == pytest.approx(state["iterations"]["iter1"]["far_pct"])
    assert "rows_total" in m and "stage_sec_train" in m and "threshold" in m
    assert iteration_metrics(state, "iter1")["rows_total"] == m["rows_total"]


def _run_cli(rd: Path, ws: Path, extra: list[str], **popen) -> subprocess.Popen:
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    return subprocess.Popen([sys.executable, "-m", "raypipe.deft", "run", str(rd), "--workspace", str(ws),
                             "--num-cpus", "2", *FAST, *extra], env=env, **popen)


def _kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL the CLI and every process it started (its own session: Ray's raylet, GCS, workers)."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    out = subprocess.run(["ps", "-eo", "pid=,sid=,stat="], capture_output=True, text=True).stdout
    for line in out.splitlines():
        pid, sid, stat = line.split()[:3]
        if sid == str(proc.pid) and not stat.startswith("Z"):
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.mark.slow
def test_resume_after_sigkill_mid_train(demo_ws, tmp_path):
    """SIGKILL everything while iter1 trains; running the same command again finishes the loop with
    no lost/duplicated events, a fresh iter1 train dir, and no duplicated training rows."""
    rd = demo_ws / "results" / "run_sigkill"
    log = open(tmp_path / "first.log", "w")
    proc = _run_cli(rd, demo_ws, ["phase2.max_iterations=1"], start_new_session=True, stdout=log,
                    stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 420
    reached = False
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            sf = rd / STATE_FILE
            if sf.is_file() and (rd / "iter1" / "train" / "train.log").is_file():
                events = json.loads(sf.read_text())["events"]  # atomic writes: always whole JSON
                if any(e["iter"] == "iter1" and e["stage"] == "data_merge" for e in events):
                    reached = True
                    break
            time.sleep(0.1)
    finally:
        _kill_session(proc)
    assert reached, (tmp_path / "first.log").read_text()[-3000:]
    before = load_state(rd / STATE_FILE)
    assert before["events"][-1]["stage"] == "data_merge" and before["status"] == "in_progress"
    assert next_stage(before) == NextStep("iter1", "train")
    (rd / "iter1" / "train" / "model_epoch_009_step_00999.pth").write_bytes(b"partial leftover of the killed run")

    second = _run_cli(rd, demo_ws, ["phase2.max_iterations=1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                      text=True)
    out, _ = second.communicate(timeout=600)
    assert second.returncode == 0, out[-3000:]
    state = load_state(rd / STATE_FILE)
    assert state["status"] == "complete"
    _stage_walk_is_valid(state)
    assert state["events"][: len(before["events"])] == before["events"]
    assert Counter((e["iter"], e["stage"]) for e in state["events"])[("iter1", "train")] == 1
    assert read_jsonl(rd / LOOP_LOG) == state["events"]
    ckpts = sorted(p.name for p in (rd / "iter1" / "train").glob("*.pth"))
    assert ckpts == [Path(state["iterations"]["iter1"]["best_ckpt_path"]).name]  # the leftover was replaced
    _no_duplicate_training_rows(state)
    assert "DEFT loop complete" in out


def test_iteration_spec_is_a_warm_start_not_a_resume(tmp_path):
    from raypipe.deft.train import iteration_spec

    base = {"train": {"num_epochs": 4, "resume_training_checkpoint_path": "/old/ckpt.pth", "optim": {"lr": 5e-4}},
            "model": {"backbone": {"type": "changenet_cnn"}}}
    init = tmp_path / "model_epoch_002_step_00038.pth"
    spec = iteration_spec(base, overrides={"train.optim.lr": 1e-4, "train.num_epochs": 6}, init_ckpt=init)
    assert spec["train"]["pretrained_model_path"] == str(init)
    assert "resume_training_checkpoint_path" not in spec["train"]
    assert spec["train"]["optim"]["lr"] == 1e-4 and spec["train"]["num_epochs"] == 6
    assert base["train"]["num_epochs"] == 4 and "resume_training_checkpoint_path" in base["train"]  # not mutated


def test_iteration_spec_scales_the_tuned_lr_only_for_warm_starts(tmp_path):
    from raypipe.deft.train import iteration_spec

    base = {"train": {"optim": {"lr": 4e-4}, "resume_training_checkpoint_path": "/old.pth"}}
    ckpt = tmp_path / "model_epoch_000_step_00001.pth"
    warm = iteration_spec(base, overrides=None, init_ckpt=ckpt, lr_scale=0.25)
    assert warm["train"]["optim"]["lr"] == pytest.approx(1e-4)
    assert warm["train"]["pretrained_model_path"] == str(ckpt)
    assert "resume_training_checkpoint_path" not in warm["train"]
    assert iteration_spec(base, overrides=None, init_ckpt=None, lr_scale=0.25)["train"]["optim"]["lr"] == 4e-4
    pinned = iteration_spec(base, overrides={"train.optim.lr": 3e-5}, init_ckpt=ckpt, lr_scale=0.25)
    assert pinned["train"]["optim"]["lr"] == 3e-5  # an explicit override is taken as given
    assert base["train"]["optim"]["lr"] == 4e-4  # the base spec is not mutated
