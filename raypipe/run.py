"""``python -m raypipe.run``: the whole pipeline behind one pre-flight gate.

Exit codes: 0 complete · 1 failed (hard stop, BLOCKER, bad input) · 2 approval needed (no TTY, no --yes)
· 130 interrupted (resumable).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raypipe import pipeline_state
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
    from raypipe.budget import Timing
    from raypipe.preflight import Preflight
    from raypipe.workspace import Workspace

log = logging.getLogger("raypipe")
DEFAULT_EXPERIMENT = Path("experiments") / "aoi_default.yaml"
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
        before = build_config([], base=saved, base_source=str(saved_path))
        return cfg, config_digest(cfg, ignore=("ray_address",)) != config_digest(before, ignore=("ray_address",))
    config_file = a.config if a.config is not None else (DEFAULT_EXPERIMENT if DEFAULT_EXPERIMENT.is_file() else None)
    if a.workspace:
        extra.append(("--workspace", {"workspace": a.workspace}))
    return load_config(config_file, a.overrides, extra=extra), True


def _workspace(cfg: RunConfig, a: argparse.Namespace) -> Path | None:
    """The workspace root, absolute; the embedded demo is generated when the default one is missing."""
    workspace = Path(cfg.workspace)
    if a.resume or workspace.exists():
        return workspace.resolve()
    if a.workspace is None and workspace == DEFAULT_WORKSPACE or str(workspace) in ("./workspace", "workspace"):
        from raypipe.workspace import generate_demo

        get_console().line(f"no workspace at {workspace}: generating the embedded demo workspace (seed 0)…")
        generate_demo(workspace, seed=0)
        return workspace.resolve()
    get_console().line(f"workspace {workspace} does not exist", level="error")
    return None


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    a = _parser().parse_args(argv)
    _console_setup(a.verbose)
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
    from raypipe._ray import ray_session

    with ray_session(cfg.ray_address, dashboard=a.dashboard, log_to_driver=a.verbose,
                     logging_level=logging.INFO if a.verbose else logging.ERROR):
        _show_dashboard(a.dashboard)
        return _run(a, cfg, changed, workspace, rd, started)


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
         started: float) -> int:
    console = get_console()
    docker = _docker_client(cfg)
    cfg, timing = _time_model(cfg, workspace, rd, started)
    pf = _preflight(cfg, workspace, rd, docker, timing)
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
    if gate and not _approved(a):
        return EXIT_APPROVAL
    from raypipe.workspace import load_workspace

    ws = load_workspace(workspace)
    rd, run_spec = _prepare_run_dir(cfg, ws, rd, pf, summary, changed=changed, approved_by="--yes" if a.yes else
                                    "interactive")
    if timing is not None:
        atomic_write_json(rd.time_plan, timing.to_json())
    if cfg.backend == "tao":
        # Pulls happen only now, after the gate, and only as the execution policy allows.
        from raypipe.backends.tao import pull_image
        from raypipe.preflight import container_images

        for image in container_images(cfg):
            pull_image(docker, image, cfg.execution_policy.model_dump())
    return _execute(cfg, rd, ws, run_spec, started)


def _docker_client(cfg: RunConfig) -> Any:
    """The docker SDK client for ``backend: tao`` (None elsewhere, or when no engine answers)."""
    if cfg.backend != "tao":
        return None
    from raypipe.backends.tao._docker import docker_client

    try:
        return docker_client()
    except Exception:  # a boundary: any failure to reach the engine is pre-flight's BLOCKER, not a crash
        return None


def _preflight(cfg: RunConfig, workspace: Path, rd: RunDir | None, docker: Any, timing: Timing | None) -> Preflight:
    from raypipe.preflight import build_preflight, ray_cluster_info

    return build_preflight(cfg, workspace, ray_info=ray_cluster_info(), resume_rd=rd.root if rd else None,
                           docker_client=docker, timing=timing)


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
        ws = load_workspace(workspace)
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
                     changed: bool, approved_by: str) -> tuple[RunDir, dict[str, Any]]:
    """A new run dir (run spec, pipeline state) or the resumed one; then the config and the approval."""
    from raypipe.preflight import resolve_run_spec

    if rd is None:
        rd = RunDir.create(ws.root)
        run_spec = resolve_run_spec(cfg, ws.spec)[0]
        atomic_write_text(rd.run_spec, dump_spec(run_spec))
        pipeline_state.save(rd, pipeline_state.new_state())
    else:
        run_spec = load_spec(rd.run_spec)
    resolved = {"workspace": str(ws.root), "run_dir": str(rd.root), "run_spec": str(rd.run_spec),
                "backbone_substitution": pf.facts.get("backbone_substitution"), "config_digest": config_digest(cfg)}
    atomic_write_text(rd.config_yaml, dump_config(cfg, resolved=resolved))
    if changed or not rd.preflight_md.exists():
        atomic_write_text(rd.preflight_md, summary + f"\n\nApproved: {datetime.now().isoformat(timespec='seconds')}"
                                                     f" ({approved_by})\n")
    return rd, run_spec


def _execute(cfg: RunConfig, rd: RunDir, ws: Workspace, run_spec: dict[str, Any], started: float) -> int:
    from raypipe.pipeline import Pipeline

    console = get_console()
    tracking = _start_tracking(cfg, rd)
    console.line(f"run dir: {rd.root}")
    status = "FAILED"
    try:
        outcome = Pipeline(rd, cfg, ws, run_spec, tracking=tracking).run()
        status = "FINISHED" if outcome.status == "complete" else "FAILED"
    except KeyboardInterrupt:
        status = "KILLED"
        pipeline_state.set_run_status(rd, "interrupted")
        console.line(f"interrupted. The run is resumable from disk: {resume_command(rd)}", level="error")
        return EXIT_INTERRUPTED
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
