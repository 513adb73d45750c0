"""``python -m raypipe.run --dry-run`` and ``--yes`` on bad configs, specs and data: the gate refuses
each before anything starts, naming the file or config key, and writes nothing (a refused ``--yes``
run leaves no ``results/`` either).

The cases run in this process on one private 2-CPU, 0-GPU Ray (a subprocess per case would start
Ray each time); two run as real subprocesses for the faithful exit code and streams.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from raypipe.workspace import TEST_CSV

from ._harness import Case
from ._mutations import SPEC, capture_from, cell, drop_column, image, spec_value, symlink_outside
from ._tools import run_argv

TRAIN, VAL, KPI = "train/base/training_set.csv", "train/base/validation_set.csv", "kpi/testing_set.csv"
B, LABEL, IN = "BLOCKER", "column 'label'", "column 'input_path'"
NOT_A_NUMBER = "expected a number"
DRY_OK = "--dry-run: pre-flight only; nothing written."


@pytest.fixture(scope="module", autouse=True)
def _ray() -> Iterator[None]:
    """One private Ray for the module: 2 CPUs and no GPU, whatever this machine has."""
    from raypipe._ray import ray_session

    with ray_session(num_cpus=2, log_to_driver=False):
        yield


def _key(source: str, key: str) -> tuple[str, str, str]:
    return (B, source, f"key '{key}'")


CASES = [
    # controls: a clean workspace; a label the user mapped; more concurrency than fits (a warning)
    Case("clean", "dry_run", None, 0, (DRY_OK,)),
    Case("label_ok_mapped", "dry_run", cell("train", 3, "label", "OK"), 0, ("label_map: ok→PASS", "mapped copies"),
         args=("label_map.OK=PASS",)),
    Case("concurrency_beyond_the_cluster", "dry_run", None, 0,
         ("warn", "automl.max_concurrent_trials=8", "fits 2 trial(s)", "2 run concurrently"),
         args=("automl.max_concurrent_trials=8",)),
    # feasibility against the Ray cluster (a private local Ray cannot add nodes)
    Case("trial_needs_99_gpus", "dry_run", None, 1,
         (B, "automl.resources_per_trial {cpu: 1, gpu: 99}", "no node can ever run it"),
         args=("automl.resources_per_trial.gpu=99",), subprocess=True),
    Case("trial_needs_64_cpus", "dry_run", None, 1, (B, "automl.resources_per_trial {cpu: 64", "no node can ever"),
         args=("automl.resources_per_trial.cpu=64",)),
    Case("train_stage_needs_a_gpu", "dry_run", None, 1, (B, "phase2.resources.train {cpu: 1, gpu: 1}", "cpu=2, gpu=0"),
         args=("phase2.resources.train.gpu=1",)),
    Case("cpu_stage_needs_8_cpus", "dry_run", None, 1, (B, "phase2.resources.cpu_stage {cpu: 8"),
         args=("phase2.resources.cpu_stage.cpu=8",)),
    # config values: refused when the config is loaded, naming the layer and the key
    Case("max_concurrent_trials_0", "dry_run", None, 1, ("automl.max_concurrent_trials", "greater than or equal to 1"),
         args=("automl.max_concurrent_trials=0",)),
    Case("num_SDG_negative", "dry_run", None, 1, ("phase2.sdg.num_SDG", "got -5"), args=("phase2.sdg.num_SDG=-5",)),
    Case("min_similarity_5", "dry_run", None, 1, ("phase2.mining_filter.min_similarity", "got 5"),
         args=("phase2.mining_filter.min_similarity=5",)),
    Case("device_tpu", "dry_run", None, 1, ("device", "got 'tpu'"), args=("device=tpu",)),
    Case("seed_abc", "dry_run", None, 1, ("seed", "valid integer", "'abc'"), args=("seed=abc",)),
    Case("label_map_to_a_synonym", "dry_run", None, 1, ("override 'label_map.OK=good'", "label_map", "ambiguous"),
         args=("label_map.OK=good",)),
    Case("config_key_typo", "dry_run", None, 1, ("phase2.max_iteration", "did you mean 'phase2.max_iterations'"),
         args=("phase2.max_iteration=2",)),
    Case("search_space_bound_negative", "dry_run", None, 1, ("automl.search_space", "train.optim.lr", "valid_min > 0"),
         args=("automl.search_space={train.optim.lr: {valid_min: -1, valid_max: 0.1, log: true}}",)),
    # spec values: the backend's rules at the gate, naming the spec file or the config section
    Case("spec_lr_fast", "dry_run", spec_value("train.optim.lr", "fast"), 1,
         (*_key(SPEC, "train.optim.lr"), NOT_A_NUMBER, "'fast'"), subprocess=True),
    Case("spec_cls_weight_heavy", "dry_run", spec_value("train.classify.cls_weight", "heavy"), 1,
         (*_key(SPEC, "train.classify.cls_weight"), "'heavy'")),
    Case("spec_rgb_std_zero", "dry_run", spec_value("dataset.classify.augmentation_config.rgb_input_std", [0, 0, 0]),
         1, (*_key(SPEC, "dataset.classify.augmentation_config.rgb_input_std"), "must be > 0")),
    Case("spec_epochs_negative", "dry_run", None, 1,
         ("config spec_overrides", "key 'train.num_epochs'", "≥ 1, got -2"),
         args=("spec_overrides={train.num_epochs: -2}",)),
    Case("spec_checkpoint_interval_zero", "dry_run", spec_value("train.checkpoint_interval", 0), 1,
         (*_key(SPEC, "train.checkpoint_interval"), "≥ 1, got 0")),
    Case("spec_batch_size_zero", "dry_run", None, 1, (*_key("config spec_overrides", "dataset.classify.batch_size"),),
         args=("spec_overrides.dataset.classify.batch_size=0",)),
    Case("spec_momentum_1_5", "dry_run", spec_value("train.optim.momentum", 1.5), 1,
         (*_key(SPEC, "train.optim.momentum"), "[0, 1)")),
    Case("spec_loss_focal", "dry_run", spec_value("train.classify.loss", "focal"), 1,
         (*_key(SPEC, "train.classify.loss"), "expected one of ce")),
    Case("spec_weight_decay_negative", "dry_run", spec_value("train.optim.weight_decay", -0.1), 1,
         (*_key(SPEC, "train.optim.weight_decay"), "got -0.1")),
    Case("loop_epochs_zero", "dry_run", None, 1, (*_key("config phase2.train_overrides", "train.num_epochs"), "got 0"),
         args=("phase2.train_overrides={train.num_epochs: 0}",)),
    Case("search_space_momentum_above_1", "dry_run", None, 1,
         (B, "automl.search_space: key 'train.optim.momentum'", "could sample 1.5"),
         args=("automl.search_space.train.optim.momentum={valid_min: 0.5, valid_max: 1.5}",)),
    # data the gate opens: the workspace check's full report as BLOCKERs
    Case("train_without_label_column", "dry_run", drop_column("train", "label"), 1, (B, TRAIN, LABEL, "missing")),
    Case("kpi_without_label_column", "dry_run", drop_column("kpi", "label"), 1, (B, KPI, LABEL, "missing")),
    Case("truncated_image", "dry_run", image("train", 2, "truncate"), 1, (B, TRAIN, "row 2", IN, "truncated")),
    Case("zero_byte_image", "dry_run", image("validation", 3, "empty", "golden_path"), 1,
         (B, VAL, "row 3", "is empty (0 bytes)")),
    Case("decompression_bomb", "dry_run", image("pool", 1, "bomb"), 1, (B, "row 1", "decompression bomb")),
    Case("image_symlinked_outside", "dry_run", symlink_outside("train", 4), 1,
         (B, TRAIN, "row 4", "is a symlink to", "outside")),
    Case("kpi_image_copied_into_train", "dry_run", capture_from("kpi", 2, "train", 5), 1,
         (B, TRAIN, "row 5", "same bytes as KPI capture")),
    Case("kpi_image_symlinked_into_train", "dry_run", capture_from("kpi", 1, "train", 3, via="symlink"), 1,
         (B, TRAIN, "row 3", "is a KPI capture file")),
    Case("label_PASSED", "dry_run", cell("kpi", 2, "label", "PASSED"), 1, (B, KPI, "row 2", LABEL, "reads as PASS")),
    Case("label_OK", "dry_run", cell("train", 3, "label", "OK"), 1, (B, TRAIN, "row 3", "reads as PASS")),
    Case("label_good", "dry_run", cell("validation", 1, "label", "good"), 1, (B, VAL, "row 1", "reads as PASS")),
    Case("label_nan", "dry_run", cell("train", 4, "label", "nan"), 1, (B, TRAIN, "row 4", "is a missing value")),
    Case("label_null_in_sealed_test", "dry_run", cell("test", 1, "label", "null"), 1,
         (B, TEST_CSV, "row 1", "is a missing value")),
    Case("workspace_missing", "dry_run", None, 1, ("nowhere", "does not exist"),
         argv=("--workspace", "{dir}/nowhere", "--dry-run")),
    Case("dry_run_never_generates_the_demo", "dry_run", None, 1, ("does not exist", "generates the embedded demo"),
         argv=("--dry-run",)),
    # --yes: the same refusals, and no results/ left behind by the refused run
    Case("yes_trial_needs_99_gpus", "run_yes", None, 1, (B, "automl.resources_per_trial", "gpu: 99"),
         args=("automl.resources_per_trial.gpu=99",)),
    Case("yes_spec_lr_fast", "run_yes", spec_value("train.optim.lr", "fast"), 1, (*_key(SPEC, "train.optim.lr"),)),
    Case("yes_label_OK", "run_yes", cell("kpi", 4, "label", "OK"), 1, (B, KPI, "row 4", "reads as PASS")),
    Case("yes_truncated_image", "run_yes", image("kpi", 3, "truncate", "golden_path"), 1,
         (B, KPI, "row 3", "truncated"), subprocess=True),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(case: Case, run_case: Callable[[Case], None]) -> None:
    run_case(case)


def test_dry_run_reports_the_run_holding_the_workspace(templates: dict[str, Path], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """``--dry-run`` takes no lock; it names the run that holds one (here: this process, by another
    open file, as a second run would see it)."""
    from raypipe._lock import WorkspaceLock
    from raypipe.run import main

    ws = tmp_path / "ws"
    shutil.copytree(templates["workspace"], ws)
    lock = WorkspaceLock(ws)
    lock.acquire(run_dir=ws / "results" / "run_20260101_000000")
    try:
        code = main(run_argv("--dry-run")(tmp_path))
    finally:
        lock.release()
    out = capsys.readouterr().out
    assert code == 0
    assert f"workspace in use by another raypipe run: PID {os.getpid()}" in out
    assert "run_20260101_000000" in out and "a run started now would be refused" in out
