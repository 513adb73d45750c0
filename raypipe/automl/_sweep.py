"""``run_sweep``: one Ray Tune + Optuna experiment, used by Phase 1 and Phase 3.

Order of work: validate everything that can be checked without Ray (space, files, warm-start
architecture) → claim the storage (a restore of a different sweep is refused) → baseline eval of
the starting checkpoint → the Tune experiment (restored when the same sweep already has state in
its storage) → trial records read back from disk → ranking with the metric policy → noise guard →
``trials.csv`` and ``best_rec.json``. Only Ray Tune's and Optuna's public APIs are used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

from raypipe._io import atomic_write_json, read_json
from raypipe.automl._baseline import baseline_eval
from raypipe.automl._config import RankedTrial, SweepConfig, SweepInputs, SweepResult
from raypipe.automl._outputs import build_best_rec, rec_specs, write_best_rec, write_trials_csv
from raypipe.automl._ranking import TrialRecord, needs_rerun, pick_score, rank_trials
from raypipe.automl._space import (
    SearchParam,
    SearchSpaceError,
    centre_point,
    grid_param_space,
    parse_search_space,
    tune_param_space,
    validate_search_space,
)
from raypipe.automl._trainable import META_FILE, TrialJob, build_trial_spec, sweep_trial
from raypipe.backends.base import parse_checkpoint_name
from raypipe.console import fmt_counts, get_console
from raypipe.rundir import SweepDir
from raypipe.spec import ARCHITECTURE_KEYS, get_dotted, has_dotted

if TYPE_CHECKING:
    from raypipe.automl._progress import FailureWatch

log = logging.getLogger(__name__)

_TERMINATED, _ERROR = "TERMINATED", "ERROR"


class SweepError(RuntimeError):
    """A sweep could not produce a winner; the message says why and what to do."""


class SweepFailedError(SweepError):
    """Every trial failed (or none was usable); the message summarises the shared root cause."""


class SweepInterruptedError(SweepError):
    """The sweep stopped before all trials ran (Ctrl-C, SIGUSR1); running it again resumes it."""


# -- before Ray: inputs, warm start, space ----------------------------------------------------------
def _check_inputs(inputs: SweepInputs) -> None:
    for label, path, kind in (("train_csv", inputs.train_csv, "file"), ("val_csv", inputs.val_csv, "file"),
                              ("train_images_dir", inputs.train_images_dir, "dir"),
                              ("val_images_dir", inputs.val_images_dir, "dir")):
        p = Path(path)
        if not (p.is_file() if kind == "file" else p.is_dir()):
            raise SweepError(f"sweep input {label}: {kind} not found: {p}")
    if inputs.init_ckpt is not None:
        p = Path(inputs.init_ckpt)
        if not p.is_file() or p.stat().st_size == 0:
            raise SweepError(f"warm-start checkpoint (train.pretrained_model_path) missing or empty: {p}")


def pinned_architecture(inputs: SweepInputs) -> dict[str, Any] | None:
    """The warm-start checkpoint's architecture keys (None without a warm start).

    Read from the checkpoint itself (builtin format); a checkpoint the builtin reader cannot parse
    (e.g. a TAO one) pins the base spec's values, which is what that checkpoint was trained with.
    """
    if inputs.init_ckpt is None:
        return None
    try:
        from raypipe.backends.builtin import CheckpointError, read_checkpoint_architecture
    except ImportError:  # builtin backend unavailable (no torch): pin from the spec
        pass
    else:
        try:
            return dict(read_checkpoint_architecture(Path(inputs.init_ckpt)))
        except CheckpointError as exc:
            log.warning("warm start: %s; pinning the architecture keys to the base spec's values", exc)
    spec = inputs.base_spec
    return {k: get_dotted(spec, k) for k in ARCHITECTURE_KEYS if has_dotted(spec, k)}


def _fingerprint(cfg: SweepConfig, inputs: SweepInputs) -> str:
    """What makes two sweeps the same experiment (restorable); resources and concurrency may change."""
    doc = {
        "algorithm": cfg.algorithm, "metric": cfg.metric, "num_trials": cfg.num_trials,
        "n_startup_trials": cfg.startup_trials, "search_space": cfg.search_space,
        "spec_overrides": cfg.spec_overrides, "seed": cfg.seed, "base_spec": inputs.base_spec,
        "train_csv": str(Path(inputs.train_csv).resolve()), "val_csv": str(Path(inputs.val_csv).resolve()),
        "init_ckpt": str(Path(inputs.init_ckpt).resolve()) if inputs.init_ckpt else None,
        "centre": inputs.centre, "backend": inputs.backend,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def _storage(cfg: SweepConfig, sweep_dir: Path) -> str:
    if cfg.storage_path is None:
        return str(sweep_dir)
    # One shared storage serves many runs: mirror RD/<phase dir> below it so sweeps never collide.
    return f"{cfg.storage_path.rstrip('/')}/{sweep_dir.parent.name}/{sweep_dir.name}"


def _is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


# -- Ray Tune ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet_ray() -> Iterator[None]:
    """Silence Ray's console output for the duration of ``fit`` (our progress display replaces it)."""
    names = ("ray.tune", "ray.train", "ray.tune.execution.experiment_state", "ray.tune.tune",
             "ray.tune.execution.tune_controller", "ray.tune.impl.tuner_internal", "optuna")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    prev_env = os.environ.get("RAY_AIR_NEW_OUTPUT")
    # The new output engine prints its experiment banner even at verbose=0; the legacy one honours it.
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    for lg in loggers:
        # Trial tracebacks too: the progress display names each failure and trials.csv / the trial's
        # error.txt keep the details; exceptions outside trials still propagate.
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, lvl in zip(loggers, levels):
            lg.setLevel(lvl)
        if prev_env is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = prev_env


def _search(cfg: SweepConfig, params: list[SearchParam], points: list[dict[str, Any]], num_epochs: int,
            sampler_log: Path) -> tuple[dict[str, Any], Any, Any, int]:
    """(param_space, search_alg, scheduler, num_samples) for the configured algorithm.

    The sampler writes every result it learns from to ``sampler_log`` (:class:`RecordingSampler`).
    The study itself stays in memory: Tune snapshots it with the searcher and a restored sweep
    resumes from that snapshot — a persistent Optuna storage would run ahead of the snapshot and
    refuse the re-run of a trial that finished after it.
    """
    from ray.tune.schedulers import ASHAScheduler

    if cfg.algorithm == "grid":
        space, total = grid_param_space(params)
        return space, None, None, 1
    import optuna
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from raypipe.automl._sampler import RecordingSampler

    # Phase 1 and Phase 3 share ``seed``, and Phase 3's first (enqueued) point is Phase 1's winner:
    # a sampler seeded alike would draw Phase 1's sequence again and repeat that very point. A
    # centred sweep draws from its own stream.
    seed = cfg.seed + 1 if points else cfg.seed
    if cfg.algorithm == "random":
        sampler: Any = optuna.samplers.RandomSampler(seed=seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=cfg.startup_trials)
    # A Tune param_space (not a define-by-run function): OptunaSearch ignores points_to_evaluate
    # with define-by-run spaces (ray#35319), and Phase 3's first trial must be Phase 1's winner.
    searcher = OptunaSearch(sampler=RecordingSampler(sampler, sampler_log), points_to_evaluate=points or None)
    # Determinism: with `batch=True` Optuna is asked for the next batch of suggestions only after it
    # was told every result of the last one, so what it suggests does not depend on which of the
    # concurrent trials happened to finish first (the seeded sampler then repeats itself exactly).
    limited = ConcurrencyLimiter(searcher, max_concurrent=cfg.max_concurrent_trials, batch=True)
    scheduler = None
    if cfg.algorithm == "asha":
        scheduler = ASHAScheduler(time_attr="epoch", max_t=max(1, num_epochs), grace_period=1, reduction_factor=2)
    return tune_param_space(params), limited, scheduler, cfg.num_trials


def _run_tune(*, trainable: Any, exp_path: str, storage: str, name: str, cfg: SweepConfig,
              param_space: dict[str, Any] | None, search_alg: Any, scheduler: Any, num_samples: int,
              callbacks: Sequence[Any], watch: FailureWatch) -> None:
    from ray import tune

    from raypipe.automl._progress import StopWhenAllFail, SweepCallbacks, live_sweep

    live = [*callbacks, watch]
    if tune.Tuner.can_restore(exp_path):
        log.info("%s: restoring the sweep from %s (finished trials are not rerun)", name, exp_path)
        # The restored run config brings back its pickled callbacks and stopper; they relay to the
        # live ones registered below, so this process's display and failure watch observe the run.
        tuner = tune.Tuner.restore(exp_path, trainable=trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            # A searcher brings its own ConcurrencyLimiter (batched, see _search); Tune's would be a second one.
            tune_config=tune.TuneConfig(search_alg=search_alg, scheduler=scheduler, metric="score", mode="min",
                                        num_samples=num_samples,
                                        max_concurrent_trials=None if search_alg else cfg.max_concurrent_trials,
                                        reuse_actors=cfg.reuse_actors, trial_dirname_creator=_trial_dirname),
            run_config=tune.RunConfig(
                name=name, storage_path=storage, verbose=0, callbacks=[SweepCallbacks(exp_path, live)],
                stop=StopWhenAllFail(exp_path, watch), failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
                # The trainable reports a checkpoint only when the trial's best improves, so the
                # latest checkpoint is the best one: keep exactly that.
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1)),
        )
    with _quiet_ray(), live_sweep(exp_path, live, watch):
        tuner.fit()


def _trial_dirname(trial: Any) -> str:
    # `trial_<id>` instead of Tune's default (every param value in the name): short, stable paths
    # for best_rec.json's checkpoint_uri and for shells.
    return f"trial_{trial.trial_id}"


# -- reading the experiment back ---------------------------------------------------------------------
def _tag_index(trial: Any, fallback: int) -> int:
    tag = str(getattr(trial, "experiment_tag", "") or "")
    head = tag.split("_", 1)[0]
    return int(head) if head.isdigit() else fallback


def _error_text(trial: Any) -> str:
    from raypipe.automl._progress import root_cause

    try:
        text = trial.get_error() or ""
    except Exception as exc:  # a boundary: one unreadable error file must not hide the others
        return f"(error file unreadable: {exc})"
    return root_cause(text)


def _read_meta(ckpt: Any) -> dict[str, Any] | None:
    try:
        with ckpt.filesystem.open_input_stream(f"{ckpt.path}/{META_FILE}") as fh:
            return json.loads(fh.readall().decode("utf-8"))
    except (OSError, ValueError):  # no or broken metadata: the trial is reported without a checkpoint
        return None


def _uri(ckpt: Any, name: str, exp_path: str) -> str:
    """Where a checkpoint's model file lives: an absolute path, or ``scheme://bucket/...`` remotely."""
    path = f"{ckpt.path}/{name}"
    if _is_local(exp_path):
        return path
    return f"{exp_path.split('://', 1)[0]}://{path.lstrip('/')}"


def read_records(exp_path: str, param_keys: tuple[str, ...], planned_epochs: int, early_stopping: bool,
                 ) -> tuple[list[TrialRecord], dict[str, Any], int]:
    """Trial records from the experiment's files (the disk is the truth after an interrupt), the
    Ray checkpoints by trial id, and the number of trials Tune created."""
    from ray import tune

    with _quiet_ray():  # it warns about every trial that never reported, which we handle below
        analysis = tune.ExperimentAnalysis(exp_path, default_metric="score", default_mode="min")
    trials = sorted(analysis.trials, key=lambda t: _tag_index(t, 0))
    records, ckpts = [], {}
    for i, t in enumerate(trials):
        last = t.last_result or {}
        reported = "epoch" in last  # a trial stopped before its first epoch has only Tune's defaults
        params = {k: t.config.get(k) for k in param_keys if k in t.config}
        job_id = Path(str(t.path)).name if getattr(t, "path", None) else t.trial_id
        rec = TrialRecord(trial_id=t.trial_id, index=_tag_index(t, i), status="not_run", params=params,
                          epochs_run=int(last.get("epoch", 0) or 0), compute_s=float(last.get("compute_s", math.nan)),
                          job_id=job_id)
        ckpt = t.checkpoint
        meta = _read_meta(ckpt) if ckpt is not None else None
        if meta is not None:
            ckpts[t.trial_id] = ckpt
            rec.val_far, rec.val_loss = float(meta["val_far"]), float(meta["val_loss"])
            rec.pred_counts = {k: int(v) for k, v in (meta.get("pred_counts") or {}).items()}
            # As the file name says (TAO/Lightning: zero-based epoch index), so best_rec's
            # checkpoint_epoch and checkpoint_uri agree; epochs_run is the count.
            try:
                rec.checkpoint_epoch, rec.checkpoint_step = parse_checkpoint_name(meta["checkpoint_file"])
            except ValueError:
                rec.checkpoint_epoch, rec.checkpoint_step = int(meta["epoch"]), int(meta["step"])
            rec.checkpoint = _uri(ckpt, meta["checkpoint_file"], exp_path)
        if t.status == _ERROR:
            rec.status, rec.error = "failed", _error_text(t)
        elif t.status == _TERMINATED and reported:
            if meta is None:
                rec.status, rec.error = "failed", "finished without a checkpoint"
            elif rec.epochs_run < planned_epochs and not early_stopping:
                rec.status, rec.note = "stopped", f"stopped after {rec.epochs_run}/{planned_epochs} epochs"
            else:
                rec.status = "complete"
                if rec.epochs_run < planned_epochs:
                    rec.note = f"stopped early by ASHA after {rec.epochs_run}/{planned_epochs} epochs"
        else:
            rec.status = "interrupted" if reported else "not_run"
        records.append(rec)
    return records, ckpts, len(trials)


def _failure_summary(records: list[TrialRecord], expected: int) -> str:
    from raypipe.automl._progress import error_signature

    failed = [r for r in records if r.status == "failed"]
    groups: dict[str, list[TrialRecord]] = {}
    for r in failed:
        groups.setdefault(error_signature(r.error), []).append(r)
    lines = [f"{len(failed)} of {len(records)} launched trial(s) failed (sweep planned {expected}); "
             f"no trial completed, so no further trials were launched."]
    for sig, rs in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        lines.append(f"  root cause ({len(rs)} trial(s): {', '.join(r.trial_id for r in rs)}): {rs[0].error}")
    if len(groups) == 1:
        lines.append("Every failure has the same cause: fix it (data paths, backend options, spec values) and "
                     "re-run; the sweep restarts the failed trials.")
    return "\n".join(lines)


def _local_checkpoint(ckpt: Any, rec: TrialRecord, dest: Path) -> Path:
    """A readable local .pth for a trial's kept checkpoint (downloaded when storage is remote)."""
    name = Path(str(rec.checkpoint)).name
    if ckpt.filesystem.type_name == "local":
        return Path(ckpt.path) / name
    target = dest / rec.trial_id
    if not (target / name).is_file():
        ckpt.to_directory(str(target))
    return target / name


# -- the sweep ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Plan:
    """What a sweep will try, decided before Ray is touched."""

    name: str
    params: list[SearchParam]
    points: list[dict[str, Any]]  # points_to_evaluate: the centre (Phase 1's winner) first, when given
    pinned_arch: dict[str, Any] | None
    job_for: Callable[[int, str], TrialJob]  # (seed, sweep name) → the trials' job
    planned_epochs: int

    @property
    def param_keys(self) -> tuple[str, ...]:
        return tuple(p.key for p in self.params)


@dataclass(frozen=True)
class _Storage:
    storage: str  # where Tune keeps experiments (the sweep dir, or below storage_path)
    exp_path: str  # storage/<name>: the experiment


@dataclass
class _Ranking:
    ranked: list[TrialRecord]
    records: list[TrialRecord]
    ckpts: dict[str, Any]  # trial id → Tune checkpoint
    noise: dict[str, Any] | None = None
    extra_rows: tuple[TrialRecord, ...] = ()  # the noise guard's re-run, reported beside the trials


def run_sweep(cfg: SweepConfig, inputs: SweepInputs, sweep_dir: Path, name: str, *,
              callbacks: Sequence[Any] = ()) -> SweepResult:
    """Run (or resume) one AutoML sweep and write ``trials.csv`` and ``best_rec.json`` in ``sweep_dir``.

    ``callbacks``: extra ``ray.tune.Callback`` objects (e.g. a pipeline's own progress hook).
    Raises :class:`SearchSpaceError` before Ray starts for a bad space, :class:`SweepFailedError`
    when every trial failed, :class:`SweepInterruptedError` when stopped early (re-run to resume).
    """
    out = SweepDir(Path(sweep_dir).absolute(), name)
    plan = _plan(cfg, inputs, name)  # 1. everything checkable without Ray: a typo fails in seconds
    where = _claim_storage(cfg, inputs, out, plan)  # 2. same storage + different sweep = refused
    baseline = _baseline(cfg, inputs, out, plan)  # 3. where a warm-started sweep starts from
    expected = _experiment(cfg, out, plan, where, callbacks)  # 4. the Tune experiment
    ranking = _rank(cfg, out, plan, where, expected)  # 5. read back from disk, complete?, ranked
    _noise_guard(cfg, ranking, plan, where, callbacks)  # 6. a big win can be a lucky seed
    _close_trial_runs(inputs.tracking, name, ranking.records, where.exp_path)
    return _write_outputs(cfg, out, plan, where, ranking, baseline)  # 7. files


def _plan(cfg: SweepConfig, inputs: SweepInputs, name: str) -> _Plan:
    base_spec = inputs.base_spec
    if not cfg.search_space:
        raise SearchSpaceError("automl.search_space is empty: nothing to sweep")
    validate_search_space(cfg.search_space, base_spec, pinned_arch=None, pinned=cfg.spec_overrides)
    _check_inputs(inputs)
    pinned_arch = pinned_architecture(inputs)
    validate_search_space(cfg.search_space, base_spec, pinned_arch=pinned_arch, pinned=cfg.spec_overrides)
    params = parse_search_space(cfg.search_space, base_spec)
    points = [centre_point(params, inputs.centre, base_spec)] if inputs.centre else []
    if points and cfg.algorithm == "grid":
        log.warning("%s: grid search ignores the centre point", name)

    def job_for(seed: int, sweep_name: str) -> TrialJob:
        return TrialJob(
            base_spec=base_spec, spec_overrides=dict(cfg.spec_overrides), param_keys=tuple(p.key for p in params),
            pinned_arch=pinned_arch, init_ckpt=str(Path(inputs.init_ckpt).resolve()) if inputs.init_ckpt else None,
            train_csv=str(Path(inputs.train_csv).resolve()),
            train_images_dir=str(Path(inputs.train_images_dir).resolve()),
            val_csv=str(Path(inputs.val_csv).resolve()), val_images_dir=str(Path(inputs.val_images_dir).resolve()),
            backend=inputs.backend, backend_options=dict(inputs.backend_options), seed=seed, metric=cfg.metric,
            sweep_name=sweep_name, tracking=inputs.tracking,
            run_dir=str(Path(inputs.run_dir).resolve()) if inputs.run_dir else None)

    reference_spec = build_trial_spec(job_for(cfg.seed, name), {})
    return _Plan(name, params, points, pinned_arch, job_for,
                 planned_epochs=int(get_dotted(reference_spec, "train.num_epochs", 1) or 1))


def _claim_storage(cfg: SweepConfig, inputs: SweepInputs, out: SweepDir, plan: _Plan) -> _Storage:
    """Record what this sweep is (``<name>.sweep.json``); refuse to restore an experiment of another one."""
    from ray import tune

    out.path.mkdir(parents=True, exist_ok=True)
    storage = _storage(cfg, out.path)
    exp_path = f"{storage.rstrip('/')}/{plan.name}"
    fingerprint = _fingerprint(cfg, inputs)
    restoring = tune.Tuner.can_restore(exp_path)
    if restoring and out.sweep_json.is_file() and read_json(out.sweep_json).get("fingerprint") != fingerprint:
        raise SweepError(f"{exp_path} holds a different sweep (its config or inputs changed); "
                         f"delete it or use another run dir to start a new sweep")
    if not restoring:  # a fresh study: what an attempt that never got as far as Tune's state learned is no history
        out.sampler_log.unlink(missing_ok=True)
    atomic_write_json(out.sweep_json, {
        "name": plan.name, "experiment_path": exp_path, "fingerprint": fingerprint, "algorithm": cfg.algorithm,
        "metric": cfg.metric, "num_trials": cfg.num_trials, "search_space": cfg.search_space,
        "spec_overrides": cfg.spec_overrides, "pinned_architecture": plan.pinned_arch,
        "centre_point": plan.points[0] if plan.points else None,
        "init_ckpt": str(Path(inputs.init_ckpt).resolve()) if inputs.init_ckpt else None,
        "dropped_keys": list(cfg.dropped_keys)})
    return _Storage(storage, exp_path)


def _baseline(cfg: SweepConfig, inputs: SweepInputs, out: SweepDir, plan: _Plan) -> dict[str, Any] | None:
    """The warm-start checkpoint scored on the validation set, before any trial (None without one)."""
    if inputs.init_ckpt is None:
        return None
    reference_spec = build_trial_spec(plan.job_for(cfg.seed, plan.name), {})
    baseline = baseline_eval(reference_spec, Path(inputs.init_ckpt), Path(inputs.val_csv),
                             Path(inputs.val_images_dir), out, inputs.backend, dict(inputs.backend_options),
                             cfg.resources)
    get_console().line(f"warm-start checkpoint on the validation set: FAR {baseline['far_pct']:.2f}% "
                       f"(predicted {fmt_counts(baseline['pred_counts'])})", phase=plan.name)
    return baseline


def _experiment(cfg: SweepConfig, out: SweepDir, plan: _Plan, where: _Storage, callbacks: Sequence[Any]) -> int:
    """Run (or restore) the Tune experiment; returns the number of trials it plans."""
    from raypipe.automl._progress import FailureWatch, SweepProgress  # imports ray: after validation

    with _quiet_ray():  # Optuna announces every study it creates
        param_space, search_alg, scheduler, num_samples = _search(cfg, plan.params, plan.points, plan.planned_epochs,
                                                                  out.sampler_log)
    expected = num_samples if cfg.algorithm != "grid" else grid_param_space(plan.params)[1]
    watch = FailureWatch(threshold=min(expected, max(2, cfg.max_concurrent_trials)))
    progress = SweepProgress(plan.name, plan.param_keys, cfg.metric, expected, concurrency=cfg.max_concurrent_trials)
    _run_tune(trainable=_trainable(plan.job_for(cfg.seed, plan.name), cfg), exp_path=where.exp_path,
              storage=where.storage, name=plan.name, cfg=cfg, param_space=param_space, search_alg=search_alg,
              scheduler=scheduler, num_samples=num_samples, callbacks=[progress, *callbacks], watch=watch)
    return expected


def _rank(cfg: SweepConfig, out: SweepDir, plan: _Plan, where: _Storage, expected: int) -> _Ranking:
    """Trial records from the experiment's files, checked for completeness, ranked by the metric policy."""
    records, ckpts, created = read_records(where.exp_path, plan.param_keys, plan.planned_epochs,
                                           cfg.algorithm == "asha")
    if not any(r.status == "complete" for r in records) and any(r.status == "failed" for r in records):
        write_trials_csv(out.trials_csv, records, cfg.metric)  # the evidence, before the error
        raise SweepFailedError(f"{plan.name}: " + _failure_summary(records, expected))
    unfinished = [r for r in records if r.status in ("not_run", "interrupted")]
    if unfinished or created < expected:
        done = sum(1 for r in records if r.status in ("complete", "failed", "stopped"))
        raise SweepInterruptedError(f"{plan.name}: sweep interrupted with {done}/{expected} trials finished; run it "
                                    f"again with the same config to resume from {where.exp_path}")
    ranked, records = rank_trials(records, cfg.metric, cfg.val_loss_top_k)
    if not ranked:
        write_trials_csv(out.trials_csv, records, cfg.metric)
        raise SweepFailedError(f"{plan.name}: no usable trial: " + "; ".join(
            f"{r.trial_id} {r.status} {r.error or r.note}" for r in records))
    return _Ranking(ranked, records, ckpts)


def _noise_guard(cfg: SweepConfig, ranking: _Ranking, plan: _Plan, where: _Storage,
                 callbacks: Sequence[Any]) -> None:
    """Winner beats the runner-up by more than ``noise_margin``: re-train it once before believing it."""
    rerun, gap = needs_rerun(ranking.ranked, cfg.noise_margin)
    if gap is None:
        return
    winner, runner = ranking.ranked[0], ranking.ranked[1]
    ranking.noise = {"triggered": rerun, "noise_margin": cfg.noise_margin, "relative_gap": gap,
                     "compared_metric": "val_far", "winner_trial_id": winner.trial_id,
                     "winner_score": pick_score(winner), "runner_up_trial_id": runner.trial_id,
                     "runner_up_score": pick_score(runner)}
    if not rerun:
        return
    name = f"{plan.name}_noise_guard"
    ranking.ranked, ranking.records, rr = _noise_guard_rerun(
        cfg, ranking.ranked, ranking.records, plan.job_for, exp_path=f"{where.storage}/{name}", storage=where.storage,
        name=name, params=plan.params, planned_epochs=plan.planned_epochs, callbacks=callbacks, ckpts=ranking.ckpts,
        noise=ranking.noise)
    if rr is not None:
        ranking.extra_rows = (rr,)


def _write_outputs(cfg: SweepConfig, out: SweepDir, plan: _Plan, where: _Storage, ranking: _Ranking,
                   baseline: dict[str, Any] | None) -> SweepResult:
    """``best_rec.json``, ``trials.csv``, the summary, and the result (with local checkpoints)."""
    ranked, records = ranking.ranked, ranking.records
    best = ranked[0]
    job = plan.job_for(cfg.seed, plan.name)
    trial_specs = {r.trial_id: rec_specs(build_trial_spec(job, r.params), r.params, cfg.spec_overrides)
                   for r in records}
    # Local storage: every kept checkpoint is already a file. Remote: the top 3 (the handoff's
    # fallbacks) are downloaded under the sweep dir; the rest stay in storage only.
    fetch = ranked if _is_local(where.exp_path) else ranked[:3]
    local = {r.trial_id: _local_checkpoint(ranking.ckpts[r.trial_id], r, out.checkpoints)
             for r in fetch if r.trial_id in ranking.ckpts}
    best_ckpt = local[best.trial_id]
    if not best_ckpt.is_file() or best_ckpt.stat().st_size == 0:
        raise SweepError(f"{plan.name}: the winner's checkpoint {best_ckpt} is missing or empty")
    scores = {r.trial_id: (r.score(cfg.metric) if r.status == "complete" else None) for r in records}
    doc = build_best_rec(experiment_id=plan.name, metric_name=cfg.metric, best=best,
                         best_specs=trial_specs[best.trial_id], records=records, scores=scores)
    best_rec_path = write_best_rec(out.best_rec, doc)
    rows = list(records) + list(ranking.extra_rows)
    if baseline is not None:
        rows.insert(0, TrialRecord(trial_id="baseline", index=-1, status="baseline", params={},
                                   val_far=baseline["far_pct"], pred_counts=baseline["pred_counts"],
                                   checkpoint=baseline["checkpoint"], note="warm-start checkpoint, before any trial"))
    trials_csv = write_trials_csv(out.trials_csv, rows, cfg.metric)
    failed = [{"trial_id": r.trial_id, "params": r.params, "error": r.error} for r in records if r.status == "failed"]
    ranked_out = [RankedTrial(r.trial_id, r.score(cfg.metric), local.get(r.trial_id), dict(r.pred_counts))
                  for r in ranked]
    atomic_write_json(out.summary_json, {
        "experiment_path": where.exp_path, "best_trial_id": best.trial_id, "best_score": best.score(cfg.metric),
        "metric": cfg.metric, "best_checkpoint": str(best_ckpt), "baseline_eval": baseline,
        "noise_guard": ranking.noise, "failed": failed,
        "ranked": [{"trial_id": t.trial_id, "score": t.score, "checkpoint": str(t.checkpoint) if t.checkpoint else None,
                    "pred_counts": t.pred_counts} for t in ranked_out]})
    score = "" if cfg.metric == "far_pct" else f"{cfg.metric} {best.score(cfg.metric):.4g}, "
    get_console().line(f"best trial {best.trial_id}: {score}validation FAR {best.val_far:.2f}%, checkpoint {best_ckpt}",
                       phase=plan.name)
    return SweepResult(
        best_rec_path=best_rec_path, trials_csv=trials_csv, best_spec=build_trial_spec(job, dict(best.params)),
        best_checkpoint=best_ckpt, best_score=best.score(cfg.metric), best_trial_id=best.trial_id, ranked=ranked_out,
        baseline_eval=baseline, noise_guard=ranking.noise, failed=failed, best_params=dict(best.params),
        trial_specs=trial_specs, experiment_path=where.exp_path)


def _close_trial_runs(tracking: Any, name: str, records: list[TrialRecord], exp_path: str) -> None:
    """End every trial's MLflow run from the driver with its final status, the values it was ranked
    by, its kept checkpoint and its directory in the experiment (under the run dir, not Ray's
    temporary session directory).

    A trial that Tune stops (ASHA at a rung, the sweep's stopper) is stopped from inside its last
    ``tune.report`` and its actor may be torn down before the trial's own ``child_run`` ends, which
    would leave the run RUNNING forever. Re-opening it by its key here is idempotent.
    """
    if tracking is None:
        return
    from raypipe.tracking import log_trial_result

    for r in records:
        if r.status in ("not_run", "failed"):  # never started, or ended FAILED by the trial itself
            continue
        try:
            log_trial_result(tracking, name, r.trial_id, status=r.status, best_val_far=r.val_far,
                             best_val_loss=r.val_loss, checkpoint=r.checkpoint,
                             trial_dir=f"{exp_path.rstrip('/')}/{r.job_id or f'trial_{r.trial_id}'}")
        except Exception as exc:  # a boundary: tracking must not lose a finished sweep
            log.warning("%s: could not close the tracking run of trial %s: %s", name, r.trial_id, exc)


def _trainable(job: TrialJob, cfg: SweepConfig) -> Any:
    from ray import tune

    res = cfg.resources
    return tune.with_resources(tune.with_parameters(sweep_trial, job=job), {"cpu": res["cpu"], "gpu": res["gpu"]})


def _noise_guard_rerun(cfg: SweepConfig, ranked: list[TrialRecord], records: list[TrialRecord],
                       job_for: Callable[[int, str], TrialJob], *,
                       exp_path: str, storage: str, name: str, params: list[SearchParam], planned_epochs: int,
                       callbacks: Sequence[Any], ckpts: dict[str, Any], noise: dict[str, Any],
                       ) -> tuple[list[TrialRecord], list[TrialRecord], TrialRecord | None]:
    """Re-train the winner with a fresh seed (a one-trial experiment beside the sweep) and re-rank
    with the re-run's numbers standing in for the winner's."""
    from raypipe.automl._progress import FailureWatch, SweepProgress

    winner = ranked[0]
    seed = cfg.seed + 1
    job = job_for(seed, name)
    watch = FailureWatch(threshold=1)
    keys = tuple(winner.params)
    _run_tune(trainable=_trainable(job, cfg), exp_path=exp_path, storage=storage, name=name, cfg=cfg,
              param_space=dict(winner.params), search_alg=None, scheduler=None, num_samples=1,
              callbacks=[SweepProgress(name, keys, cfg.metric, 1), *callbacks], watch=watch)
    reruns, rckpts, _ = read_records(exp_path, keys, planned_epochs, False)
    _close_trial_runs(job.tracking, name, reruns, exp_path)
    noise.update(rerun_seed=seed)
    if not reruns or reruns[0].status != "complete":
        rr = reruns[0] if reruns else None
        noise.update(rerun_status=rr.status if rr else "not_run", rerun_error=rr.error if rr else "",
                     picked_trial_id=winner.trial_id, rerun_score=None)
        log.warning("%s: the noise-guard re-run of %s did not complete; keeping the original score", name,
                    winner.trial_id)
        if rr is not None:
            rr.status, rr.note = "rerun_failed", f"noise-guard re-run of {winner.trial_id} (seed {seed})"
        return ranked, records, rr
    rr = reruns[0]
    ckpts[winner.trial_id] = rckpts[rr.trial_id]
    noise.update(rerun_trial_id=rr.trial_id, rerun_status="complete", rerun_score=pick_score(rr),
                 rerun_checkpoint=rr.checkpoint, winner_original_score=pick_score(winner))
    original = {k: getattr(winner, k) for k in ("val_far", "val_loss", "checkpoint")}
    updated = []
    for r in records:
        if r.trial_id == winner.trial_id:
            r.val_far, r.val_loss, r.pred_counts = rr.val_far, rr.val_loss, dict(rr.pred_counts)
            r.checkpoint, r.checkpoint_epoch, r.checkpoint_step = rr.checkpoint, rr.checkpoint_epoch, rr.checkpoint_step
            r.epochs_run = rr.epochs_run
            r.status = "complete"
            r.note = (f"noise guard: scored by its re-run {rr.trial_id} (seed {seed}); original val_far "
                      f"{original['val_far']:.4g}, val_loss {original['val_loss']:.4g}, checkpoint {original['checkpoint']}")
        updated.append(r)
    ranked2, records2 = rank_trials(updated, cfg.metric, cfg.val_loss_top_k)
    noise["picked_trial_id"] = ranked2[0].trial_id if ranked2 else winner.trial_id
    rr.status, rr.note = "rerun", f"noise-guard re-run of {winner.trial_id} (seed {seed})"
    return ranked2, records2, rr


def trial_spec_for(cfg: SweepConfig, inputs: SweepInputs, params: Mapping[str, Any]) -> dict[str, Any]:
    """The full spec a trial with ``params`` trains with (for previews and the pre-flight summary)."""
    job = TrialJob(base_spec=inputs.base_spec, spec_overrides=dict(cfg.spec_overrides), param_keys=tuple(params),
                   pinned_arch=pinned_architecture(inputs), init_ckpt=str(inputs.init_ckpt) if inputs.init_ckpt else None,
                   train_csv="", train_images_dir="", val_csv="", val_images_dir="", backend=inputs.backend,
                   backend_options={}, seed=cfg.seed, metric=cfg.metric, sweep_name="preview")
    return build_trial_spec(job, params)
