"""What the MLflow UI shows first: the outcome on the pipeline run, its phases, trials and model.

- The pipeline run carries the delivered model's KPI numbers (and the sealed test split's, when
  the run measured them) as metrics, and a pass/fail tag ``raypipe.verdict``.
- Each phase run carries its outcome: Phase 1's best validation FAR, Phase 2's per-iteration KPI
  FAR and its best, Phase 3's KPI FAR.
- The registered version of the delivered model carries the same verdict and numbers as tags.
- Each trial run carries the value that ranked it and where its checkpoint lives.

Everything is derived from ``best_model.json`` and ``trajectory.json`` (or the sweep's records),
and only points not logged yet are logged, so calling again on ``--resume`` changes nothing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from raypipe.tracking import _client as C
from raypipe.tracking import _secrets as S
from raypipe.tracking._context import KEY_TAG, PARENT_TAG, TrackingContext
from raypipe.tracking._lineage import normalise_checkpoint
from raypipe.tracking._runs import RunLogger, child_run
from raypipe.trajectory import KPI_MET, KPI_NOT_MET

VERDICT_TAG = "raypipe.verdict"
KPI_TARGET_TAG = "raypipe.kpi_target"
DELIVERED_TAG = "raypipe.delivered"
#: MLflow's tag for a run's description: the first thing its page shows.
NOTE_TAG = "mlflow.note.content"
_OUTCOME_TAGS = (VERDICT_TAG, KPI_TARGET_TAG, DELIVERED_TAG)
#: Pipeline-run metrics that describe the delivered model (copied onto its registered version).
_OUTCOME_METRIC = re.compile(r"^(kpi_|test_)|^threshold$")
#: Trajectory diagnostics of the delivered row, logged as ``kpi_<name>``.
_KPI_DIAGNOSTICS = ("auroc", "far_at_recall_95_pct")
#: Files beside a kept checkpoint that a trial run carries as artifacts: its metrics and spec,
#: never weights (a directory may hold other epochs' checkpoints too).
_SIDECAR_SUFFIXES = (".json", ".yaml", ".yml", ".csv", ".txt")
#: Phase 2's entries in the trajectory, in order: the baseline is step 0, iterN is step N.
_ITERATION = re.compile(r"^iter(\d+)$")

Series = dict[str, list[tuple[int, float]]]


def trial_run_names(sweep: str, trial_id: str) -> tuple[str, str]:
    """(run name, ``raypipe.key``) of a trial's run: the one place both are spelled."""
    return f"trial_{trial_id}", f"{sweep}/trial_{trial_id}"


def log_outcome(ctx: TrackingContext | None, best_model: Mapping[str, Any], trajectory: Mapping[str, Any]) -> str:
    """Log the delivered model's outcome on the pipeline run, its phase runs and its registered
    version(s); returns the verdict (``kpi_met`` / ``kpi_not_met``), also with tracking off.

    ``ctx`` is the pipeline run's context (``start_pipeline_run``); ``best_model`` and
    ``trajectory`` are the contents of ``RD/best_model.json`` and ``RD/trajectory.json``. Sealed
    test split numbers are logged when present: top-level numeric ``test_*`` keys of
    ``best_model`` or of the delivered trajectory row (``test_far_pct``, ``test_auroc``, ...).
    """
    verdict = KPI_MET if _passed(best_model) else KPI_NOT_MET
    if ctx is None or not ctx.active or not ctx.parent_run_id:
        return verdict
    client = C.make_client(ctx.tracking_uri)
    metrics = outcome_metrics(best_model, trajectory)
    tags = {VERDICT_TAG: verdict, KPI_TARGET_TAG: kpi_target_text(best_model["metric_contract"]),
            DELIVERED_TAG: str(best_model.get("iteration"))}
    summary = S.guard_text(outcome_summary(best_model, metrics, verdict), "outcome summary")
    parent = RunLogger(ctx, ctx.parent_run_id)
    _log_missing(parent, client, {k: [(0, v)] for k, v in metrics.items()})
    parent.set_tags({**tags, NOTE_TAG: summary})

    for phase, series in phase_metrics(best_model, trajectory).items():
        found = C.search_by_tags(client, ctx.experiment_id, {PARENT_TAG: ctx.parent_run_id, KEY_TAG: phase})
        if found:
            _log_missing(RunLogger(ctx, found[0].info.run_id), client, series)

    version_tags = _version_tags(tags, metrics)
    flt = f"tags.`raypipe.pipeline_run_id` = {C.quote(ctx.parent_run_id)}"
    for mv in client.search_model_versions(flt):
        for key, value in version_tags.items():
            if mv.tags.get(key) != value:
                client.set_model_version_tag(mv.name, mv.version, key, value)
        if summary not in (mv.description or ""):
            client.update_model_version(mv.name, mv.version, description=with_summary(summary, mv.description))
    return verdict


def outcome_metrics(best_model: Mapping[str, Any], trajectory: Mapping[str, Any]) -> dict[str, float]:
    """The pipeline run's metrics: ``kpi_<metric>``, ``kpi_<constraint>``, ``threshold``, the
    delivered row's ``kpi_auroc`` / ``kpi_far_at_recall_95_pct``, and any ``test_*`` numbers."""
    result = best_model["metric_result"]
    out: dict[str, Any] = {f"kpi_{result['name']}": result["value"], "threshold": best_model.get("threshold")}
    for name, value in (result.get("constraints") or {}).items():
        out[f"kpi_{name}"] = value
    row = _delivered_row(best_model, trajectory)
    for name in _KPI_DIAGNOSTICS:
        out[f"kpi_{name}"] = row.get(name)
    for source in (row, best_model):  # best_model.json wins over the trajectory
        out.update({k: v for k, v in source.items() if k.startswith("test_")})
    return {C.mlflow_key(k): f for k, v in out.items() if (f := _number(v)) is not None}


def phase_metrics(best_model: Mapping[str, Any], trajectory: Mapping[str, Any]) -> dict[str, Series]:
    """Per phase run (by its ``raypipe.key``): the metric points that state its outcome."""
    name = best_model["metric_result"]["name"]
    lower_is_better = best_model["metric_contract"].get("operator", "<") in ("<", "<=")
    out: dict[str, Series] = {}
    loop: list[tuple[int, float]] = []
    for row in trajectory.get("rows", []):
        value = _number(row.get("far_pct"))
        if value is None:
            continue
        label = row.get("label")
        if row.get("step") == "phase1_best":
            out["phase1"] = {"best_val_far": [(0, value)]}
        elif label == "final_automl":
            out["phase3"] = {f"kpi_{name}": [(0, value)]}
        elif label == "baseline" or (label and _ITERATION.match(label)):
            loop.append((0 if label == "baseline" else int(label[4:]), value))
    if loop:
        best = (min if lower_is_better else max)(v for _, v in loop)
        out["phase2"] = {f"kpi_{name}": sorted(loop), f"best_kpi_{name}": [(0, best)]}
    return out


def outcome_summary(best_model: Mapping[str, Any], metrics: Mapping[str, float], verdict: str) -> str:
    """One line a user reads first on the pipeline run's and the model version's page."""
    result, contract = best_model["metric_result"], best_model["metric_contract"]
    unit = result.get("unit") or ""
    line = (f"{'KPI met' if verdict == KPI_MET else 'KPI not met'}: {result['name']} {result['value']:.4g}{unit} "
            f"on the KPI set (target {kpi_target_text(contract)}); delivered {best_model.get('iteration')}")
    if _number(best_model.get("threshold")) is not None:
        line += f" at threshold {best_model['threshold']:.4g}"
    test = {k[len("test_"):]: v for k, v in metrics.items() if k.startswith("test_")}
    if test:
        line += "; sealed test split: " + ", ".join(f"{k} {v:.4g}" for k, v in test.items())
    return line + "."


def with_summary(summary: str | None, description: str | None) -> str:
    """A model version's description with the outcome line (when there is one) on top."""
    return "\n\n".join(part for part in (summary, description) if part)


def kpi_target_text(contract: Mapping[str, Any]) -> str:
    """``far_pct < 10% and recall_pct >= 100%``: the contract as the user configured it."""
    parts = [contract] + list(contract.get("constraints") or [])
    return " and ".join(f"{c['name']} {c['operator']} {c['target']:g}{c.get('unit') or ''}" for c in parts)


def outcome_version_tags(run: Any) -> tuple[dict[str, str], str | None]:
    """The outcome tags and summary line a model version registered from this pipeline run gets
    (nothing before :func:`log_outcome` ran): registration and outcome may come in either order."""
    tags = {k: v for k, v in run.data.tags.items() if k in _OUTCOME_TAGS}
    if not tags:
        return {}, None
    metrics = {k: v for k, v in run.data.metrics.items() if _OUTCOME_METRIC.search(k)}
    return _version_tags(tags, metrics), run.data.tags.get(NOTE_TAG)


def log_trial_result(ctx: TrackingContext | None, sweep: str, trial_id: str, *, status: str,
                     best_val_far: float | None = None, best_val_loss: float | None = None,
                     checkpoint: str | None = None, trial_dir: str | None = None) -> None:
    """Close a trial's run from the sweep driver with what ranked it and where its checkpoint is.

    - ``best_val_far`` / ``best_val_loss``: the values at the checkpoint the sweep kept and ranked
      the trial by; they become the run's latest values (the running best logged per epoch is
      replaced when it differs).
    - ``checkpoint``: the kept checkpoint file, a path under the run dir (or a storage URI): tags
      ``checkpoint`` and ``checkpoint_uri`` (its directory), and the metadata files Tune kept
      beside the weights (metrics, training spec: JSON/YAML/CSV/text) become artifacts under
      ``checkpoint/``.
    - ``trial_dir``: the trial's directory in the Tune experiment under the run dir; it replaces a
      ``trial_dir`` tag pointing into Ray's temporary session directory.
    Reopens the run by its key, so calling it again (``--resume``) is harmless.
    """
    if ctx is None or not ctx.active:
        return
    name, key = trial_run_names(sweep, trial_id)
    with child_run(ctx, name, key=key) as run:
        run_id = str(run.run_id)  # tracking is on here, so the run exists
        tags: dict[str, str] = {"status": status}
        if trial_dir:
            tags["trial_dir"] = normalise_checkpoint(trial_dir)
        if checkpoint:
            tags["checkpoint"] = normalise_checkpoint(checkpoint)
            local = Path(tags["checkpoint"]) if "://" not in checkpoint else None
            tags["checkpoint_uri"] = local.parent.as_uri() if local else checkpoint.rsplit("/", 1)[0]
            if local is not None and local.parent.is_dir():
                for f in sorted(local.parent.iterdir()):
                    if f.is_file() and f.suffix in _SIDECAR_SUFFIXES:
                        run.log_artifact(f, "checkpoint")
        run.set_tags(tags)
        client = C.make_client(ctx.tracking_uri)
        final = {k: v for k, v in (("best_val_far", best_val_far), ("best_val_loss", best_val_loss))
                 if _number(v) is not None}
        for metric, value in final.items():
            history = client.get_metric_history(run_id, metric)
            latest = max(history, key=lambda m: (m.step, m.timestamp), default=None)
            if latest is None or latest.value != value:
                run.log_metrics({metric: value}, step=latest.step if latest else 0)


def _passed(best_model: Mapping[str, Any]) -> bool:
    passed = (best_model.get("metric_result") or {}).get("passed")
    if type(passed) is not bool:
        raise ValueError("best_model.json: metric_result.passed (true/false) is missing; cannot state a verdict")
    return passed


def _delivered_row(best_model: Mapping[str, Any], trajectory: Mapping[str, Any]) -> Mapping[str, Any]:
    rows = trajectory.get("rows", [])
    marked = [r for r in rows if r.get("delivered")]
    by_label = [r for r in rows if r.get("label") == best_model.get("iteration")]
    return (marked or by_label or [{}])[0]


def _version_tags(tags: Mapping[str, str], metrics: Mapping[str, float]) -> dict[str, str]:
    out = dict(tags)
    out.update({f"raypipe.{k}": format(v, ".6g") for k, v in metrics.items()})
    return S.guard_mapping(out, "model version tag")


def _log_missing(run: RunLogger, client: Any, series: Series) -> None:
    """Log only the (step, value) points a run does not hold yet: idempotent on resume."""
    for key, points in series.items():
        have = {(m.step, m.value) for m in client.get_metric_history(str(run.run_id), key)}
        for step, value in points:
            if (step, value) not in have:
                run.log_metrics({key: value}, step=step)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None
