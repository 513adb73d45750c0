"""``python -m raypipe.run``: the whole pipeline behind one pre-flight gate (SPEC §1, §8).

Exit codes: 0 complete · 1 failed (hard stop, BLOCKER, bad input) · 2 approval needed (no TTY, no --yes)
· 130 interrupted (resumable).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from raypipe import pipeline_state
from raypipe._io import atomic_write_text
from raypipe.config import ConfigError, config_digest, dump_config, load_config, package_defaults
from raypipe.spec import dump_spec, flatten, load_spec

log = logging.getLogger("raypipe")
DEFAULT_EXPERIMENT = Path("experiments") / "aoi_default.yaml"
DEFAULT_WORKSPACE = Path("workspace")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m raypipe.run", description=__doc__.splitlines()[0])
    p.add_argument("--config", help="experiment YAML merged onto the package defaults")
    p.add_argument("--workspace", help="workspace root (default: config 'workspace', ./workspace)")
    p.add_argument("--yes", action="store_true", help="approve the pre-flight summary without a prompt")
    p.add_argument("--dry-run", action="store_true", help="pre-flight only; nothing is written under results/")
    p.add_argument("--resume", metavar="RD", help="continue an interrupted run from its run dir")
    p.add_argument("--ray-address", help="join a running Ray cluster ('auto' or host:port)")
    p.add_argument("overrides", nargs="*", metavar="key.path=value")
    return p


def _resolve_config(a: argparse.Namespace) -> tuple[dict[str, Any], bool]:
    """(config, changed) — on resume, the saved config plus any new layers; ``changed`` re-opens the gate."""
    overrides = list(a.overrides)
    if a.ray_address:
        overrides.append(f"ray_address={a.ray_address}")
    if a.resume:
        saved_path = Path(a.resume) / "config.yaml"
        if not saved_path.is_file():
            raise ConfigError(f"{saved_path}: not a raypipe run dir (no config.yaml)")
        saved = yaml.safe_load(saved_path.read_text(encoding="utf-8"))
        saved.pop("resolved", None)
        layers = [a.config] if a.config else []
        if not layers and not a.overrides:
            if a.ray_address:
                saved["ray_address"] = a.ray_address
            return saved, False
        fresh = load_config(a.config, overrides)
        # Keys the user did not touch keep the saved run's values.
        base = load_config(None, [])
        merged = _overlay(saved, _diff(fresh, base))
        return merged, config_digest({**merged, "ray_address": None}) != config_digest({**saved, "ray_address": None})
    config_file = a.config
    if config_file is None and DEFAULT_EXPERIMENT.is_file():
        config_file = str(DEFAULT_EXPERIMENT)
    cfg = load_config(config_file, overrides)
    if a.workspace:
        cfg["workspace"] = a.workspace
    return cfg, True


def _diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in a.items():
        if isinstance(v, dict) and isinstance(b.get(k), dict):
            d = _diff(v, b[k])
            if d:
                out[k] = d
        elif b.get(k) != v:
            out[k] = v
    return out


def _overlay(base: dict[str, Any], layer: dict[str, Any]) -> dict[str, Any]:
    from raypipe.spec import deep_merge

    return deep_merge(base, layer)


def _new_run_dir(workspace: Path) -> Path:
    """``results/run_<YYYYMMDD_HHMMSS>``, created exclusively: two runs never share one."""
    results = workspace / "results"
    results.mkdir(parents=True, exist_ok=True)
    t = time.time()
    for _ in range(3600):
        rd = results / f"run_{datetime.fromtimestamp(t).strftime('%Y%m%d_%H%M%S')}"
        try:
            rd.mkdir()
            return rd.resolve()
        except FileExistsError:
            t += 1
    raise RuntimeError(f"could not create a unique run dir under {results}")


def _start_ray(address: str | None) -> bool:
    """Connect to (or start) Ray; True when this process started it (and so must stop it)."""
    import ray

    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
        return False
    # address="local": always a fresh Ray of our own. A bare ray.init() would join any cluster that
    # `ray start` left on this machine — someone else's, with someone else's resources.
    ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING)
    return True


def _ask(prompt: str) -> bool:
    try:
        answer = input(prompt)
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    a = _parser().parse_args(argv)
    try:
        cfg, changed = _resolve_config(a)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    if a.resume:
        rd: Path | None = Path(a.resume).resolve()
        workspace = Path(cfg["workspace"])
    else:
        rd = None
        workspace = Path(cfg["workspace"])
        if not workspace.exists():
            if a.workspace is None and workspace == DEFAULT_WORKSPACE or str(workspace) in ("./workspace", "workspace"):
                from raypipe.workspace import generate_demo

                print(f"No workspace at {workspace}: generating the embedded demo workspace (seed 0)…")
                generate_demo(workspace, seed=0)
            else:
                print(f"error: workspace {workspace} does not exist", file=sys.stderr)
                return 1
        workspace = workspace.resolve()
        cfg["workspace"] = str(workspace)

    started_ray = _start_ray(cfg.get("ray_address"))
    try:
        return _run(a, cfg, changed, workspace, rd)
    finally:
        if started_ray:
            import ray

            ray.shutdown()


def _run(a: argparse.Namespace, cfg: dict[str, Any], changed: bool, workspace: Path, rd: Path | None) -> int:
    from raypipe.preflight import build_preflight, measure_probe, ray_cluster_info
    from raypipe.workspace import load_workspace

    docker_client = None
    if cfg["backend"] == "tao":
        from raypipe.backends.tao._docker import docker_client

        try:
            docker_client = docker_client()
        except Exception:  # noqa: BLE001 - no engine: pre-flight reports it as a BLOCKER
            docker_client = None
    probe = None
    if cfg["preflight"]["probe"]:
        try:
            ws_for_probe = load_workspace(workspace)
            probe = measure_probe(cfg, ws_for_probe, _run_spec(cfg, ws_for_probe))
        except Exception:  # noqa: BLE001 - the workspace check reports the problem as a BLOCKER
            probe = None
    pf = build_preflight(cfg, workspace, ray_info=ray_cluster_info(), resume_rd=rd, docker_client=docker_client,
                         probe=probe)
    summary = pf.render()
    if rd is None or changed:
        print(summary)
    if pf.blockers:
        print(f"\n{len(pf.blockers)} BLOCKER(s): nothing was started. Fix them and run again.", file=sys.stderr)
        return 1
    if a.dry_run:
        print("\n--dry-run: pre-flight only; nothing written.")
        return 0
    if rd is None or changed:
        if not a.yes:
            if not sys.stdin.isatty():
                print("\nApproval needed: stdin is not a terminal. Re-run with --yes to approve the summary above.",
                      file=sys.stderr)
                return 2
            if not _ask("\nApprove and run all three phases? [y/N] "):
                print("Not approved; nothing was started.")
                return 2

    ws = load_workspace(workspace)
    if rd is None:
        rd = _new_run_dir(workspace)
        run_spec = _run_spec(cfg, ws)
        atomic_write_text(rd / "run_spec.yaml", dump_spec(run_spec))
        pipeline_state.save(rd, pipeline_state.new_state())
    else:
        run_spec = load_spec(rd / "run_spec.yaml")
    saved = dict(cfg)
    saved["resolved"] = {"workspace": str(workspace), "run_dir": str(rd), "run_spec": str(rd / "run_spec.yaml"),
                         "backbone_substitution": pf.facts.get("backbone_substitution"),
                         "config_digest": config_digest(cfg)}
    atomic_write_text(rd / "config.yaml", dump_config(saved))
    if changed or not (rd / "preflight.md").exists():
        atomic_write_text(rd / "preflight.md", summary + f"\n\nApproved: {datetime.now().isoformat(timespec='seconds')}"
                          f" ({'--yes' if a.yes else 'interactive'})\n")
    if cfg["backend"] == "tao":
        # Pulls happen only now, after the gate, and only as the execution policy allows.
        from raypipe.backends.tao import pull_image

        for image in filter(None, [cfg["tao"]["image"], cfg["tao"].get("anomalygen_image")]):
            pull_image(docker_client, image, cfg["execution_policy"])

    tracking = None
    if cfg["tracking"]["enabled"]:
        from raypipe import tracking as tr

        uri = tr.resolve_tracking_uri(cfg["tracking"]["tracking_uri"], Path.cwd())
        tracking = tr.start_pipeline_run(uri, cfg["tracking"]["experiment_name"], rd, _run_tags(cfg))
        # The effective config, dotted, so runs compare side by side in `mlflow ui` (secrets are filtered).
        tr.pipeline_logger(tracking).log_params({k: v for k, v in flatten(cfg).items() if k != "workspace"})
    from raypipe.pipeline import Pipeline, print_summary, resume_hint

    print(f"\nrun dir: {rd}")
    status = "FAILED"
    try:
        outcome = Pipeline(rd, cfg, ws, run_spec, tracking=tracking).run()
        status = "FINISHED" if outcome.status == "complete" else "FAILED"
    except KeyboardInterrupt:
        status = "KILLED"
        pipeline_state.set_run_status(rd, "interrupted")
        print(f"\nInterrupted. The run is resumable from disk:\n  {resume_hint(rd)}", file=sys.stderr)
        return 130
    except Exception as exc:
        pipeline_state.set_run_status(rd, "failed", error=f"{type(exc).__name__}: {exc}")
        print(f"\nerror: {type(exc).__name__}: {exc}\nFix the cause, then resume:\n  {resume_hint(rd)}", file=sys.stderr)
        raise
    finally:
        if tracking is not None:
            from raypipe import tracking as tr

            tr.end_pipeline_run(tracking, status)
    print("\n" + print_summary(outcome))
    if outcome.status != "complete":
        print(f"\n{outcome.message}", file=sys.stderr)
        return 1
    return 0


def _run_spec(cfg: dict[str, Any], ws: Any) -> dict[str, Any]:
    from raypipe.preflight import Preflight, _resolve_spec

    return _resolve_spec(Preflight(), cfg, ws.spec)


def _run_tags(cfg: dict[str, Any]) -> dict[str, str]:
    import subprocess

    tags = {"raypipe.config_digest": config_digest(cfg), "raypipe.backend": cfg["backend"]}
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
