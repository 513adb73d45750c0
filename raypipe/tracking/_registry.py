"""Model Registry: the delivered checkpoint as a registered model version with its lineage.

Choice (MLflow 3.17): the ``.pth`` and its inference spec are plain artifacts of a
``register_<name>`` child run under the pipeline run, and the version is created with
``MlflowClient.create_model_version(source="runs:/<run>/model", run_id=...)``. No
``mlflow.pytorch`` flavour: the checkpoint is consumed by raypipe/TAO (not by
``mlflow.pyfunc.load_model``), the flavour would pickle a live ``nn.Module`` instead of the
file users deploy, and the plain-artifact path registers without any warning.
``MlflowClient(uri, registry_uri=uri).get_model_version_download_uri(name, version)`` gives the
folder (checkpoint, inference spec, lineage.json); a bare ``models:/<name>/<version>`` URI resolves
through MLflow's *global* registry URI, so set ``MLFLOW_TRACKING_URI`` before using one.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException

from raypipe.tracking import _client as C
from raypipe.tracking import _secrets as S
from raypipe.tracking._context import RUN_DIR_TAG, TrackingContext
from raypipe.tracking._lineage import LineageError, lineage_chain, normalise_checkpoint
from raypipe.tracking._outcome import outcome_version_tags, with_summary
from raypipe.tracking._runs import child_run

DEFAULT_MODEL_NAME = "raypipe-aoi-changenet"
MODEL_ARTIFACT_DIR = "model"
# Files in the run dir that travel with the model when present: the deployment record and the
# inference spec written when the loop is finalized.
_DELIVERABLES = ("best_model.json", "best_model_inference_spec.yaml")
_SUMMARY_FIELDS = ("checkpoint", "phase", "trial", "iteration", "parent_checkpoint", "training_data_digest", "metric", "mlflow_run_id")


def register_model(
    ctx: TrackingContext | None,
    checkpoint: Path,
    name: str,
    lineage: Sequence[Mapping[str, Any]],
    tags: Mapping[str, Any],
    *,
    files: Sequence[Path] | None = None,
) -> str:
    """Register ``checkpoint`` as a new version of ``name``; returns the version ("" when off).

    ``lineage`` is the checkpoint's chain (``lineage_chain(run_dir, checkpoint)``); when empty
    it is read from the run dir. ``files`` (default: ``RD/best_model.json`` and
    ``RD/best_model_inference_spec.yaml`` when they exist) are stored next to the checkpoint.
    Idempotent: registering the same checkpoint from the same pipeline run again returns the
    existing version (``--resume`` after a crash right after registration). The version gets the
    pipeline run's outcome tags (``raypipe.verdict`` and the KPI numbers) when
    :func:`~raypipe.tracking.log_outcome` ran before; otherwise ``log_outcome`` adds them later.
    """
    if ctx is None or not ctx.active or not ctx.parent_run_id:
        return ""
    ckpt = Path(checkpoint)
    if not ckpt.is_file() or ckpt.stat().st_size == 0:
        raise FileNotFoundError(f"register_model: checkpoint {ckpt} is missing or empty")
    ckpt_key = normalise_checkpoint(ckpt)
    client = C.make_client(ctx.tracking_uri)
    pipeline_run = client.get_run(ctx.parent_run_id)
    run_dir = pipeline_run.data.tags.get(RUN_DIR_TAG)

    for mv in client.search_model_versions(f"name = {C.quote(name)}"):
        if mv.tags.get("raypipe.pipeline_run_id") == ctx.parent_run_id and mv.tags.get("raypipe.checkpoint") == ckpt_key:
            return str(mv.version)

    chain = [dict(r) for r in lineage]
    if not chain and run_dir:
        try:
            chain = lineage_chain(Path(run_dir), ckpt_key)
        except LineageError:
            chain = []
    if files is None:
        files = [Path(run_dir) / f for f in _DELIVERABLES if run_dir and (Path(run_dir) / f).is_file()]
    for f in [ckpt, *files]:
        var = S.file_leaks(Path(f))
        if var is not None:
            raise ValueError(f"register_model: {f} contains the value of ${var}; refusing to upload it")

    _ensure_registered_model(client, name)
    summary = [{k: r[k] for k in _SUMMARY_FIELDS if k in r} for r in chain]
    with child_run(ctx, f"register_{name}", key=f"registry/{name}") as run:
        run.log_artifact(ckpt, MODEL_ARTIFACT_DIR)
        for f in files:
            run.log_artifact(Path(f), MODEL_ARTIFACT_DIR)
        with tempfile.TemporaryDirectory() as tmp:
            lineage_json = Path(tmp) / "lineage.json"
            lineage_json.write_text(json.dumps({"checkpoint": ckpt_key, "chain": summary}, indent=2), encoding="utf-8")
            run.log_artifact(lineage_json, MODEL_ARTIFACT_DIR)
        mv_tags: dict[str, str] = {
            "raypipe.checkpoint": ckpt_key,
            "raypipe.pipeline_run_id": ctx.parent_run_id,
            "raypipe.registration_run_id": str(run.run_id),
            "raypipe.lineage": json.dumps(summary, default=str),
            "raypipe.lineage.depth": str(len(chain)),
            "raypipe.lineage.run_ids": ",".join(str(r.get("mlflow_run_id")) for r in chain if r.get("mlflow_run_id")),
        }
        if run_dir:
            mv_tags[RUN_DIR_TAG] = run_dir
        if chain:
            head, root = chain[0], chain[-1]
            mv_tags["raypipe.phase"] = str(head.get("phase"))
            mv_tags["raypipe.training_data_digest"] = str(head.get("training_data_digest"))
            mv_tags["raypipe.lineage.root_checkpoint"] = str(root.get("checkpoint"))
            metric = head.get("metric") or {}
            if metric.get("name"):
                mv_tags[C.mlflow_key(f"raypipe.metric.{metric['name']}")] = str(metric.get("value"))
                mv_tags["raypipe.metric.split"] = str(metric.get("split"))
        outcome_tags, outcome_line = outcome_version_tags(pipeline_run)  # when log_outcome ran first
        mv_tags.update(outcome_tags)
        mv_tags.update({C.mlflow_key(k): C.tag_value(v) for k, v in tags.items()})
        mv_tags = S.guard_mapping(mv_tags, "model version tag")
        run.set_tags({k: v for k, v in mv_tags.items() if k != "raypipe.lineage"})
        mv = client.create_model_version(
            name,
            source=f"runs:/{run.run_id}/{MODEL_ARTIFACT_DIR}",
            run_id=run.run_id,
            tags=mv_tags,
            description=with_summary(outcome_line, f"raypipe checkpoint {ckpt.name} ({len(chain)} lineage records)"),
            await_creation_for=0,  # local registries are READY at once; a server need not be polled
        )
    return str(mv.version)


def model_version_lineage(tracking_uri: str, name: str, version: str) -> list[dict[str, Any]]:
    """The lineage chain of a registered version: from ``RD/lineage.json`` (the source of
    truth) when the run dir is reachable, else from the summary stored in its tags."""
    client = C.make_client(tracking_uri)
    mv = client.get_model_version(name, str(version))
    run_dir, ckpt = mv.tags.get(RUN_DIR_TAG), mv.tags.get("raypipe.checkpoint")
    if run_dir and ckpt and Path(run_dir).is_dir():
        return lineage_chain(Path(run_dir), ckpt)
    return json.loads(mv.tags.get("raypipe.lineage", "[]"))


def _ensure_registered_model(client: Any, name: str) -> None:
    try:
        client.get_registered_model(name)
    except MlflowException:
        try:
            client.create_registered_model(
                name, description="AOI change classifier checkpoints delivered by raypipe (tags: raypipe.lineage*)"
            )
        except MlflowException:
            client.get_registered_model(name)  # created concurrently; re-raise if truly broken
