"""raypipe.tracking against a real ``mlflow server`` (tracking_uri = http://...).

The server is the one process this test starts; it is stopped by its PID with SIGTERM.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from raypipe.tracking import (
    PARENT_TAG,
    RUN_DIR_TAG,
    child_run,
    end_pipeline_run,
    pipeline_logger,
    resolve_tracking_uri,
    start_pipeline_run,
)
from tests.tracking._server import post_json, running_mlflow_server

pytestmark = pytest.mark.slow  # the server needs ~13 s to answer /health


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    with running_mlflow_server(f"sqlite:///{tmp_path}/server.db", tmp_path / "server_artifacts", tmp_path) as url:
        yield url


def test_nested_runs_through_a_tracking_server(mlflow_server: str, tmp_path: Path) -> None:
    uri = resolve_tracking_uri(mlflow_server, tmp_path)
    assert uri == mlflow_server
    run_dir = tmp_path / "ws" / "results" / "run_20250101_000000"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("seed: 42\n")

    ctx = start_pipeline_run(uri, "raypipe-aoi", run_dir, {"raypipe.backend": "builtin"})
    pipeline_logger(ctx).log_artifact(run_dir / "config.yaml")
    with child_run(ctx, "phase1", key="phase1") as phase:
        for trial in range(2):
            with child_run(phase.context(), f"trial_{trial:05d}", key=f"phase1/trial_{trial:05d}", params={"train.optim.lr": 0.01}) as t:
                for epoch in range(2):
                    t.log_metrics({"val_loss": 1.0 / (epoch + 1)}, step=epoch)
    # resume through the server: same parent, same child
    assert start_pipeline_run(uri, "raypipe-aoi", run_dir, {}) == ctx
    with child_run(phase.context(), "trial_00000", key="phase1/trial_00000"):
        pass
    end_pipeline_run(ctx, "FINISHED")

    search = f"{mlflow_server}/api/2.0/mlflow/runs/search"
    parents = post_json(search, {"experiment_ids": [ctx.experiment_id], "filter": f"tags.`{RUN_DIR_TAG}` = '{run_dir}'"})["runs"]
    assert [r["info"]["run_id"] for r in parents] == [ctx.parent_run_id]
    assert parents[0]["info"]["status"] == "FINISHED"
    phases = post_json(search, {"experiment_ids": [ctx.experiment_id], "filter": f"tags.`{PARENT_TAG}` = '{ctx.parent_run_id}'"})["runs"]
    assert [r["info"]["run_name"] for r in phases] == ["phase1"]
    trials = post_json(search, {"experiment_ids": [ctx.experiment_id], "filter": f"tags.`{PARENT_TAG}` = '{phase.run_id}'"})["runs"]
    assert sorted(r["info"]["run_name"] for r in trials) == ["trial_00000", "trial_00001"]
    for r in trials:
        assert r["info"]["status"] == "FINISHED"
        # the latest epoch, and the lowest so far beside it
        assert {m["key"]: m["value"] for m in r["data"]["metrics"]} == {"val_loss": 0.5, "best_val_loss": 0.5}
        assert {p["key"]: p["value"] for p in r["data"]["params"]} == {"train.optim.lr": "0.01"}
    # artifacts went through the server's proxy into its artifacts destination
    assert list((tmp_path / "server_artifacts").rglob("config.yaml"))
