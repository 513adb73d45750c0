"""``raypipe.rundir``: the one catalog of run-dir paths, and iteration labels parsed and ordered in one place."""

from __future__ import annotations

from pathlib import Path

import pytest

from raypipe.rundir import (
    RunDir,
    is_loop_label,
    iteration_label,
    iteration_number,
    ordered_labels,
    provenance_of,
    resume_command,
)


def test_labels_are_ordered_numerically_with_final_automl_last() -> None:
    labels = ["iter10", "final_automl", "iter2", "baseline", "iter9"]
    assert ordered_labels(labels) == ["baseline", "iter2", "iter9", "iter10", "final_automl"]
    assert ordered_labels(labels, include_final=False) == ["baseline", "iter2", "iter9", "iter10"]
    assert [iteration_number(lb) for lb in ("baseline", "iter1", "iter12")] == [0, 1, 12]
    assert iteration_label(0) == "baseline" and iteration_label(3) == "iter3"
    assert is_loop_label("iter3") and is_loop_label("baseline") and not is_loop_label("final_automl")


@pytest.mark.parametrize("bad", ["iter0", "iter01", "iteration1", "Baseline", "final", ""])
def test_malformed_labels_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="bad iteration label"):
        iteration_number(bad)
    with pytest.raises(ValueError):
        RunDir("/rd").iteration(bad)


def test_tao_layout_of_one_iteration() -> None:
    rd = RunDir("/ws/results/run_20260101_000000")
    it = rd.iteration("iter2")
    assert it.train.path == Path("/ws/results/run_20260101_000000/iter2/train")
    assert it.inference("latest").metric_result.as_posix().endswith("iter2/inference/latest/metric_result.json")
    assert it.dataset.combined_csv.name == "train_combined_iter2.csv"
    assert it.dataset.provenance_csv == provenance_of(it.dataset.combined_csv)
    assert it.dataset.provenance_csv.name == "train_combined_iter2_provenance.csv"
    assert it.dataset.synthetic_ng.as_posix().endswith("iter2/dataset/images/synthetic_iter2_ng")
    assert it.mining.sdg_rows_raw.as_posix().endswith("iter2/mining_filter/sdg_rows_raw.csv")
    assert it.sdg.allocation_json.as_posix().endswith("iter2/anomalygen/sdg/allocation.json")
    assert rd.sweep("phase1").best_rec.as_posix().endswith("phase1_automl/best_rec.json")
    assert rd.sweep("phase3").path.name == "final_automl" and rd.sweep("phase3").name == "final_automl"
    assert rd.baseline_spec_automl.as_posix().endswith("run_20260101_000000/specs/baseline_spec_automl.yaml")
    assert rd.test == rd.root / "test"
    assert rd.sealed_test("iter2").result == rd.root / "test" / "iter2" / "test_result.json"
    assert rd.sealed_test("phase1_best").inference_csv == rd.root / "test" / "phase1_best" / "inference.csv"
    with pytest.raises(ValueError, match="bad trajectory step"):
        rd.sealed_test("../iter1")


def test_every_path_lies_in_the_run_dir() -> None:
    rd = RunDir("/ws/results/run_x")
    it = rd.iteration("iter1")
    paths = [*rd.deliverables(), rd.pipeline_state, rd.run_spec, rd.loop_log, rd.mining_history, rd.placement,
             rd.deft_state_lock, rd.baseline_spec_automl, *it.mining.mining_outputs(), *it.dataset.merge_outputs(),
             rd.sweep("phase1").sampler_log, rd.sweep("phase3").best_spec, rd.sealed_test("baseline").result]
    assert all(p.is_relative_to(rd.root) for p in paths)
    assert len(set(paths)) == len(paths)


def test_create_is_exclusive(tmp_path: Path) -> None:
    first = RunDir.create(tmp_path, now=0.0)
    second = RunDir.create(tmp_path, now=0.0)
    assert first.root != second.root and first.root.is_dir() and second.root.is_dir()
    assert first.root.parent == (tmp_path / "results").resolve() and first.root.name.startswith("run_")
    assert resume_command(first) == f"python -m raypipe.run --resume {first.root}"


def test_create_with_its_starting_files_in_one_step(tmp_path: Path) -> None:
    """The run dir appears with its files or not at all: they are written under a hidden staging
    name and renamed into place; a staging dir whose creator is gone is removed by the next creator."""
    seen: list[tuple[Path, Path]] = []

    def populate(staging: RunDir, final: RunDir) -> None:
        seen.append((staging.root, final.root))
        assert not final.root.exists()
        (staging.root / "config.yaml").write_text(f"run_dir: {final.root}\n")

    results = tmp_path / "results"
    results.mkdir()
    dead = results / ".run_20200101_000000.999999999.partial"  # no such PID
    dead.mkdir()
    rd = RunDir.create(tmp_path, now=0.0, populate=populate)
    (staging, final), = seen
    assert final == rd.root and staging.parent == rd.root.parent and staging.name.startswith(".run_")
    assert (rd.root / "config.yaml").read_text() == f"run_dir: {rd.root}\n"
    assert sorted(p.name for p in results.iterdir()) == [rd.root.name]
    # the next one takes the next free name
    assert RunDir.create(tmp_path, now=0.0, populate=populate).root != rd.root
