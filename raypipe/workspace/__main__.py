"""``python -m raypipe.workspace demo DIR [--seed N] [--scale F]`` and ``... check DIR`` (SPEC §1)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m raypipe.workspace",
                                     description="Generate the demo AOI workspace or validate a workspace.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="generate the embedded synthetic PCB AOI workspace (TAO layout)")
    demo.add_argument("dir", type=Path, help="workspace directory to create (must not exist or be empty)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (same seed → byte-identical workspace)")
    demo.add_argument("--scale", type=float, default=1.0, help="multiplies every row count (default 1.0)")
    check = sub.add_parser("check", help="validate a workspace; reports every problem, no side effects")
    check.add_argument("dir", type=Path, help="workspace root")
    args = parser.parse_args(argv)

    if args.command == "demo":
        return _demo(args.dir, args.seed, args.scale)
    return _check(args.dir)


def _demo(root: Path, seed: int, scale: float) -> int:
    from raypipe.workspace._demo import generate_demo

    if not scale > 0:
        print(f"error: --scale must be > 0, got {scale}", file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        path = generate_demo(root, seed=seed, scale=scale)
    except FileExistsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"demo workspace written to {path} in {time.monotonic() - started:.1f} s (seed {seed}, scale {scale})")
    return _check(path)


def _check(root: Path) -> int:
    from raypipe.workspace._check import check_workspace

    report = check_workspace(root)
    print(report.summary_text)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
