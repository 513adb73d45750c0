"""Run or resume the DEFT loop alone (without Phases 1 and 3).

    python -m raypipe.deft run RD --workspace WS [--config FILE] [--baseline-ckpt CKPT]
                                  [--num-cpus N] [key.path=value ...]

``RD`` is created when missing; running the same command again resumes from ``RD/deft_state.json``.
``--baseline-ckpt`` pre-seeds the baseline with an already trained checkpoint (copied to
``RD/baseline/train/``), so the loop starts at the baseline's KPI evaluation. The config is the
same typed tree as ``python -m raypipe.run`` (the ``tao:`` section included).
Exit status: 0 complete, 1 hard stop (the message ends with what to fix and the resume command).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m raypipe.deft", description=(__doc__ or "").split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run or resume the loop of a run dir")
    run.add_argument("run_dir", type=Path)
    run.add_argument("--workspace", type=Path, required=True)
    run.add_argument("--config", type=Path, default=None)
    run.add_argument("--baseline-ckpt", type=Path, default=None)
    run.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: all)")
    # key.path=value overrides may sit anywhere on the line (argparse cannot intermix them with a subparser)
    args, rest = ap.parse_known_args(argv)
    bad = [r for r in rest if "=" not in r or r.startswith("-")]
    if bad:
        ap.error(f"unrecognized arguments: {' '.join(bad)}")
    args.overrides = rest
    return args


def _seeded_baseline(rd: Any, ckpt: Path, spec: dict[str, Any]) -> dict[str, Any]:
    from raypipe._io import atomic_write_text
    from raypipe.deft.baseline import seed_baseline
    from raypipe.rundir import BASELINE
    from raypipe.spec import dump_spec

    copied = seed_baseline(rd.root, ckpt)
    spec_file = atomic_write_text(rd.iteration(BASELINE).train.spec, dump_spec(spec))
    return {"best_ckpt_path": str(copied), "training_spec": str(spec_file.resolve()), "source": "pre-seeded",
            "train_metric": None}


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from raypipe import tao_interop as ti
    from raypipe._ray import ray_session
    from raypipe.backends import backend_options, stage_backbone
    from raypipe.config import ConfigError, load_config
    from raypipe.deft.context import LoopContext, config_block
    from raypipe.deft.driver import refresh_report, run_loop
    from raypipe.deft.state import initialise_state, load_state
    from raypipe.rundir import RunDir
    from raypipe.spec import load_spec, nest_dotted
    from raypipe.workspace._layout import SPEC_FILE

    try:
        cfg = load_config(args.config, args.overrides, extra=[("--workspace", {"workspace": str(args.workspace)})])
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    ws = args.workspace.resolve()
    rd = RunDir(args.run_dir).resolve()
    spec = stage_backbone(cfg, rd.root, nest_dotted(dict(cfg.spec_overrides), load_spec(ws / SPEC_FILE)))
    try:
        policy = load_state(rd.deft_state)["execution_policy"] if rd.deft_state.is_file() \
            else cfg.execution_policy.tao_policy()
    except ti.PolicyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    os.environ.update(ti.offline_environment(policy))  # before Ray starts (see raypipe.run)
    inputs = LoopContext.from_root(ws, spec=spec, backend=cfg.backend,
                                   backend_options=backend_options(cfg, workspace_root=ws, run_dir=rd.root,
                                                                   execution_policy=policy))
    if not rd.deft_state.is_file():
        baseline = _seeded_baseline(rd, args.baseline_ckpt, spec) if args.baseline_ckpt is not None else None
        initialise_state(rd.root, config_block=config_block(cfg, inputs, rd),
                         metric_contract=cfg.phase2.metric_contract, max_iterations=cfg.phase2.max_iterations,
                         execution_policy=policy, baseline=baseline)
        refresh_report(rd.root)
    with ray_session(cfg.ray_address, num_cpus=args.num_cpus):
        outcome = run_loop(rd.root, cfg, inputs)
    print(outcome.message, flush=True)
    return 0 if outcome.status == "complete" else 1


if __name__ == "__main__":
    sys.exit(main())
