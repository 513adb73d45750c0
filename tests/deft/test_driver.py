"""The DEFT loop driver: look-up → run → commit → render, without Ray on fake stages; then on Ray
with the real stages: a full run on the tiny demo workspace and a hard stop. (SIGKILL + resume of
the loop, a partial checkpoint left behind included, is the kill chain's in
``tests/adversarial/test_kill_resume.py``.)

The Ray tests use real Ray (local, 2 CPUs), the real built-in backend (1 epoch) and the real stages.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
import pytest
import yaml

from raypipe import tao_interop as ti
from raypipe._io import atomic_write_json, read_json, read_jsonl
from raypipe.config import RunConfig, load_config
from raypipe.deft import LoopContext, initialise_state, load_state, next_stage, run_loop
from raypipe.deft.context import StageContext, config_block
from raypipe.deft.driver import DeftLoop
from raypipe.deft.errors import HardStop
from raypipe.deft.iteration_metrics import iteration_metrics
from raypipe.deft.stages import (
    REGISTRY,
    AnomalygenStage,
    DataMergeStage,
    DataMiningStage,
    EvaluateStage,
    RcaStage,
    RoutingStage,
    TrainStage,
)
from raypipe.deft.state import NextStep
from raypipe.rundir import RunDir, iteration_number, resume_command
from raypipe.testing.tao_contract import check_state_config
from raypipe.workspace import ImageLayout

from ._helpers import SPEC, eval_evidence, new_run, parquet, train_evidence

FAST = ["spec_overrides.train.num_epochs=1", "tracking.enabled=false"]


# -- the loop without Ray: fake stages that produce small real evidence ------------------------------
class FakeTrain(TrainStage):
    def run(self, ctx: StageContext, state: Mapping[str, Any], label: str) -> dict[str, Any]:
        n = iteration_number(label)
        return train_evidence(ctx.rd.root, label, epoch=n + 1, step=10 * (n + 1))


class FakeEvaluate(EvaluateStage):
    """Baseline FAR 50 %, iter1 25 %, iter2 0 %: never below the default target of 10 % until iter2."""

    def run(self, ctx: StageContext, state: Mapping[str, Any], label: str) -> dict[str, Any]:
        scores = {0: [0.1, 0.95, 0.2, 0.97], 1: [0.1, 0.95, 0.2, 0.3], 2: [0.1, 0.2, 0.3, 0.4]}[iteration_number(label)]
        return eval_evidence(ctx.rd.root, label, state["iterations"][label]["best_ckpt_path"], far_pass_scores=scores)


class FakeRca(RcaStage):
    def run(self, ctx: StageContext, state: Mapping[str, Any], label: str) -> dict[str, Any]:
        gaps = parquet(ctx.rd.iteration(label).rca("T").gaps_parquet, 3)
        return {"rca_gaps_parquet": str(gaps), "rca_threshold": 0.5, "rca_target_defects": ["missing"]}


class FakeRouting(RoutingStage):
    fail_first: Path | None = None  # a hard stop the first time (the marker file remembers it happened)

    def run(self, ctx: StageContext, state: Mapping[str, Any], label: str) -> dict[str, Any]:
        if self.fail_first is not None and not self.fail_first.exists():
            self.fail_first.write_text("failed once")
            raise HardStop("routing", "no gap label can be mined or synthesised", "add pool rows")
        out = ctx.rd.iteration(label).routing("T")
        return {"routing_mining_parquet": str(parquet(out.mining_gaps, 0)),
                "routing_anomalygen_parquet": str(parquet(out.anomalygen_gaps, 2))}


class FakeAnomalygen(AnomalygenStage):
    def run(self, ctx: StageContext, state: Mapping[str, Any], label: str) -> dict[str, Any]:
        return {"anomalygen_skipped": True}


class FakeDataMining(DataMiningStage):
    def run(self, ctx: StageContext, state: Mapping[str, Any], label: str) -> dict[str, Any]:
        pool = ctx.rd.iteration(label).mining.mining_pool
        pool.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"input_path": ["s"], "golden_path": ["g"], "label": ["missing"], "object_name": ["o"]}) \
            .to_csv(pool, index=False)
        return {"data_mining_skipped": True, "mining_pool_csv": str(pool.resolve())}


class FakeDataMerge(DataMergeStage):
    def run(self, ctx: StageContext, state: Mapping[str, Any], label: str) -> dict[str, Any]:
        d = ctx.rd.iteration(label).dataset
        d.path.mkdir(parents=True, exist_ok=True)
        rows = pd.DataFrame({"input_path": ["a", "b"], "golden_path": "g", "label": "PASS", "object_name": "o"})
        rows.to_csv(d.combined_csv, index=False)
        rows.assign(source="base_train").to_csv(d.provenance_csv, index=False)
        atomic_write_json(d.merge_validation, {"rows_checked": 2, "missing_file_count": 0,
                                               "train_val_leakage_overlap_count": 0, "kpi_overlap_count": 0})
        return {"combined_training_csv": str(d.combined_csv.resolve()),
                "provenance_csv": str(d.provenance_csv.resolve()),
                "merge_validation_report": str(d.merge_validation.resolve())}


def _fake_loop(tmp_path: Path, *, target: float = 10.0, fail_routing_once: bool = False) -> DeftLoop:
    rd = new_run(tmp_path, max_iterations=2)
    cfg = load_config(None, ["phase2.max_iterations=2", f"phase2.metric_contract.target={target}"])
    inputs = LoopContext(root=tmp_path, images_dir=tmp_path, train_csv=tmp_path / "t.csv", val_csv=tmp_path / "v.csv",
                         kpi_csv=tmp_path / "kpi.csv", pool_csv=None, spec=SPEC, layout=ImageLayout(("L",), ".png"))
    routing = FakeRouting()
    routing.fail_first = tmp_path / "routing_failed_once" if fail_routing_once else None
    stages = REGISTRY.with_stages(FakeTrain(), FakeEvaluate(), FakeRca(), routing, FakeAnomalygen(),
                                  FakeDataMining(), FakeDataMerge())
    return DeftLoop(rd, cfg, inputs, registry=stages)


def test_loop_runs_the_registry_order_without_ray(tmp_path: Path) -> None:
    loop = _fake_loop(tmp_path)
    outcome = loop.run()
    assert outcome.status == "complete", outcome.message
    state = load_state(loop.rd.deft_state)
    iteration = ["routing", "anomalygen", "data_mining", "data_merge", "train", "evaluate"]
    assert [(e["iter"], e["stage"]) for e in state["events"]] == [
        ("baseline", "train"), ("baseline", "evaluate"), ("baseline", "rca"),
        *[("iter1", s) for s in iteration], ("iter1", "rca"),
        *[("iter2", s) for s in iteration], ("iter2", "loop_stop")]
    assert [s.name for s in REGISTRY.iteration] == ["routing", *iteration[1:], "rca"]
    assert outcome.best_label == "iter2" and read_json(loop.rd.best_model)["iteration"] == "iter2"
    assert read_jsonl(loop.rd.loop_log) == state["events"]
    _stage_walk_is_valid(state)
    assert loop.rd.report.is_file()  # rendered by the driver after its commits
    assert state["events"][-1]["summary"].startswith("metric_met: best=iter2")


def test_a_failing_stage_is_a_committed_hard_stop_and_resume_redoes_it(tmp_path: Path) -> None:
    loop = _fake_loop(tmp_path, fail_routing_once=True)
    outcome = loop.run()
    assert outcome.status == "failed"
    assert outcome.message.rstrip().endswith(resume_command(loop.rd)) and "add pool rows" in outcome.message
    state = load_state(loop.rd.deft_state)
    last = state["events"][-1]
    assert (last["iter"], last["stage"], last["status"]) == ("iter1", "routing", "error")
    assert next_stage(state) == NextStep("iter1", "halt")
    assert resume_command(loop.rd) in loop.rd.report.read_text()
    assert loop.run().status == "complete"  # --resume: the stage is redone from its start
    state = load_state(loop.rd.deft_state)
    ok = Counter((e["iter"], e["stage"]) for e in state["events"] if e["status"] == "ok")
    assert ok[("iter1", "routing")] == 1 and max(ok.values()) == 1


def test_evidence_a_stage_cannot_back_is_a_hard_stop(tmp_path: Path) -> None:
    class LyingRca(RcaStage):
        def run(self, ctx: StageContext, state: Mapping[str, Any], label: str) -> dict[str, Any]:
            return {"rca_gaps_parquet": str(ctx.rd.root / "nowhere.parquet"), "rca_threshold": 0.5,
                    "rca_target_defects": []}

    loop = _fake_loop(tmp_path)
    loop.registry = loop.registry.with_stages(LyingRca())
    outcome = loop.run()
    assert outcome.status == "failed" and "stage evidence rejected" in outcome.message
    errors = [e for e in load_state(loop.rd.deft_state)["events"] if e["status"] == "error"]
    assert [(e["iter"], e["stage"]) for e in errors] == [("baseline", "rca")]


def test_a_report_that_cannot_render_is_logged_and_never_blocks_the_state(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def broken(run_dir: Any) -> Path:
        raise ZeroDivisionError("a chart divided by zero")

    monkeypatch.setattr("raypipe.deft.report.render_report", broken)
    loop = _fake_loop(tmp_path)
    with caplog.at_level(logging.ERROR, logger="raypipe.deft.driver"):
        outcome = loop.run()
    assert outcome.status == "complete"
    assert load_state(loop.rd.deft_state)["status"] == "complete"
    failures = [r for r in caplog.records if "could not be rendered" in r.getMessage()]
    assert failures and failures[0].exc_info is not None  # with the traceback, not swallowed
    assert failures[0].exc_info[0] is ZeroDivisionError


def test_config_block_is_tao_vocabulary_from_the_typed_config(tmp_path: Path) -> None:
    cfg = load_config(None, ["phase2.mining_filter.min_similarity=0.7", "phase2.resources.train.gpu=0.5",
                             "phase2.sdg.num_SDG=24"])
    inputs = LoopContext(root=tmp_path, images_dir=tmp_path / "images", train_csv=tmp_path / "t.csv",
                         val_csv=tmp_path / "v.csv", kpi_csv=tmp_path / "k.csv", pool_csv=None, spec=SPEC,
                         layout=ImageLayout(("L",), ".png"))
    block = config_block(cfg, inputs, RunDir(tmp_path / "rd"))
    assert block["mining_filter"] == {"top_k_per_target": 5, "metric": "cosine", "min_similarity": 0.7,
                                      "embedder": "imagenet", "label_mode": "label", "history_aware": {
                                          "enabled": True, "identity": "filepath",
                                          "history_file": str((tmp_path / "rd" / "mining_history.json").resolve())}}
    # a fractional GPU request shares one GPU: TAO's state counts whole GPUs
    assert block["sdg"] == {"kind": "builtin", "num_SDG": 24} and block["num_gpus"] == 1
    assert block["batch_size"] == 16 and block["num_epochs"] == 1 and block["backend"] == "builtin"
    # TAO's keys: where the backbone file is (the spec names a container path: the built-in staging dir),
    # the resolved pool, who trains and who synthesises; gpu_model is never empty
    assert block["backbone_weight_dir"] == str((tmp_path / "rd" / "backbone").resolve())
    assert block["resolved_mining_pool_csv"] == str((tmp_path / "rd" / "inputs" / "mining_pool.resolved.csv").resolve())
    assert block["train_container"] is None and block["anomalygen"]["num_SDG"] == 24
    assert block["anomalygen"]["mode"] == "procedural" and set(block["anomalygen"]) == set(ti.ANOMALYGEN_KEYS)
    assert isinstance(block["gpu_model"], str) and block["gpu_model"].strip()
    assert check_state_config(block) == []


def test_config_block_names_the_tao_container_and_the_staged_backbone(tmp_path: Path) -> None:
    weights = tmp_path / "augmentation" / "backbone" / "c_radio_v2_b.safetensors"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"w")
    cfg = load_config(None, ["backend=tao", "phase2.mining_filter.embedder=pixels"])
    spec = {**SPEC, "model": {**SPEC["model"], "backbone": {
        "type": "c_radio_v2_vit_base_patch16_224",
        "pretrained_backbone_path": "/data/pretrained_models/c_radio_v2_b.safetensors"}}}
    inputs = LoopContext(root=tmp_path, images_dir=tmp_path / "images", train_csv=tmp_path / "t.csv",
                         val_csv=tmp_path / "v.csv", kpi_csv=tmp_path / "k.csv", pool_csv=None, spec=spec,
                         layout=ImageLayout(("L",), ".png"), backend="tao")
    block = config_block(cfg, inputs, RunDir(tmp_path / "rd"))
    assert block["backbone_weight_dir"] == str(weights.parent.resolve()) and block["train_container"] == cfg.tao.image
    assert ti.resolve_backbone(spec, block["backbone_weight_dir"]).host == weights.resolve()  # what TAO's handoff does


# -- the loop on Ray with the real stages ---------------------------------------------------------------
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


def _ctx(ws: Path, cfg: RunConfig, tracking: Any = None) -> LoopContext:
    from raypipe.spec import load_spec, nest_dotted

    spec = nest_dotted(dict(cfg.spec_overrides), load_spec(ws / "specs" / "baseline_spec.yaml"))
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


def test_hard_stop_commits_error_and_prints_resume_command(demo_ws, ray_local):
    """A pre-seeded baseline whose checkpoint is not a model: evaluate fails → hard stop, no loop_stop."""
    cfg = load_config(None, [*FAST, "phase2.max_iterations=1"])
    ctx = _ctx(demo_ws, cfg)
    rd = demo_ws / "results" / "run_hardstop"
    bad = rd / "baseline" / "train" / "model_epoch_001_step_00010.pth"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a torch checkpoint")
    spec_file = bad.parent / "experiment.yaml"
    spec_file.write_text(json.dumps(ctx.spec))
    initialise_state(rd, config_block=config_block(cfg, ctx, RunDir(rd)), metric_contract=cfg.phase2.metric_contract,
                     max_iterations=1, execution_policy=cfg.execution_policy.tao_policy(),
                     baseline={"best_ckpt_path": str(bad), "training_spec": str(spec_file), "train_metric": 1.0})
    outcome = run_loop(rd, cfg, ctx)
    assert outcome.status == "failed"
    assert outcome.message.rstrip().endswith(resume_command(rd)) and "What to fix first:" in outcome.message
    state = load_state(RunDir(rd).deft_state)
    assert state["status"] == "failed" and state["iterations"]["baseline"]["status"] == "failed"
    last = state["events"][-1]
    assert (last["iter"], last["stage"], last["status"]) == ("baseline", "evaluate", "error")
    assert "loop_stop" not in {e["stage"] for e in state["events"]} and "final_artifacts" not in state
    assert next_stage(state) == NextStep("baseline", "halt")
    assert read_jsonl(RunDir(rd).loop_log) == state["events"]
    assert not RunDir(rd).best_model.exists()
    assert resume_command(rd) in RunDir(rd).report.read_text()


@pytest.mark.slow
def test_full_loop_two_iterations(demo_ws, ray_local, tmp_path):
    from raypipe.tracking import child_run, resolve_tracking_uri, start_pipeline_run

    # A KPI no model can meet (FAR < -1 %): the loop always runs both iterations, so iter2 is asserted below.
    cfg = load_config(None, [*FAST, "phase2.max_iterations=2", "phase2.sdg.num_SDG=24",
                             "phase2.metric_contract.target=-1.0"])
    uri = resolve_tracking_uri(str(tmp_path / "mlruns"), tmp_path)
    top = start_pipeline_run(uri, "deft-test", demo_ws / "results" / "run_full", {})
    with child_run(top, "phase2", key="phase2") as p2:
        ctx = _ctx(demo_ws, cfg, tracking=p2.context())
        rd = demo_ws / "results" / "run_full"
        outcome = run_loop(rd, cfg, ctx)
    assert outcome.status == "complete", outcome.message
    state = load_state(RunDir(rd).deft_state)
    assert state["status"] == "complete" and state["completed_at"] and state["final_artifacts"]
    _stage_walk_is_valid(state)
    stages = [(e["iter"], e["stage"]) for e in state["events"]]
    assert stages[-1][1] == "loop_stop" and Counter(stages)[("baseline", "train")] == 1
    assert read_jsonl(RunDir(rd).loop_log) == state["events"]
    _no_duplicate_training_rows(state)
    labels = [lb for lb in state["iterations"]]
    assert labels == ["baseline", "iter1", "iter2"]
    for label in labels:
        e = state["iterations"][label]
        assert e["status"] == "complete" and Path(e["best_ckpt_path"]).is_relative_to((rd / label / "train").resolve())
        assert (rd / label / "inference" / "best_val" / "metric_result.json").is_file()
        assert (rd / label / "inference" / "latest" / "inference.csv").is_file()
    assert not state["iterations"]["iter1"]["metric_result"]["passed"]
    # iteration 2 keeps iteration 1's rows exactly and warm-starts from the best so far
    c1 = pd.read_csv(state["iterations"]["iter1"]["combined_training_csv"], dtype=str, keep_default_na=False)
    c2 = pd.read_csv(state["iterations"]["iter2"]["combined_training_csv"], dtype=str, keep_default_na=False)
    assert c2.iloc[: len(c1)].equals(c1) and len(c2) > len(c1)
    exp = yaml.safe_load(RunDir(rd).iteration("iter2").train.spec.read_text())
    ws_ckpts = {state["iterations"][lb]["best_ckpt_path"] for lb in ("baseline", "iter1")}
    assert exp["train"]["pretrained_model_path"] in ws_ckpts
    assert state["current_iteration"] == 2
    bm = read_json(RunDir(rd).best_model)
    assert bm["iteration"] in state["iterations"] and Path(bm["checkpoint"]).is_file()
    assert RunDir(rd).inference_spec.is_file() and RunDir(rd).report.is_file()
    hist = read_json(RunDir(rd).mining_history)
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
