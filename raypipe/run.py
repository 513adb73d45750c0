"""``python -m raypipe.run``: the whole pipeline behind one pre-flight gate.

Exit codes: 0 complete · 1 failed (hard stop, BLOCKER, bad input) · 2 approval needed (no TTY, no --yes)
· 130 interrupted (resumable).
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raypipe import pipeline_state
from raypipe._io import atomic_write_text
from raypipe.config import (
    ConfigError,
    RunConfig,
    build_config,
    config_digest,
    dump_config,
    load_config,
    read_saved_config,
)
from raypipe.rundir import RunDir, resume_command
from raypipe.spec import dump_spec, load_spec

if TYPE_CHECKING:
    from raypipe.preflight import Preflight
    from raypipe.workspace import Workspace

log = logging.getLogger("raypipe")
DEFAULT_EXPERIMENT = Path("experiments") / "aoi_default.yaml"
DEFAULT_WORKSPACE = Path("workspace")
EXIT_OK, EXIT_FAILED, EXIT_APPROVAL, EXIT_INTERRUPTED = 0, 1, 2, 130


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m raypipe.run", description=(__doc__ or "").splitlines()[0])
    p.add_argument("--config", help="experiment YAML merged onto the package defaults")
    p.add_argument("--workspace", help="workspace root (default: config 'workspace', ./workspace)")
    p.add_argument("--yes", action="store_true", help="approve the pre-flight summary without a prompt")
    p.add_argument("--dry-run", action="store_true", help="pre-flight only; nothing is written under results/")
    p.add_argument("--resume", metavar="RD", help="continue an interrupted run from its run dir")
    p.add_argument("--ray-address", help="join a running Ray cluster ('auto' or host:port)")
    p.add_argument("overrides", nargs="*", metavar="key.path=value")
    return p


def resolve_config(a: argparse.Namespace) -> tuple[RunConfig, bool]:
    """(config, changed). A new run: defaults ← --config (default ``experiments/aoi_default.yaml``) ←
    overrides. ``--resume RD``: the run's saved ``config.yaml`` ← any new layers; ``changed`` (which
    re-opens the gate) is whether that changed anything but the Ray address."""
    extra: list[tuple[str, dict[str, Any]]] = []
    if a.ray_address:
        extra.append(("--ray-address", {"ray_address": a.ray_address}))
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

        print(f"No workspace at {workspace}: generating the embedded demo workspace (seed 0)…")
        generate_demo(workspace, seed=0)
        return workspace.resolve()
    print(f"error: workspace {workspace} does not exist", file=sys.stderr)
    return None


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    a = _parser().parse_args(argv)
    _quiet_mlflow(a)
    try:
        cfg, changed = resolve_config(a)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    workspace = _workspace(cfg, a)
    if workspace is None:
        return EXIT_FAILED
    if not a.resume:
        cfg = cfg.replace(workspace=str(workspace))
    rd = RunDir(a.resume).resolve() if a.resume else None
    from raypipe._ray import ray_session

    with ray_session(cfg.ray_address):
        return _run(a, cfg, changed, workspace, rd)


def _quiet_mlflow(a: argparse.Namespace) -> None:
    """MLflow's chatter off unless ``--verbose``: before Ray starts, so its workers inherit the setting."""
    from raypipe.tracking import set_mlflow_verbosity

    set_mlflow_verbosity(bool(getattr(a, "verbose", False)))


def _run(a: argparse.Namespace, cfg: RunConfig, changed: bool, workspace: Path, rd: RunDir | None) -> int:
    docker = _docker_client(cfg)
    pf = _preflight(cfg, workspace, rd, docker)
    summary = pf.render()
    gate = rd is None or changed
    if gate:
        print(summary)
    if pf.blockers:
        print(f"\n{len(pf.blockers)} BLOCKER(s): nothing was started. Fix them and run again.", file=sys.stderr)
        return EXIT_FAILED
    if a.dry_run:
        print("\n--dry-run: pre-flight only; nothing written.")
        return EXIT_OK
    if gate and not _approved(a):
        return EXIT_APPROVAL
    from raypipe.workspace import load_workspace

    ws = load_workspace(workspace)
    rd, run_spec = _prepare_run_dir(cfg, ws, rd, pf, summary, changed=changed, approved_by="--yes" if a.yes else
                                    "interactive")
    if cfg.backend == "tao":
        # Pulls happen only now, after the gate, and only as the execution policy allows.
        from raypipe.backends.tao import pull_image
        from raypipe.preflight import container_images

        for image in container_images(cfg):
            pull_image(docker, image, cfg.execution_policy.model_dump())
    return _execute(cfg, rd, ws, run_spec)


def _docker_client(cfg: RunConfig) -> Any:
    """The docker SDK client for ``backend: tao`` (None elsewhere, or when no engine answers)."""
    if cfg.backend != "tao":
        return None
    from raypipe.backends.tao._docker import docker_client

    try:
        return docker_client()
    except Exception:  # a boundary: any failure to reach the engine is pre-flight's BLOCKER, not a crash
        return None


def _preflight(cfg: RunConfig, workspace: Path, rd: RunDir | None, docker: Any) -> Preflight:
    from raypipe.preflight import build_preflight, measure_probe, ray_cluster_info, resolve_run_spec
    from raypipe.workspace import WorkspaceError, load_workspace

    probe = None
    if cfg.preflight.probe:
        try:
            ws = load_workspace(workspace)
        except WorkspaceError:
            probe = None  # the workspace check reports the problem as a BLOCKER
        else:
            probe = measure_probe(cfg, ws, resolve_run_spec(cfg, ws.spec)[0])
    return build_preflight(cfg, workspace, ray_info=ray_cluster_info(), resume_rd=rd.root if rd else None,
                           docker_client=docker, probe=probe)


def _approved(a: argparse.Namespace) -> bool:
    if a.yes:
        return True
    if not sys.stdin.isatty():
        print("\nApproval needed: stdin is not a terminal. Re-run with --yes to approve the summary above.",
              file=sys.stderr)
        return False
    try:
        answer = input("\nApprove and run all three phases? [y/N] ")
    except EOFError:
        answer = ""
    if answer.strip().lower() in ("y", "yes"):
        return True
    print("Not approved; nothing was started.")
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


def _execute(cfg: RunConfig, rd: RunDir, ws: Workspace, run_spec: dict[str, Any]) -> int:
    from raypipe.pipeline import Pipeline, print_summary
    from raypipe.tracking import StoreError

    try:
        tracking = _start_tracking(cfg, rd)
    except StoreError as exc:  # a store raypipe will not repair: say which file, start nothing
        print(f"error: MLflow tracking store: {exc}\nFix or move it (or set tracking.enabled=false), then resume:\n"
              f"  {resume_command(rd)}", file=sys.stderr)
        return EXIT_FAILED
    print(f"\nrun dir: {rd.root}")
    status = "FAILED"
    try:
        outcome = Pipeline(rd, cfg, ws, run_spec, tracking=tracking).run()
        status = "FINISHED" if outcome.status == "complete" else "FAILED"
    except KeyboardInterrupt:
        status = "KILLED"
        pipeline_state.set_run_status(rd, "interrupted")
        print(f"\nInterrupted. The run is resumable from disk:\n  {resume_command(rd)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        pipeline_state.set_run_status(rd, "failed", error=f"{type(exc).__name__}: {exc}")
        print(f"\nerror: {type(exc).__name__}: {exc}\nFix the cause, then resume:\n  {resume_command(rd)}",
              file=sys.stderr)
        raise
    finally:
        if tracking is not None:
            from raypipe import tracking as tr

            tr.end_pipeline_run(tracking, status)
    print("\n" + print_summary(outcome))
    if outcome.status != "complete":
        print(f"\n{outcome.message}", file=sys.stderr)
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
