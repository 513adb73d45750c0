"""How a user opens a run in MLflow's UI: the command that serves a local store, and the link.

MLflow 3.17's UI shows an experiment in its GenAI (traces) view or its model-training view
(runs table, metrics, charts) by a switch the browser remembers, GenAI unless changed; the
experiment's ``mlflow.experimentKind`` tag does not decide it there. A link carrying
``workflowType=machine_learning`` opens the model-training view whatever the switch says.
"""

from __future__ import annotations

import shlex

from raypipe.tracking._context import TrackingContext, sqlite_path

DEFAULT_PORT = 5000
_VIEW = "workflowType=machine_learning"


def ui_command(tracking_uri: str, port: int = DEFAULT_PORT) -> str | None:
    """The shell command that serves a local sqlite store's UI on this machine (loopback only);
    None for a tracking server, which already serves its own UI."""
    db = sqlite_path(tracking_uri)
    if db is None:
        return None
    # The job executor and extra workers are for GenAI jobs; without them the UI is 2 processes, ~0.5 GB.
    return (f"MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui --backend-store-uri "
            f"{shlex.quote('sqlite:///' + str(db))} --host 127.0.0.1 --port {port} --workers 1")


def ui_url(ctx: TrackingContext, run_id: str | None = None, port: int = DEFAULT_PORT) -> str | None:
    """Link to a run (default: the run ``ctx`` nests under, the pipeline run for the top-level
    context) in the model-training view; None with tracking off."""
    if not ctx.active:
        return None
    base = f"http://127.0.0.1:{port}" if sqlite_path(ctx.tracking_uri) else ctx.tracking_uri.rstrip("/")
    run = run_id or ctx.parent_run_id
    path = f"#/experiments/{ctx.experiment_id}" + (f"/runs/{run}" if run else "")
    return f"{base}/{path}?{_VIEW}"
