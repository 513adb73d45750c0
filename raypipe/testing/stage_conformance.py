"""Conformance checks every DEFT :class:`~raypipe.deft.stages.Stage` must pass.

A stage is held to its own contract through the same path the loop uses (``commit``): it declares
its name, resources and a ``TypedDict`` evidence; it accepts a valid evidence; it rejects a missing
file, a missing or unknown key, and every wrong evidence its case names (e.g. a count that does not
match the file) — each time leaving ``deft_state.json`` and ``loop_log.jsonl`` byte-identical; its
summary is one line.

Two ways to use it:

* Subclass :class:`StageConformance`, set ``stage`` and implement ``make_case``; pytest collects
  its ``test_*`` methods.
* Call the ``check_*`` functions with a :class:`StageCase`; :func:`builtin_case` builds one for each
  stage raypipe ships (small real files, no mocks).

>>> class TestMyStage(StageConformance):                 # doctest: +SKIP
...     stage = MyStage()
...     def make_case(self, rd): return StageCase(...)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pytest

from raypipe import tao_interop as ti
from raypipe.deft.errors import EvidenceError
from raypipe.deft.stages import REGISTRY, ResourceClass, Stage, StageRegistry
from raypipe.deft.state import commit, initialise_state, load_state
from raypipe.metrics import MetricContract, run_evaluator
from raypipe.rundir import BASELINE, RunDir


@dataclass
class StageCase:
    """A state, an iteration label and a valid evidence of the stage, plus evidences it must reject."""

    rd: RunDir  # a run dir whose deft_state.json is ``state``
    label: str
    evidence: dict[str, Any]
    wrong: dict[str, dict[str, Any]] = field(default_factory=dict)  # what is wrong → an evidence to reject

    @property
    def state(self) -> dict[str, Any]:
        return load_state(self.rd.deft_state)


# -- the checks ---------------------------------------------------------------------------------------


def check_declaration(stage: Stage) -> None:
    """Name, resources and a TypedDict evidence whose file fields are among its keys."""
    assert isinstance(stage.name, str) and stage.name.isidentifier(), f"bad stage name {stage.name!r}"
    assert isinstance(stage.resources, ResourceClass), f"{stage.name}: resources must be a ResourceClass"
    for skipped in (False, True):
        if skipped and stage.skipped_evidence is None:
            continue
        required, optional = stage.allowed_keys(skipped=skipped)
        assert required, f"{stage.name}: the evidence TypedDict has no required key"
        assert not required & optional
        assert stage.file_keys(skipped=skipped) <= required | optional
    if stage.skipped_evidence is not None:
        assert stage.skip_key == f"{stage.name}_skipped", f"{stage.name}: the skip key must be {stage.name}_skipped"


def _commit(case: StageCase, stage: Stage, evidence: Any) -> dict[str, Any]:
    return commit(case.rd.deft_state, case.label, stage.name, evidence, duration_s=1.0, summary="conformance",
                  registry=REGISTRY.with_stages(stage) if stage.name in REGISTRY else _alone(stage))


def _alone(stage: Stage) -> StageRegistry:
    """A registry for a stage raypipe does not ship (a plugin under test)."""
    stages = tuple(REGISTRY.iteration) + (stage,)
    return StageRegistry(stages, REGISTRY.stop)


def check_rejected(stage: Stage, case: StageCase, evidence: Any, why: str) -> EvidenceError:
    """The commit refuses ``evidence`` with an error naming the stage and iteration; nothing on disk changes."""
    before = case.rd.deft_state.read_bytes()
    log_before = case.rd.loop_log.read_bytes() if case.rd.loop_log.exists() else b""
    with pytest.raises(EvidenceError) as info:
        _commit(case, stage, evidence)
    err = info.value
    assert (err.stage, err.label) == (stage.name, case.label), f"{why}: the error names {err.stage}/{err.label}"
    assert case.rd.deft_state.read_bytes() == before, f"{why}: deft_state.json changed"
    assert (case.rd.loop_log.read_bytes() if case.rd.loop_log.exists() else b"") == log_before, \
        f"{why}: loop_log.jsonl changed"
    return err


def check_accepts(stage: Stage, case: StageCase) -> dict[str, Any]:
    """A valid evidence validates, survives JSON, and commits one ok event."""
    stored = stage.validate(case.state, case.label, case.evidence)
    assert set(stored) == set(case.evidence), f"{stage.name}: validate dropped or added keys"
    json.dumps(stored)  # what the state stores is JSON
    state = _commit(case, stage, case.evidence)
    event = state["events"][-1]
    assert (event["iter"], event["stage"], event["status"]) == (case.label, stage.name, "ok")
    return stored


def check_summary(stage: Stage, case: StageCase) -> str:
    """The event's summary: one non-empty line."""
    state = case.state
    text = stage.summary(state, case.label, stage.validate(state, case.label, case.evidence))
    assert isinstance(text, str) and text.strip(), f"{stage.name}: empty summary"
    assert "\n" not in text and "\r" not in text, f"{stage.name}: the summary must be one line: {text!r}"
    return text


def check_rejects_missing_files(stage: Stage, case: StageCase) -> None:
    for key in sorted(stage.file_keys() & set(case.evidence)):
        bad = {**case.evidence, key: str(case.rd.root / "no_such_dir" / Path(str(case.evidence[key])).name)}
        err = check_rejected(stage, case, bad, f"missing file '{key}'")
        assert key in str(err), f"{stage.name}: the error does not name '{key}': {err}"


def check_rejects_bad_keys(stage: Stage, case: StageCase) -> None:
    required, _ = stage.allowed_keys()
    for key in sorted(required & set(case.evidence)):
        bad = {k: v for k, v in case.evidence.items() if k != key}
        check_rejected(stage, case, bad, f"missing key '{key}'")
    check_rejected(stage, case, {**case.evidence, "no_such_field": 1}, "unknown key")
    check_rejected(stage, case, [case.evidence], "not a mapping")


def check_rejects_wrong(stage: Stage, case: StageCase) -> None:
    assert case.wrong, f"{stage.name}: the case names no wrong evidence (a count, a path, a value)"
    for why, evidence in case.wrong.items():
        check_rejected(stage, case, evidence, why)


class StageConformance:
    """pytest base class: ``stage`` and ``make_case(rd)``; every ``test_*`` gets a fresh case."""

    stage: Stage

    def make_case(self, rd: RunDir) -> StageCase:
        raise NotImplementedError

    def _case(self, tmp_path: Path) -> StageCase:
        return self.make_case(RunDir(tmp_path / "results" / "run_20260101_000000"))

    def test_declaration(self) -> None:
        check_declaration(self.stage)

    def test_accepts_its_evidence(self, tmp_path: Path) -> None:
        check_accepts(self.stage, self._case(tmp_path))

    def test_summary_is_one_line(self, tmp_path: Path) -> None:
        check_summary(self.stage, self._case(tmp_path))

    def test_rejects_missing_files(self, tmp_path: Path) -> None:
        check_rejects_missing_files(self.stage, self._case(tmp_path))

    def test_rejects_missing_and_unknown_keys(self, tmp_path: Path) -> None:
        check_rejects_bad_keys(self.stage, self._case(tmp_path))

    def test_rejects_wrong_evidence(self, tmp_path: Path) -> None:
        check_rejects_wrong(self.stage, self._case(tmp_path))


# -- cases for the stages raypipe ships -----------------------------------------------------------

SPEC: dict[str, Any] = {
    "train": {"num_epochs": 1, "optim": {"lr": 1e-4}},
    "model": {"backbone": {"type": "builtin_siamese"}, "classify": {"eval_margin": 0.5}},
    "dataset": {"classify": {"batch_size": 16, "image_ext": ".png", "input_map": {"LowAngleLight": 0}}},
}


def _write(path: Path, data: bytes | str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8")
    return str(path.resolve())


def _ckpt(rd: RunDir, label: str, epoch: int = 1, step: int = 10) -> str:
    return _write(rd.iteration(label).train.path / f"model_epoch_{epoch:03d}_step_{step:05d}.pth", b"weights")


def _spec(rd: RunDir, label: str) -> str:
    import yaml

    return _write(rd.iteration(label).train.spec, yaml.safe_dump(SPEC))


def _parquet(path: Path, n: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"filepath": [f"f{i}" for i in range(n)], "label": ["MISSING"] * n,
                  "weakness": np.linspace(0, 1, n)}).to_parquet(path, index=False)
    return str(path.resolve())


def _rows_csv(path: Path, n: int, **extra: list[Any]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"input_path": [f"d{i}" for i in range(n)], "golden_path": "g", "label": "PASS",
                  "object_name": "o", **extra}).to_csv(path, index=False)
    return str(path.resolve())


def new_run(rd: RunDir) -> RunDir:
    """A run dir with a v4 state whose baseline was pre-seeded (as Phase 1 hands it over)."""
    rd.root.mkdir(parents=True, exist_ok=True)
    initialise_state(rd.root, config_block={"images_dir": str(rd.root / "images")}, metric_contract=MetricContract(),
                     max_iterations=3, execution_policy=ti.execution_policy("airgap", activation_source="test"),
                     baseline={"best_ckpt_path": _ckpt(rd, BASELINE, 2, 20), "training_spec": _spec(rd, BASELINE),
                               "source": "automl_phase1", "train_metric": 12.0})
    return RunDir(rd.root.resolve())


def evaluated(rd: RunDir, label: str, ckpt: str, pass_scores: list[float]) -> dict[str, Any]:
    """An evaluate evidence from a real inference CSV and the real evaluator (defects score 0.9)."""
    out = rd.iteration(label).inference("best_val")
    n_def = 3
    csv = _rows_csv(out.inference_csv, len(pass_scores) + n_def, siamese_score=list(pass_scores) + [0.9] * n_def)
    df = pd.read_csv(csv)
    df.loc[len(pass_scores):, "label"] = "MISSING"
    df.to_csv(csv, index=False)
    result = run_evaluator(MetricContract(), Path(csv), out.metric_result, label)
    return {"best_ckpt_path": ckpt, "inference_csv": csv, "metric_result": result, "threshold": result["threshold"],
            "far_pct": result["value"], "training_spec": _spec(rd, label)}


def _train(rd: RunDir) -> StageCase:
    ev = {"best_ckpt_path": _ckpt(rd, "iter1"), "training_spec": _spec(rd, "iter1"), "best_ckpt_kind": "best_val",
          "val_loss": 0.3, "num_epochs": 1, "train_rows": 12}
    baseline_ckpt = load_state(rd.deft_state)["iterations"][BASELINE]["best_ckpt_path"]
    return StageCase(rd, "iter1", ev, wrong={
        "checkpoint outside RD/iter1/train": {**ev, "best_ckpt_path": _ckpt(rd, BASELINE, 5, 50)},
        "zero-step checkpoint": {**ev, "best_ckpt_path": _ckpt(rd, "iter1", 0, 0)},
        "another iteration's checkpoint": {**ev, "best_ckpt_path": baseline_ckpt},
        "non-finite val_loss": {**ev, "val_loss": float("nan")}})


def _evaluate(rd: RunDir) -> StageCase:
    ckpt = load_state(rd.deft_state)["iterations"][BASELINE]["best_ckpt_path"]
    ev = evaluated(rd, BASELINE, ckpt, [0.1, 0.95, 0.2])
    return StageCase(rd, BASELINE, ev, wrong={
        "value differs from metric_result.json": {**ev, "metric_result": {**ev["metric_result"], "value": 0.0}},
        "metric of another contract": {**ev, "metric_result": {**ev["metric_result"], "name": "accuracy"}},
        "checkpoint outside the iteration's train dir": {**ev, "best_ckpt_path": _ckpt(rd, "iter2")}})


def _rca(rd: RunDir) -> StageCase:
    ev = {"rca_gaps_parquet": _parquet(rd.iteration(BASELINE).rca("T").gaps_parquet, 4), "rca_threshold": 0.5,
          "rca_target_defects": ["MISSING"]}
    return StageCase(rd, BASELINE, ev, wrong={
        "targets not a list of labels": {**ev, "rca_target_defects": "MISSING"},
        "non-finite threshold": {**ev, "rca_threshold": float("inf")},
        "gaps file is not parquet": {**ev, "rca_gaps_parquet": _write(rd.root / "gaps.parquet", "not parquet")}})


def _routing(rd: RunDir) -> StageCase:
    out = rd.iteration("iter1").routing("T")
    ev = {"routing_mining_parquet": _parquet(out.mining_gaps, 2), "routing_anomalygen_parquet":
          _parquet(out.anomalygen_gaps, 0), "routing_summary": _write(out.summary, "routing\n")}
    return StageCase(rd, "iter1", ev, wrong={
        "mining subset is not parquet": {**ev, "routing_mining_parquet": _write(rd.root / "m.parquet", "x")}})


def _anomalygen(rd: RunDir) -> StageCase:
    it = rd.iteration("iter1")
    ev = {"anomalygen_sdg_csv": _write(it.sdg.result_csv, "file,label\na.png,MISSING\nb.png,MISSING\n"),
          "anomalygen_allocation_json": _write(it.sdg.allocation_json, json.dumps({"PCB+MISSING": 2})),
          "anomalygen_amp_allocated": 2, "anomalygen_sdg_rows_csv": _rows_csv(it.mining.sdg_rows_raw, 2)}
    return StageCase(rd, "iter1", ev, wrong={
        "count differs from allocation.json": {**ev, "anomalygen_amp_allocated": 3},
        "empty SDG_result.csv": {**ev, "anomalygen_sdg_csv": _write(it.path / "empty.csv", "file,label\n")},
        "skipped with other fields": {"anomalygen_skipped": True, "anomalygen_amp_allocated": 2},
        "skip flag not true": {**ev, "anomalygen_skipped": False}})


def _data_mining(rd: RunDir) -> StageCase:
    m = rd.iteration("iter1").mining
    ev = {"mining_mined_parquet": _parquet(m.mined, 2), "mining_candidate_parquet": _parquet(m.candidates, 5),
          "mining_summary": _write(m.knn_summary, "candidate_count,kept_count\n5,2\n"),
          "mining_history_summary": _write(m.history_summary, "{}"),
          "mining_target_embeddings": _parquet(m.target_embeddings, 3),
          "mining_source_embeddings": _parquet(m.source_embeddings, 9), "mining_mined_count": 2,
          "mining_pool_csv": _rows_csv(m.mining_pool, 2)}
    return StageCase(rd, "iter1", ev, wrong={
        "count differs from mined.parquet": {**ev, "mining_mined_count": 3},
        "negative count": {**ev, "mining_mined_count": -1},
        "count not an integer": {**ev, "mining_mined_count": 2.0}})


def _data_merge(rd: RunDir) -> StageCase:
    d = rd.iteration("iter1").dataset
    report = {"status": "passed", "rows_checked": 3, "missing_file_count": 0, "train_val_leakage_overlap_count": 0,
              "kpi_overlap_count": 0}
    ev = {"combined_training_csv": _rows_csv(d.combined_csv, 3), "provenance_csv": _rows_csv(d.provenance_csv, 3),
          "merge_validation_report": _write(d.merge_validation, json.dumps(report))}
    return StageCase(rd, "iter1", ev, wrong={
        "provenance rows differ": {**ev, "provenance_csv": _rows_csv(d.path / "short.csv", 2)},
        "KPI overlap reported": {**ev, "merge_validation_report": _write(
            d.path / "leaky.json", json.dumps({**report, "kpi_overlap_count": 1}))},
        "rows_checked differs": {**ev, "merge_validation_report": _write(
            d.path / "miscounted.json", json.dumps({**report, "rows_checked": 2}))}})


def _loop_stop(rd: RunDir) -> StageCase:
    state = load_state(rd.deft_state)
    ckpt = state["iterations"][BASELINE]["best_ckpt_path"]
    commit(rd.deft_state, BASELINE, "evaluate", evaluated(rd, BASELINE, ckpt, [0.1, 0.2]), duration_s=1,
           summary="evaluated")
    ev = {"final_artifacts": {"best_model_json": _write(rd.best_model, "{}"),
                              "inference_spec": _write(rd.inference_spec, "model: {}\n")}}
    return StageCase(rd, BASELINE, ev, wrong={
        "artifacts not a mapping": {"final_artifacts": str(rd.best_model)},
        "inference spec missing": {"final_artifacts": {"best_model_json": str(rd.best_model)}}})


BUILTIN_CASES: dict[str, Callable[[RunDir], StageCase]] = {
    "train": _train, "evaluate": _evaluate, "rca": _rca, "routing": _routing, "anomalygen": _anomalygen,
    "data_mining": _data_mining, "data_merge": _data_merge, "loop_stop": _loop_stop,
}


def builtin_case(name: str, rd: RunDir) -> StageCase:
    """A case for the stage ``name`` that raypipe ships, in a fresh run dir ``rd``."""
    return BUILTIN_CASES[name](new_run(rd))


__all__ = [
    "BUILTIN_CASES", "StageCase", "StageConformance", "builtin_case", "check_accepts", "check_declaration",
    "check_rejected", "check_rejects_bad_keys", "check_rejects_missing_files", "check_rejects_wrong",
    "check_summary", "evaluated", "new_run",
]
