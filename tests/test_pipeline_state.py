"""``RD/pipeline_state.json``: a complete run is never downgraded."""

from __future__ import annotations

from pathlib import Path

import pytest

from raypipe import pipeline_state


@pytest.mark.parametrize("later", ["failed", "interrupted", "in_progress"])
def test_a_complete_run_stays_complete(tmp_path: Path, later: str) -> None:
    pipeline_state.save(tmp_path, pipeline_state.new_state())
    pipeline_state.set_run_status(tmp_path, "complete")
    pipeline_state.set_run_status(tmp_path, later, error="a later attempt failed")
    state = pipeline_state.load(tmp_path)
    assert state["status"] == "complete" and "error" not in state


def test_an_unfinished_run_takes_any_status(tmp_path: Path) -> None:
    pipeline_state.save(tmp_path, pipeline_state.new_state())
    pipeline_state.set_run_status(tmp_path, "interrupted")
    assert pipeline_state.load(tmp_path)["status"] == "interrupted"
    pipeline_state.set_run_status(tmp_path, "failed", error="boom")
    assert pipeline_state.load(tmp_path)["status"] == "failed"
