"""Run or resume the DEFT loop alone (without Phases 1 and 3).

    python -m raypipe.deft run RD --workspace WS [--config FILE] [--baseline-ckpt CKPT]
                                  [--num-cpus N] [key.path=value ...]

``RD`` is created when missing; running the same command again resumes from ``RD/deft_state.json``.
``--baseline-ckpt`` pre-seeds the baseline with an already trained checkpoint (copied to
``RD/baseline/train/``, SPEC §7.1), so the loop starts at the baseline's KPI evaluation.
Exit status: 0 complete, 1 hard stop (the message ends with what to fix and the resume command).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m raypipe.deft", description=__doc__.split("\n\n")[0])
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
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import ray

    from raypipe.config import load_config
    from raypipe.deft.baseline import seed_baseline
    from raypipe.deft.driver import LoopConfig, LoopContext, config_block, run_loop
    from raypipe.deft.state import initialise_state, state_path_of
    from raypipe.spec import load_spec, nest_dotted

    cfg = load_config(args.config, args.overrides)
    ws = args.workspace.resolve()
    spec = nest_dotted(dict(cfg.get("spec_overrides") or {}), load_spec(ws / "specs" / "baseline_spec.yaml"))
    backend_options = {"device": cfg.get("device", "auto")} if cfg["backend"] == "builtin" else {}
    ctx = LoopContext.from_root(ws, spec=spec, backend=cfg["backend"], backend_options=backend_options)
    lc = LoopConfig.from_config(cfg)
    rd = args.run_dir.resolve()
    if not state_path_of(rd).is_file():
        baseline = None
        if args.baseline_ckpt is not None:
            from raypipe._io import atomic_write_text
            from raypipe.spec import dump_spec

            ckpt = seed_baseline(rd, args.baseline_ckpt)
            spec_file = atomic_write_text(rd / "baseline" / "train" / "experiment.yaml", dump_spec(spec))
            baseline = {"best_ckpt_path": str(ckpt), "training_spec": str(spec_file.resolve()),
                        "source": "pre-seeded", "train_metric": None}
        initialise_state(rd, config_block=config_block(ctx, lc, rd), metric_contract=lc.metric_contract,
                         max_iterations=lc.max_iterations, execution_policy=dict(cfg["execution_policy"]),
                         baseline=baseline)
    if not ray.is_initialized():
        # address="local": never attach to somebody else's `ray start` cluster on this machine
        ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=True)
    try:
        outcome = run_loop(rd, lc, ctx)
    finally:
        ray.shutdown()
    print(outcome.message, flush=True)
    return 0 if outcome.status == "complete" else 1


if __name__ == "__main__":
    sys.exit(main())
