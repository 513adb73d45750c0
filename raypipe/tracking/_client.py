"""The one door to MLflow: client construction and small search helpers.

Everything goes through ``MlflowClient`` with explicit run ids — never the fluent API's
process-global active run, which a Ray worker does not have.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from typing import Any

with warnings.catch_warnings():
    # MLflow 3.17's SQLAlchemy store calls configure_mappers() at import time on a relationship
    # declared lazy="noload", which SQLAlchemy 2.x flags as deprecated. It is inside MLflow and
    # harmless; silence exactly that one message, once, at import.
    warnings.filterwarnings("ignore", message=r".*``noload`` loader strategy is deprecated.*")
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.utils.validation import (
    MAX_ENTITY_KEY_LENGTH,
    MAX_PARAM_VAL_LENGTH,
    MAX_TAG_VAL_LENGTH,
)

from raypipe.tracking._context import default_artifact_location
from raypipe.tracking._store import ensure_store
from raypipe.tracking._verbosity import quiet_run_links

#: MLflow 3's UI opens an experiment without this tag in its GenAI (traces) view, which hides the
#: runs table, metrics and charts; ``custom_model_development`` opens the model-training view.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"

_TRUNCATED = "...[truncated]"
_BAD_KEY_CHARS = re.compile(r"[^/\w.\- :]")
_INDEX = re.compile(r"\[(\d+)\]")


def make_client(uri: str) -> MlflowClient:
    """Client for one tracking/registry URI; a local sqlite store is created crash-safely first."""
    ensure_store(uri)
    quiet_run_links()
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_experiment(client: MlflowClient, name: str, uri: str) -> str:
    """Experiment id by name, created (artifacts next to a sqlite db) or restored when needed,
    and marked for the UI's model-training view (also an experiment made by an older raypipe)."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name, artifact_location=default_artifact_location(uri),
                                            tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except MlflowException:
            # another process created it between our lookup and create
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    if EXPERIMENT_KIND_TAG not in exp.tags:  # a kind the user chose stays
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return exp.experiment_id


def quote(value: str) -> str:
    """A string literal for an MLflow filter (its parser has no escape sequences)."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ValueError(f"cannot search MLflow for a value holding both quote kinds: {value!r}")


def search_by_tags(client: MlflowClient, experiment_id: str, tags: dict[str, str]) -> list[Run]:
    """Active runs of one experiment whose tags equal ``tags``, oldest first."""
    flt = " and ".join(f"tags.`{k}` = {quote(v)}" for k, v in tags.items())
    runs = client.search_runs([experiment_id], filter_string=flt, max_results=1000, order_by=["attributes.start_time ASC"])
    return list(runs)


def children(client: MlflowClient, experiment_id: str, parent_run_id: str) -> list[Run]:
    """Every active run directly nested under ``parent_run_id`` (all pages)."""
    out: list[Run] = []
    token: str | None = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
            max_results=1000,
            page_token=token,
        )
        out.extend(page)
        token = page.token
        if not token:
            return out


def mlflow_key(key: str) -> str:
    """A param/metric/tag key MLflow accepts, readable: ``cls_weight[1]`` → ``cls_weight.1``."""
    k = _INDEX.sub(r".\1", str(key))
    k = _BAD_KEY_CHARS.sub("_", k)
    k = re.sub(r"/+", "/", k).strip("/")
    k = re.sub(r"\.{2,}", ".", k)
    return (k or "_")[:MAX_ENTITY_KEY_LENGTH]


def param_value(value: Any) -> str:
    return _truncate(_stringify(value), MAX_PARAM_VAL_LENGTH)


def tag_value(value: Any) -> str:
    return _truncate(_stringify(value), MAX_TAG_VAL_LENGTH)


def metric_value(value: Any) -> float | None:
    """Float for MLflow, or None to skip (None, NaN, non-numbers)."""
    if value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _stringify(value: Any) -> str:
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, default=str)
    return str(value)


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - len(_TRUNCATED)] + _TRUNCATED
