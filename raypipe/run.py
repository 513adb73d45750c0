"""``python -m raypipe.run``: the whole pipeline behind one pre-flight gate.

Exit codes: 0 complete · 1 failed (hard stop, BLOCKER, bad input) · 2 approval needed (no TTY, no --yes)
· 130 interrupted (resumable).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from raypipe import pipeline_state
from raypipe import tao_interop as ti
from raypipe._io import atomic_write_json, atomic_write_text
from raypipe.config import (
    ConfigError,
    RunConfig,
    build_config,
    config_digest,
    dump_config,
    load_config,
    read_saved_config,
)
from raypipe.console import get_console
from raypipe.rundir import RunDir, resume_command
from raypipe.spec import dump_spec, load_spec

if TYPE_CHECKING:
    from raypipe._lock import LockHolder, WorkspaceLock
    from raypipe.budget import Timing
    from raypipe.preflight import Preflight
    from raypipe.workspace import Workspace

log = logging.getLogger("raypipe")
# The laptop profile a new run uses without --config. It ships inside the package (the repository's
# `experiments/` points here), so the default does not depend on the directory the command runs in.
DEFAULT_EXPERIMENT = Path(__file__).resolve().parent / "experiments" / "aoi_default.yaml"
DEFAULT_WORKSPACE = Path("workspace")
EXIT_OK, EXIT_FAILED, EXIT_APPROVAL, EXIT_INTERRUPTED = 0, 1, 2, 130


_OVERRIDES_HELP = """\
key.path=value overrides:
  Any key of the config can be set on the command line after the options, as a dotted path into
  the YAML tree (raypipe/defaults.yaml lists every key with its meaning; docs/config.md is the
  reference). Values are YAML scalars or flow collections. Layers, later wins: package defaults,
  then --config FILE, then these overrides. An unknown key is refused with the closest valid one.

  examples:
    phase2.max_iterations=2                      fewer DEFT iterations
    automl.resources_per_trial.gpu=0.5           two trials share one GPU
    phase1.automl_max_recommendations=12         more Phase 1 trials
    tracking.enabled=false                       no MLflow
    spec_overrides.train.num_epochs=8            a TAO spec key pinned in every spec (inside spec_overrides,
                                                 phase2.train_overrides and automl.search_space the rest of
                                                 the path is one TAO dotted key)
    'automl.search_space.train.optim.lr={valid_min: 1.0e-5, valid_max: 1.0e-3, log: true}'
                                                 a search range (quote values with spaces or braces)

exit codes: 0 complete (KPI met or not: the summary says which), 1 failed (the message ends with
the --resume command), 2 approval needed (no terminal and no --yes), 130 interrupted (resumable).
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m raypipe.run", description=(__doc__ or "").splitlines()[0],
                                epilog=_OVERRIDES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="experiment YAML merged onto the package defaults")
    p.add_argument("--workspace", help="workspace root (default: config 'workspace', ./workspace)")
    p.add_argument("--yes", action="store_true", help="approve the pre-flight summary without a prompt")
    p.add_argument("--dry-run", action="store_true", help="pre-flight only; nothing is written under results/")
    p.add_argument("--resume", metavar="RD", help="continue an interrupted run from its run dir")
    p.add_argument("--ray-address", help="join a running Ray cluster ('auto' or host:port)")
    p.add_argument("--time-budget", metavar="DURATION",
                   help="size trials, epochs and DEFT iterations to this wall time (e.g. 45m, 1h30m) from a "
                        "measured 1-epoch probe; the plan is shown in pre-flight (config key time_budget)")
    p.add_argument("--dashboard", action="store_true",
                   help="start Ray's dashboard with the local Ray (loopback only) and print its URL")
    p.add_argument("--verbose", action="store_true",
                   help="also show Ray's, Tune's and MLflow's own output (worker logs, warnings, store creation)")
    p.add_argument("overrides", nargs="*", metavar="key.path=value", help="config overrides (see below)")
    return p


def resolve_config(a: argparse.Namespace) -> tuple[RunConfig, bool]:
    """(config, changed). A new run: defaults ← --config (default ``experiments/aoi_default.yaml``) ←
    overrides. ``--resume RD``: the run's saved ``config.yaml`` ← any new layers; ``changed`` (which
    re-opens the gate) is whether that changed anything but the Ray address."""
    extra: list[tuple[str, dict[str, Any]]] = []
    if a.ray_address:
        extra.append(("--ray-address", {"ray_address": a.ray_address}))
    if getattr(a, "time_budget", None):
        extra.append(("--time-budget", {"time_budget": a.time_budget}))
    if a.resume:
        saved_path = RunDir(a.resume).config_yaml
        if not saved_path.is_file():
            raise ConfigError(f"{saved_path}: not a raypipe run dir (no config.yaml)")
        saved = read_saved_config(saved_path)
        cfg = load_config(a.config, a.overrides, base=saved, base_source=str(saved_path), extra=extra)
        _same_workspace(a, cfg, saved, saved_path)
        before = build_config([], base=saved, base_source=str(saved_path))
        return cfg, config_digest(cfg, ignore=("ray_address",)) != config_digest(before, ignore=("ray_address",))
    config_file = a.config if a.config is not None else DEFAULT_EXPERIMENT
    if a.workspace:
        extra.append(("--workspace", {"workspace": a.workspace}))
    return load_config(config_file, a.overrides, extra=extra), True


def _same_workspace(a: argparse.Namespace, cfg: RunConfig, saved: dict[str, Any], saved_path: Path) -> None:
    """A run resumes on the workspace it was approved on: ``--workspace`` or ``workspace=`` naming
    another one is an error, not silently ignored."""
    recorded = Path(str(saved.get("workspace"))).resolve()
    for flag, value in (("--workspace", a.workspace), ("workspace", cfg.workspace)):
        if value is not None and Path(value).resolve() != recorded:
            raise ConfigError(f"{flag} {value} is not the workspace of the run being resumed ({recorded}, recorded "
                              f"in {saved_path}); a run resumes on its own workspace: drop {flag}, or start a "
                              f"new run on {value} without --resume")


def _asked_for_demo(cfg: RunConfig, a: argparse.Namespace) -> bool:
    """The embedded demo is generated only for a plain ``python -m raypipe.run``: no --workspace, no
    ``workspace=`` override, and the config's workspace is the package default."""
    from raypipe.config import package_defaults

    default = str(package_defaults().get("workspace"))
    return (a.workspace is None and not any(o.split("=", 1)[0].strip() == "workspace" for o in a.overrides)
            and Path(cfg.workspace) == Path(default))


def _workspace(cfg: RunConfig, a: argparse.Namespace) -> Path | None:
    """The workspace root, absolute; the embedded demo is generated when the default one is missing."""
    workspace = Path(cfg.workspace)
    if a.resume or workspace.exists():
        return workspace.resolve()
    if _asked_for_demo(cfg, a) and not a.dry_run:
        from raypipe.workspace import generate_demo

        get_console().line(f"no workspace at {workspace}: generating the embedded demo workspace (seed 0)…")
        generate_demo(workspace, seed=0)
        return workspace.resolve()
    hint = " (a run without --dry-run generates the embedded demo there)" if _asked_for_demo(cfg, a) else ""
    get_console().line(f"workspace directory {workspace.absolute()} does not exist{hint}", level="error")
    return None


@contextlib.contextmanager
def _ctrl_c() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt in the driver, once.

    Ray Tune's own SIGINT handler is turned off: it would end a sweep quietly and let the pipeline
    go on to fail on the unfinished sweep. A second Ctrl-C while the run stops is ignored, so the
    stop (Ray shut down, state recorded, lock released) completes.
    """
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def first(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, first)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _interrupted(rd: RunDir | None) -> int:
    """Exit 130: the run (if it exists yet) is recorded as interrupted and resumable."""
    if rd is None:
        get_console().line("interrupted before the run started; nothing was written.", level="error")
        return EXIT_INTERRUPTED
    with contextlib.suppress(OSError, ValueError):
        pipeline_state.set_run_status(rd, "interrupted")
    get_console().line(f"interrupted. The run is resumable from disk: {resume_command(rd)}", level="error")
    return EXIT_INTERRUPTED


@dataclass
class _Session:
    """What this invocation holds and must let go of, however it ends."""

    lock: WorkspaceLock | None = None


def _lock_holder(workspace: Path) -> LockHolder | None:
    """Who runs on the workspace now (a read-only probe: refuse before starting Ray or checking data)."""
    from raypipe._lock import LockHolder, lock_status

    held, holder = lock_status(workspace)
    if not held:
        return None
    return holder or LockHolder(0, "?", None, "?")


def _take_lock(workspace: Path, rd: RunDir | None, run: _Session) -> str | None:
    """Take the workspace's run lock once the run is approved (a run refused at the gate or not
    approved leaves no trace in the workspace). :class:`raypipe._lock.WorkspaceLockedError` when
    another run took it meanwhile; returns the explanation of a stale lock taken over."""
    from raypipe._lock import WorkspaceLock

    run.lock = WorkspaceLock(workspace)
    return run.lock.acquire(run_dir=rd.root if rd else None)


def _resume_check(a: argparse.Namespace) -> int | None:
    """``--resume RD``: the run dir's state files, before anything is read from them or written.
    Returns an exit code when there is nothing to resume (damaged files, a complete run)."""
    from raypipe._resume import RunDirError, check_run_dir

    try:
        facts = check_run_dir(a.resume)
    except RunDirError as exc:
        get_console().line(str(exc), level="error")
        return EXIT_FAILED
    rd = RunDir(a.resume).resolve()
    if facts.status == "complete" and not _owes_scoring(rd):
        get_console().line(f"{rd.root}: this run is complete (deliverable: {rd.best_model}); nothing to resume. "
                           "Start a new run without --resume.")
        return EXIT_OK
    return None


def _owes_scoring(rd: RunDir) -> bool:
    """A complete run whose sealed-test scoring is missing (stopped while it ran, or its outputs
    removed): ``--resume`` scores what is missing and changes nothing else."""
    from raypipe.scoring import unscored_steps

    try:
        return bool(unscored_steps(rd))
    except (OSError, ValueError, KeyError):  # whatever is wrong with it, the run itself is complete
        return False


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    a = _parser().parse_args(argv)
    _console_setup(a.verbose)
    with _ctrl_c():
        try:
            return _main(a, started)
        except KeyboardInterrupt:
            return _interrupted(None)


def _main(a: argparse.Namespace, started: float) -> int:
    from raypipe._lock import WorkspaceLockedError
    from raypipe._testhook import arm_driver

    if a.resume and (code := _resume_check(a)) is not None:
        return code
    try:
        cfg, changed = resolve_config(a)
    except ConfigError as exc:
        get_console().line(str(exc), level="error")
        return EXIT_FAILED
    workspace = _workspace(cfg, a)
    if workspace is None:
        return EXIT_FAILED
    if not a.resume:
        cfg = cfg.replace(workspace=str(workspace))
    rd = RunDir(a.resume).resolve() if a.resume else None
    if not a.dry_run and (holder := _lock_holder(workspace)) is not None:
        get_console().line(str(WorkspaceLockedError(workspace, holder)), level="error")
        return EXIT_FAILED
    try:
        policy = run_policy(cfg, rd)
    except ti.PolicyError as exc:
        get_console().line(str(exc), level="error")
        return EXIT_FAILED
    # Before Ray and MLflow start: both read these at start-up, and both report usage over the
    # network unless told not to. A private Ray's workers inherit them; a cluster's get them below.
    offline = ti.offline_environment(policy)
    os.environ.update(offline)
    from raypipe._ray import ray_session

    arm_driver()
    run = _Session()
    try:
        with ray_session(cfg.ray_address, env_vars=offline, dashboard=a.dashboard, log_to_driver=a.verbose,
                         logging_level=logging.INFO if a.verbose else logging.ERROR):
            _show_dashboard(a.dashboard)
            return _run(a, cfg, changed, workspace, rd, started, policy, run)
    except WorkspaceLockedError as exc:
        get_console().line(str(exc), level="error")
        return EXIT_FAILED
    finally:
        if run.lock is not None:
            run.lock.release()


def run_policy(cfg: RunConfig, rd: RunDir | None) -> dict[str, Any]:
    """The run's execution policy in TAO's words, decided once per run.

    A new run resolves it from the config and the environment (``AIR_GAPPED=1`` forces airgap);
    a resumed run keeps the one it recorded (TAO treats it as immutable run state), whatever the
    config says now.
    """
    recorded = recorded_policy(rd) if rd is not None else None
    wanted = cfg.execution_policy.tao_policy()
    if recorded is None:
        return wanted
    if recorded["network_mode"] != wanted["network_mode"]:
        log.warning("%s keeps its recorded network_mode %s (the config now asks for %s)", rd.root if rd else "",
                    recorded["network_mode"], wanted["network_mode"])
    return recorded


def recorded_policy(rd: RunDir) -> dict[str, Any] | None:
    """The policy a run recorded (``deft_state.json``, else the ``resolved`` block of ``config.yaml``);
    None when there is none in TAO's words (a run dir from before raypipe wrote them)."""
    import yaml

    from raypipe._io import read_json

    candidates: list[tuple[Path, Any]] = []
    if rd.deft_state.is_file():
        candidates.append((rd.deft_state, read_json(rd.deft_state).get("execution_policy")))
    if rd.config_yaml.is_file():
        saved = yaml.safe_load(rd.config_yaml.read_text(encoding="utf-8")) or {}
        candidates.append((rd.config_yaml, (saved.get("resolved") or {}).get("execution_policy")))
    for path, policy in candidates:
        if policy is None:
            continue
        try:
            return ti.validate_policy(policy)
        except ti.PolicyError as exc:
            log.warning("%s: ignoring the recorded execution policy (%s); resolving it from the config", path, exc)
    return None


def _console_setup(verbose: bool) -> None:
    """One output format for the run; the libraries' own chatter only with ``--verbose``. Before Ray
    and MLflow start: their workers and store read the verbosity when they start."""
    from raypipe.console import install_logging
    from raypipe.tracking import set_mlflow_verbosity

    set_mlflow_verbosity(verbose)
    install_logging(get_console(), verbose=verbose)
    if not verbose:
        # Libraries' Python warnings (deprecations, Tune's hints) are for their developers, not a run's console.
        warnings.filterwarnings("ignore")


def _show_dashboard(wanted: bool) -> None:
    if not wanted:
        return
    from raypipe._ray import dashboard_url

    url = dashboard_url()
    if url:
        get_console().line(f"Ray dashboard: {url}")
    else:
        get_console().line("Ray dashboard: not available (install ray[default] for it, or the cluster runs none)",
                           level="warning")


def _run(a: argparse.Namespace, cfg: RunConfig, changed: bool, workspace: Path, rd: RunDir | None,
         started: float, policy: dict[str, Any], run: _Session) -> int:
    from raypipe._testhook import point

    console = get_console()
    docker = _docker_client(cfg)
    cfg, timing = _time_model(cfg, workspace, rd, started)
    pf = _preflight(cfg, workspace, rd, docker, timing, policy)
    if a.dry_run:
        _lock_line(pf, workspace)
    summary = pf.render()
    gate = rd is None or changed
    if gate:
        console.preflight(pf)
    if pf.blockers:
        console.line(f"{len(pf.blockers)} BLOCKER(s): nothing was started. Fix them and run again.", level="error")
        return EXIT_FAILED
    if a.dry_run:
        console.line("--dry-run: pre-flight only; nothing written.")
        return EXIT_OK
    point("gate")
    if gate and not _approved(a):
        return EXIT_APPROVAL
    note = _take_lock(workspace, rd, run)
    if note:
        console.line(note, level="warning")
        summary += f"\n\nWARN     {note}"
    ws = pf.facts["workspace"]
    rd, run_spec, ws = _prepare_run_dir(cfg, ws, rd, pf, summary, changed=changed,
                                        approved_by="--yes" if a.yes else "interactive", policy=policy)
    if run.lock is not None:
        run.lock.set_run_dir(rd.root)
    point("run_dir")
    if timing is not None:
        atomic_write_json(rd.time_plan, timing.to_json())
    try:
        if cfg.backend == "tao":
            # Pulls happen only now, after the gate, and only as the execution policy allows.
            from raypipe.backends.tao import pull_image
            from raypipe.preflight import container_images

            for image in container_images(cfg):
                pull_image(docker, image, policy)
        # A new run under a time budget: when it runs out (the clock started with the command).
        deadline = (time.time() + cfg.time_budget_s - (time.monotonic() - started)
                    if timing is not None and timing.plan is not None and cfg.time_budget_s else None)
        return _execute(cfg, rd, ws, run_spec, started, policy, deadline)
    except KeyboardInterrupt:
        return _interrupted(rd)


def _lock_line(pf: Preflight, workspace: Path) -> None:
    """``--dry-run`` takes no lock; it says whether a run holds the workspace now."""
    holder = _lock_holder(workspace)
    if holder is not None:
        pf.warn(1, f"workspace in use by another raypipe run: {holder.describe()}; a run started now would be "
                   "refused")


def _docker_client(cfg: RunConfig) -> Any:
    """The docker SDK client for ``backend: tao`` (None elsewhere, or when no engine answers)."""
    if cfg.backend != "tao":
        return None
    from raypipe.backends.tao._docker import docker_client

    try:
        return docker_client()
    except Exception:  # a boundary: any failure to reach the engine is pre-flight's BLOCKER, not a crash
        return None


def _preflight(cfg: RunConfig, workspace: Path, rd: RunDir | None, docker: Any, timing: Timing | None,
               policy: dict[str, Any]) -> Preflight:
    from raypipe.preflight import build_preflight, ray_cluster_info

    return build_preflight(cfg, workspace, ray_info=ray_cluster_info(), resume_rd=rd.root if rd else None,
                           docker_client=docker, timing=timing, execution_policy=policy)


def _time_model(cfg: RunConfig, workspace: Path, rd: RunDir | None, started: float,
                ) -> tuple[RunConfig, Timing | None]:
    """A new run's time model: a measured 1-epoch probe when there is a time budget (or
    ``preflight.probe``), else the config's estimate inputs; under a budget, the config with the
    planned trials, epochs and iterations. A resumed run keeps what it was approved with."""
    from raypipe import budget
    from raypipe.preflight import resolve_run_spec
    from raypipe.workspace import WorkspaceError, load_workspace

    if rd is not None:
        return cfg, None
    try:
        ws = load_workspace(workspace, label_map=cfg.label_map)
    except WorkspaceError:
        return cfg, None  # pre-flight reports the workspace's problems as BLOCKERs
    budget_s = cfg.time_budget_s
    if budget_s is not None or cfg.preflight.probe:
        get_console().line("measuring one training epoch (the probe the time model scales from)…")
        epoch_s, source = budget.measure_epoch_s(cfg, ws, resolve_run_spec(cfg, ws.spec)[0]), "a measured 1-epoch probe"
    else:
        epoch_s, source = budget.epoch_from_config(cfg), "config preflight.t_trial_s"
    model = budget.CostModel(epoch_s, budget.Workload.of(cfg, budget.csv_rows(ws)))
    if budget_s is None:
        return cfg, budget.Timing(model, budget.Knobs.of(cfg), source)
    # What the run has spent already (start-up, checks, the probe) comes out of its budget.
    spent = time.monotonic() - started
    plan = budget.plan_for_budget(budget_s - spent, model, budget.Knobs.of(cfg))
    planned = plan.knobs.apply(cfg)
    return planned, budget.Timing(model, plan.knobs, source, plan, spent)


def _approved(a: argparse.Namespace) -> bool:
    if a.yes:
        return True
    if not sys.stdin.isatty():
        get_console().line("approval needed: stdin is not a terminal. Re-run with --yes to approve the summary "
                           "above.", level="error")
        return False
    try:
        answer = input("\nApprove and run all three phases? [y/N] ")
    except EOFError:
        answer = ""
    if answer.strip().lower() in ("y", "yes"):
        return True
    get_console().line("not approved; nothing was started.")
    return False


def _prepare_run_dir(cfg: RunConfig, ws: Workspace, rd: RunDir | None, pf: Preflight, summary: str, *,
                     changed: bool, approved_by: str, policy: dict[str, Any],
                     ) -> tuple[RunDir, dict[str, Any], Workspace]:
    """A new run dir (created with its starting files in one step) or the resumed one; then the
    config, the approval and the label-mapped CSVs. Returns the workspace the phases read."""
    from raypipe.backends import stage_backbone
    from raypipe.labelled import mapped_workspace
    from raypipe.preflight import resolve_run_spec

    def write(at: RunDir, final: RunDir, run_spec: dict[str, Any] | None) -> None:
        if run_spec is not None:
            # Staged before run_spec.yaml is written: every phase's spec names the backbone file.
            run_spec = stage_backbone(cfg, at.root, run_spec, final_root=final.root)
            atomic_write_text(at.run_spec, dump_spec(run_spec))
            pipeline_state.save(at, pipeline_state.new_state())
        resolved = {"workspace": str(ws.root), "run_dir": str(final.root), "run_spec": str(final.run_spec),
                    "backbone_substitution": pf.facts.get("backbone_substitution"),
                    "config_digest": config_digest(cfg), "execution_policy": policy}
        mapped_workspace(ws, at.labels)
        atomic_write_text(at.config_yaml, dump_config(cfg, resolved=resolved))
        if changed or not at.preflight_md.exists():
            atomic_write_text(at.preflight_md, summary + f"\n\nApproved: {datetime.now().isoformat(timespec='seconds')}"
                                                        f" ({approved_by})\n")

    if rd is None:
        rd = RunDir.create(ws.root, populate=lambda staging, final: write(staging, final,
                                                                          resolve_run_spec(cfg, ws.spec)[0]))
        run_spec = load_spec(rd.run_spec)
    else:
        run_spec = load_spec(rd.run_spec)
        write(rd, rd, None)
        pipeline_state.set_run_status(rd, "in_progress")
    return rd, run_spec, mapped_workspace(ws, rd.labels, write=False)


def _execute(cfg: RunConfig, rd: RunDir, ws: Workspace, run_spec: dict[str, Any], started: float,
             policy: dict[str, Any], deadline: float | None = None) -> int:
    from raypipe.pipeline import Pipeline
    from raypipe.tracking import StoreError

    console = get_console()
    try:
        tracking = _start_tracking(cfg, rd)
    except StoreError as exc:  # a store raypipe will not repair: say which file, start nothing
        console.line(f"MLflow tracking store: {exc}. Fix or move it (or set tracking.enabled=false), then resume: "
                     f"{resume_command(rd)}", level="error")
        return EXIT_FAILED
    console.line(f"run dir: {rd.root}")
    status = "FAILED"
    try:
        outcome = Pipeline(rd, cfg, ws, run_spec, tracking=tracking, execution_policy=policy,
                           deadline=deadline).run()
        status = "FINISHED" if outcome.status == "complete" else "FAILED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise  # _run records the run as interrupted
    except Exception as exc:
        pipeline_state.set_run_status(rd, "failed", error=f"{type(exc).__name__}: {exc}")
        console.line(f"{type(exc).__name__}: {exc}. Fix the cause, then resume: {resume_command(rd)}",
                     level="error")
        raise
    finally:
        if tracking is not None:
            from raypipe import tracking as tr

            tr.end_pipeline_run(tracking, status)
    console.closing_summary(rd, outcome.status, time.monotonic() - started, tracking)
    if outcome.status != "complete":
        console.line(outcome.message, level="error")
        return EXIT_FAILED
    return EXIT_OK


def _start_tracking(cfg: RunConfig, rd: RunDir) -> Any:
    if not cfg.tracking.enabled:
        return None
    from raypipe import tracking as tr

    uri = tr.resolve_tracking_uri(cfg.tracking.tracking_uri, Path.cwd())
    tracking = tr.start_pipeline_run(uri, cfg.tracking.experiment_name, rd.root, _run_tags(cfg))
    # The effective config, dotted, so runs compare side by side in `mlflow ui` (secrets are filtered).
    tr.pipeline_logger(tracking).log_params({k: v for k, v in cfg.flat().items() if k != "workspace"})
    return tracking


def _run_tags(cfg: RunConfig) -> dict[str, str]:
    import subprocess

    tags = {"raypipe.config_digest": config_digest(cfg), "raypipe.backend": cfg.backend}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=5)
        if commit.returncode == 0:
            tags["raypipe.git_commit"] = commit.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return tags


if __name__ == "__main__":
    sys.exit(main())
