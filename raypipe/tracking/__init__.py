"""MLflow tracking for raypipe — the only module that imports mlflow (SPEC §11).

One parent run per pipeline run → phase runs → trial / iteration runs, all addressed by id
through ``MlflowClient`` so Ray workers log through a small picklable ``TrackingContext``.
Lineage of every checkpoint lives in ``RD/lineage.json``; the delivered model is registered
with its lineage. Every param/tag/metric/artifact passes the secrets guard.

Example::

    ctx = start_pipeline_run(resolve_tracking_uri(None, Path.cwd()), "raypipe-aoi", rd, {})
    with child_run(ctx, "phase1", key="phase1") as phase:
        with child_run(phase.context(), "trial_00000", key="phase1/trial_00000", params=hps) as t:
            t.log_metrics({"val_loss": 0.3}, step=1)
    end_pipeline_run(ctx, "FINISHED")
"""

from __future__ import annotations

from raypipe.tracking._context import (
    KEY_TAG,
    PARENT_TAG,
    RUN_DIR_TAG,
    TrackingContext,
    resolve_tracking_uri,
)
from raypipe.tracking._lineage import (
    LINEAGE_FILE,
    LineageError,
    data_digest,
    lineage_chain,
    read_lineage,
    record_lineage,
    validate_record,
)
from raypipe.tracking._registry import DEFAULT_MODEL_NAME, model_version_lineage, register_model
from raypipe.tracking._runs import (
    RunLogger,
    child_run,
    end_open_runs,
    end_pipeline_run,
    log_lineage_artifact,
    pipeline_logger,
    start_pipeline_run,
)
from raypipe.tracking._secrets import is_credential_name, secret_values

__all__ = [
    "DEFAULT_MODEL_NAME",
    "KEY_TAG",
    "LINEAGE_FILE",
    "PARENT_TAG",
    "RUN_DIR_TAG",
    "LineageError",
    "RunLogger",
    "TrackingContext",
    "child_run",
    "data_digest",
    "end_open_runs",
    "end_pipeline_run",
    "is_credential_name",
    "lineage_chain",
    "log_lineage_artifact",
    "model_version_lineage",
    "pipeline_logger",
    "read_lineage",
    "record_lineage",
    "register_model",
    "resolve_tracking_uri",
    "secret_values",
    "start_pipeline_run",
    "validate_record",
]
