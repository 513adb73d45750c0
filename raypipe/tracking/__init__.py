"""MLflow tracking for raypipe: the only package that imports mlflow.

One parent run per pipeline run → phase runs → trial / iteration runs, all addressed by id
through ``MlflowClient`` so Ray workers log through a small picklable ``TrackingContext``.
Lineage of every checkpoint lives in ``RD/lineage.json``; the delivered model is registered
with its lineage and the run's verdict. Every param/tag/metric/artifact passes the secrets guard.
A local sqlite store is created crash-safely (``ensure_store``).

Importing this package is cheap: each name is loaded from its module on first use, so a Ray
worker unpickling a ``TrackingContext``, or run.py calling ``set_mlflow_verbosity`` before
anything else, does not import MLflow.

Example::

    set_mlflow_verbosity(verbose=False)
    ctx = start_pipeline_run(resolve_tracking_uri(None, Path.cwd()), "raypipe-aoi", rd, {})
    with child_run(ctx, "phase1", key="phase1") as phase:
        name, key = trial_run_names("phase1", "00000")
        with child_run(phase.context(), name, key=key, params=hps) as t:
            t.log_metrics({"val_far": 12.5, "val_loss": 0.3}, step=1)  # also logs best_val_far
        log_trial_result(phase.context(), "phase1", "00000", status="complete", best_val_far=12.5,
                         checkpoint=ckpt, trial_dir=trial_dir)
    log_outcome(ctx, best_model, trajectory)
    end_pipeline_run(ctx, "FINISHED")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: The public names, by the module that defines them; each is imported on first use (__getattr__).
_EXPORTS = {
    "_context": ("KEY_TAG", "PARENT_TAG", "RUN_DIR_TAG", "TrackingContext", "resolve_tracking_uri"),
    "_lineage": ("LINEAGE_FILE", "LineageError", "data_digest", "lineage_chain", "read_lineage",
                 "record_lineage", "validate_record"),
    "_outcome": ("KPI_MET", "KPI_NOT_MET", "VERDICT_TAG", "log_outcome", "log_trial_result", "trial_run_names"),
    "_registry": ("DEFAULT_MODEL_NAME", "model_version_lineage", "register_model"),
    "_runs": ("RunLogger", "child_run", "end_open_runs", "end_pipeline_run", "log_lineage_artifact",
              "pipeline_logger", "start_pipeline_run"),
    "_secrets": ("is_credential_name", "secret_values"),
    "_store": ("StoreError", "ensure_store", "inspect_store"),
    "_ui": ("ui_command", "ui_url"),
    "_verbosity": ("set_mlflow_verbosity",),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

if TYPE_CHECKING:  # the same names, for type checkers (``X as X`` marks a re-export)
    from raypipe.tracking._context import KEY_TAG as KEY_TAG
    from raypipe.tracking._context import PARENT_TAG as PARENT_TAG
    from raypipe.tracking._context import RUN_DIR_TAG as RUN_DIR_TAG
    from raypipe.tracking._context import TrackingContext as TrackingContext
    from raypipe.tracking._context import resolve_tracking_uri as resolve_tracking_uri
    from raypipe.tracking._lineage import LINEAGE_FILE as LINEAGE_FILE
    from raypipe.tracking._lineage import LineageError as LineageError
    from raypipe.tracking._lineage import data_digest as data_digest
    from raypipe.tracking._lineage import lineage_chain as lineage_chain
    from raypipe.tracking._lineage import read_lineage as read_lineage
    from raypipe.tracking._lineage import record_lineage as record_lineage
    from raypipe.tracking._lineage import validate_record as validate_record
    from raypipe.tracking._outcome import KPI_MET as KPI_MET
    from raypipe.tracking._outcome import KPI_NOT_MET as KPI_NOT_MET
    from raypipe.tracking._outcome import VERDICT_TAG as VERDICT_TAG
    from raypipe.tracking._outcome import log_outcome as log_outcome
    from raypipe.tracking._outcome import log_trial_result as log_trial_result
    from raypipe.tracking._outcome import trial_run_names as trial_run_names
    from raypipe.tracking._registry import DEFAULT_MODEL_NAME as DEFAULT_MODEL_NAME
    from raypipe.tracking._registry import (
        model_version_lineage as model_version_lineage,
    )
    from raypipe.tracking._registry import register_model as register_model
    from raypipe.tracking._runs import RunLogger as RunLogger
    from raypipe.tracking._runs import child_run as child_run
    from raypipe.tracking._runs import end_open_runs as end_open_runs
    from raypipe.tracking._runs import end_pipeline_run as end_pipeline_run
    from raypipe.tracking._runs import log_lineage_artifact as log_lineage_artifact
    from raypipe.tracking._runs import pipeline_logger as pipeline_logger
    from raypipe.tracking._runs import start_pipeline_run as start_pipeline_run
    from raypipe.tracking._secrets import is_credential_name as is_credential_name
    from raypipe.tracking._secrets import secret_values as secret_values
    from raypipe.tracking._store import StoreError as StoreError
    from raypipe.tracking._store import ensure_store as ensure_store
    from raypipe.tracking._store import inspect_store as inspect_store
    from raypipe.tracking._ui import ui_command as ui_command
    from raypipe.tracking._ui import ui_url as ui_url
    from raypipe.tracking._verbosity import set_mlflow_verbosity as set_mlflow_verbosity


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_MODULE_OF})
