"""``python -m raypipe.workspace demo DIR [--seed N] [--scale F]`` and ``... check DIR [--label-map OK=PASS]``.

``check`` exits 0 when the workspace has no problems, 1 when it has any (all of them are listed),
2 for a usage error; it never writes into the workspace.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from raypipe.workspace._labels import label_map_argument


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m raypipe.workspace",
                                     description="Generate the demo AOI workspace or validate a workspace.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="generate the embedded synthetic PCB AOI workspace (TAO layout)")
    demo.add_argument("dir", type=Path, help="workspace directory to create (must not exist or be empty)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (same seed → byte-identical workspace)")
    demo.add_argument("--scale", type=float, default=1.0, help="multiplies every row count (default 1.0)")
    check = sub.add_parser("check", help="validate a workspace; reports every problem, writes nothing into it")
    check.add_argument("dir", type=Path, help="workspace root")
    check.add_argument("--label-map", type=label_map_argument, action="append", default=[], metavar="LABEL=TARGET",
                       help="what a label means, e.g. OK=PASS or n/a=missing (case-insensitive; repeatable)")
    check.add_argument("--max-pixels", type=_positive_int, default=None,
                       help="largest image (width x height) accepted; bigger ones are reported as bombs")
    check.add_argument("--no-cache", action="store_true",
                       help="decode every image again instead of trusting the per-user image check cache")
    args = parser.parse_args(argv)

    if args.command == "demo":
        return _demo(args.dir, args.seed, args.scale)
    return _check(args.dir, dict(args.label_map), args.max_pixels, not args.no_cache)


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


def _check(root: Path, label_map: dict[str, str] | None = None, max_pixels: int | None = None,
           cache: bool = True) -> int:
    from dataclasses import replace

    from raypipe.workspace._check import check_workspace
    from raypipe.workspace._images import ImageCheckOptions

    options = ImageCheckOptions()
    if max_pixels is not None:
        options = replace(options, max_pixels=max_pixels)
    if not cache:
        options = replace(options, cache_dir=None)
    report = check_workspace(root, label_map=label_map, images=options)
    print(report.summary_text)
    if not report.ok:
        n = len(report.problems)
        print(f"error: {n} problem{'s' if n != 1 else ''} in the workspace {root} (listed above); fix them and "
              f"run the check again", file=sys.stderr)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
