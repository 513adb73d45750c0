"""Pipeline run, nested child runs and the per-run logger.

Layout in MLflow: one parent run per pipeline run (tag ``raypipe.run_dir``) → one child per
phase (``phase1``, ``phase2``, ``phase3``) → one grandchild per trial / DEFT iteration. Every
run is addressed by id through ``MlflowClient`` so Ray workers on any node can log into it.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.data.pandas_dataset import from_pandas
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from raypipe.spec import flatten
from raypipe.tracking import _client as C
from raypipe.tracking import _secrets as S
from raypipe.tracking._context import KEY_TAG, PARENT_TAG, RUN_DIR_TAG, TrackingContext
from raypipe.tracking._lineage import LINEAGE_FILE, data_digest

log = logging.getLogger(__name__)

TERMINAL_STATUSES = ("FINISHED", "FAILED", "KILLED")
_BATCH = 100  # MLflow's per-request limit for params and tags

#: Per-epoch metrics (lower is better) a run also carries as a best-so-far: the UI's runs table
#: shows a metric's latest value, and a trial is ranked by its best epoch, not its last one.
RUNNING_BEST = {"val_far": "best_val_far", "val_loss": "best_val_loss"}


class RunLogger:
    """Logs into one MLflow run by id; a no-op when ``run_id`` is None (tracking off).

    Safe to use from threads and processes: it keeps no active-run state, only a client and
    an id. Every key and value passes the secrets guard first.
    """

    def __init__(self, ctx: TrackingContext | None, run_id: str | None) -> None:
        self._ctx = ctx if (ctx is not None and ctx.active and run_id) else None
        self.run_id: str | None = run_id if self._ctx is not None else None
        self._client_obj: Any = None
        self._best: dict[str, float] | None = None  # RUNNING_BEST values of this run, read once

    @property
    def _client(self) -> Any:
        if self._client_obj is None:
            assert self._ctx is not None
            self._client_obj = C.make_client(self._ctx.tracking_uri)
        return self._client_obj

    def __repr__(self) -> str:
        return f"RunLogger(run_id={self.run_id!r})"

    def context(self) -> TrackingContext | None:
        """A context whose parent is this run: pass it on to nest deeper (phase → trials)."""
        if self._ctx is None:
            return None
        return TrackingContext(self._ctx.tracking_uri, self._ctx.experiment_id, self.run_id, True)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Effective HPs/config: nested dicts become dotted keys; values stringified, truncated.

        MLflow params are write-once: a key already logged with the same value is skipped (a
        resumed run re-logs safely); a changed value is kept as it was and a warning says so.
        """
        if self._ctx is None or not params:
            return
        flat = {C.mlflow_key(k): C.param_value(v) for k, v in flatten(dict(params)).items()}
        flat = S.guard_mapping(flat, "param")
        existing = self._client.get_run(self.run_id).data.params
        todo: dict[str, str] = {}
        for k, v in flat.items():
            if k not in existing:
                todo[k] = v
            elif existing[k] != v:
                log.warning("tracking: param %r of run %s already logged with another value; kept the first", k, self.run_id)
        items = [Param(k, v) for k, v in todo.items()]
        for i in range(0, len(items), _BATCH):
            self._client.log_batch(self.run_id, params=items[i : i + _BATCH], synchronous=True)

    def log_metrics(self, metrics: Mapping[str, float | None], step: int | None = None) -> None:
        """Metrics at one step (epoch, iteration); None and NaN are skipped.

        A per-epoch ``val_far`` / ``val_loss`` (logged with a ``step``) also logs
        ``best_val_far`` / ``best_val_loss``, the lowest value of the run so far (a reopened run
        continues from what it logged before), unless the caller logs that key itself.
        """
        if self._ctx is None or not metrics:
            return
        ts = int(time.time() * 1000)
        values = {C.mlflow_key(k): C.metric_value(v) for k, v in metrics.items()}
        if step is not None:
            self._add_running_best(values)
        allowed = S.guard_keys(values, "metric")
        items = [Metric(k, v, ts, int(step or 0)) for k, v in values.items() if v is not None and k in allowed]
        for i in range(0, len(items), 1000):
            self._client.log_batch(self.run_id, metrics=items[i : i + 1000], synchronous=True)

    def _add_running_best(self, values: dict[str, float | None]) -> None:
        if not values.keys() & (RUNNING_BEST.keys() | set(RUNNING_BEST.values())):
            return
        if self._best is None:
            logged = self._client.get_run(self.run_id).data.metrics
            self._best = {b: logged[b] for b in RUNNING_BEST.values() if b in logged}
        for key, best_key in RUNNING_BEST.items():
            current, best = values.get(key), values.get(best_key)
            if best is None and current is not None:
                prev = self._best.get(best_key)
                best = current if prev is None else min(prev, current)
                values[best_key] = best
            if best is not None:
                self._best[best_key] = best

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if self._ctx is None or not tags:
            return
        clean = S.guard_mapping({C.mlflow_key(k): C.tag_value(v) for k, v in tags.items()}, "tag")
        items = [RunTag(k, v) for k, v in clean.items()]
        for i in range(0, len(items), _BATCH):
            self._client.log_batch(self.run_id, tags=items[i : i + _BATCH], synchronous=True)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Upload a file or a directory; refused (with a warning) when it holds a secret value."""
        path = Path(path)
        if not path.exists():  # checked with tracking off too: a caller's bug must not hide
            raise FileNotFoundError(f"tracking: artifact {path} does not exist")
        if self._ctx is None:
            return
        var = S.file_leaks(path)
        if var is not None:
            log.warning("tracking: artifact %s not logged: it contains the value of $%s", path, var)
            return
        if path.is_dir():
            self._client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self._client.log_artifact(self.run_id, str(path), artifact_path)

    def log_dataset(self, csv: Path, name: str, context: str) -> str:
        """Log a CSV as a run input (MLflow dataset: schema, row count, source, digest).

        Returns the digest — ``data_digest(csv)``, the same value the lineage records carry —
        also when tracking is off, so callers can always record lineage.
        """
        csv = Path(csv)
        digest = data_digest(csv)
        if self._ctx is None:
            return digest
        var = S.file_leaks(csv)
        if var is not None:
            log.warning("tracking: dataset %s not logged: it contains the value of $%s", csv, var)
            return digest
        # All columns as strings: the schema in the UI then shows exactly the CSV header, and
        # ids such as object_name never turn into floats.
        df = pd.read_csv(csv, dtype=str, keep_default_na=False)
        with warnings.catch_warnings():
            # A local path matches MLflow's two local sources ("" and "file" schemes) and it
            # warns that it picked one; both are the same class of source.
            warnings.filterwarnings("ignore", message=r"The specified dataset source can be interpreted in multiple ways")
            ds = from_pandas(
                df,
                source=S.guard_text(str(csv.absolute()), "dataset source"),
                name=S.guard_text(name, "dataset name"),
                digest=digest,
            )
        tag = InputTag(key=MLFLOW_DATASET_CONTEXT, value=S.guard_text(context, "dataset context"))
        self._client.log_inputs(self.run_id, datasets=[DatasetInput(dataset=ds._to_mlflow_entity(), tags=[tag])])
        return digest

    def _terminate(self, status: str) -> None:
        if self._ctx is not None:
            self._client.set_terminated(self.run_id, status)


def start_pipeline_run(
    uri: str,
    experiment_name: str,
    run_dir: Path,
    tags: Mapping[str, str],
    *,
    enabled: bool = True,
) -> TrackingContext:
    """The parent run of one pipeline run, created or — on ``--resume`` — reopened.

    The run is found again by its ``raypipe.run_dir`` tag, so resuming never creates a second
    parent. ``uri`` must be resolved already (``resolve_tracking_uri``). With
    ``enabled=False`` nothing touches MLflow and a disabled context comes back.
    """
    if not enabled:
        return TrackingContext(uri, "", None, enabled=False)
    run_dir_text = S.guard_text(str(Path(run_dir).absolute()), "run dir")
    client = C.make_client(uri)
    exp_id = C.ensure_experiment(client, experiment_name, uri)
    existing = C.search_by_tags(client, exp_id, {RUN_DIR_TAG: run_dir_text})
    if existing:
        run_id = existing[0].info.run_id
        client.update_run(run_id, status="RUNNING")
    else:
        run = client.create_run(
            exp_id, run_name=S.guard_text(Path(run_dir_text).name, "run name"), tags={RUN_DIR_TAG: run_dir_text}
        )
        run_id = run.info.run_id
    ctx = TrackingContext(uri, exp_id, run_id, True)
    RunLogger(ctx, run_id).set_tags(dict(tags))
    return ctx


def pipeline_logger(ctx: TrackingContext | None) -> RunLogger:
    """A logger on the run ``ctx`` nests under (the pipeline run for the top-level context):
    for artifacts that belong to the whole run (config, state, report)."""
    if ctx is None or not ctx.active:
        return RunLogger(None, None)
    return RunLogger(ctx, ctx.parent_run_id)


@contextmanager
def child_run(
    ctx: TrackingContext | None,
    name: str,
    *,
    key: str | None = None,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
) -> Iterator[RunLogger]:
    """A run nested under ``ctx.parent_run_id``, ended FINISHED / FAILED (exception) / KILLED.

    ``key`` makes it idempotent on resume: a child of the same parent tagged
    ``raypipe.key=key`` is reopened instead of duplicated. With ``ctx`` None or disabled the
    logger is a no-op, so callers never branch on whether tracking is on.
    """
    if ctx is None or not ctx.active:
        yield RunLogger(None, None)
        return
    client = C.make_client(ctx.tracking_uri)
    run_id: str | None = None
    if key is not None and ctx.parent_run_id:
        found = C.search_by_tags(client, ctx.experiment_id, {PARENT_TAG: ctx.parent_run_id, KEY_TAG: key})
        if found:
            run_id = found[0].info.run_id
            client.update_run(run_id, status="RUNNING")
    if run_id is None:
        base_tags: dict[str, str] = {}
        if ctx.parent_run_id:
            base_tags[PARENT_TAG] = ctx.parent_run_id
        if key is not None:
            base_tags[KEY_TAG] = C.tag_value(key)
        base_tags = S.guard_mapping(base_tags, "tag")
        run = client.create_run(ctx.experiment_id, run_name=S.guard_text(name, "run name"), tags=base_tags)
        run_id = run.info.run_id
    logger = RunLogger(ctx, run_id)
    logger._client_obj = client
    try:
        if tags:
            logger.set_tags(dict(tags))
        if params:
            logger.log_params(dict(params))
        yield logger
    except Exception:
        logger._terminate("FAILED")
        raise
    except BaseException:
        # KeyboardInterrupt, SystemExit, Ray's task cancellation: the run was stopped, not broken.
        logger._terminate("KILLED")
        raise
    logger._terminate("FINISHED")


def end_pipeline_run(ctx: TrackingContext | None, status: str) -> None:
    """End the pipeline run with FINISHED / FAILED / KILLED.

    Also uploads ``RD/lineage.json`` (found through the ``raypipe.run_dir`` tag) and marks
    descendants still RUNNING — left by a killed worker — as KILLED, so the UI shows no
    phantom live runs.
    """
    if status not in TERMINAL_STATUSES:
        raise ValueError(f"end_pipeline_run: status {status!r} is not one of {', '.join(TERMINAL_STATUSES)}")
    if ctx is None or not ctx.active or not ctx.parent_run_id:
        return
    client = C.make_client(ctx.tracking_uri)
    run = client.get_run(ctx.parent_run_id)
    run_dir = run.data.tags.get(RUN_DIR_TAG)
    if run_dir and (Path(run_dir) / LINEAGE_FILE).exists():
        RunLogger(ctx, ctx.parent_run_id).log_artifact(Path(run_dir) / LINEAGE_FILE)
    end_open_runs(ctx, "KILLED")
    client.set_terminated(ctx.parent_run_id, status)


def end_open_runs(ctx: TrackingContext | None, status: str = "KILLED") -> int:
    """End every run still RUNNING below ``ctx.parent_run_id`` (any depth); returns how many.

    A trial whose worker was killed (Tune early stop that kills the actor, SIGKILL, node
    loss) never leaves its ``with child_run`` block; call this after a sweep with the phase's
    context so the UI does not show it as live forever.
    """
    if status not in TERMINAL_STATUSES:
        raise ValueError(f"end_open_runs: status {status!r} is not one of {', '.join(TERMINAL_STATUSES)}")
    if ctx is None or not ctx.active or not ctx.parent_run_id:
        return 0
    client = C.make_client(ctx.tracking_uri)
    ended = 0
    stack = [ctx.parent_run_id]
    while stack:
        for child in C.children(client, ctx.experiment_id, stack.pop()):
            if child.info.status == "RUNNING":
                client.set_terminated(child.info.run_id, status)
                ended += 1
            stack.append(child.info.run_id)
    return ended


def log_lineage_artifact(ctx: TrackingContext | None, run_dir: Path) -> None:
    """Upload ``RD/lineage.json`` to the pipeline run now (e.g. after each phase)."""
    path = Path(run_dir) / LINEAGE_FILE
    if path.exists():
        pipeline_logger(ctx).log_artifact(path)
