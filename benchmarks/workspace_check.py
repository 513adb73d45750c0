"""What opening every image costs the workspace check, cold and from the per-user cache.

One demo workspace, in one run:
- ``hash only``: sha256 of every image file, serially (the bare reference: reading the bytes);
- ``cold, 1 process`` / ``cold, N processes``: ``check_workspace`` with an empty cache, decoding
  every file serially and in a process pool of N (spawned workers import the package first);
- ``warm``: ``check_workspace`` again with the cache the cold run filled (nothing decoded).
Ratios are against ``hash only``. The machine's load changes the absolute numbers, not the story.

    python benchmarks/workspace_check.py [--smoke-test] [--scale F] [--workers N] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke-test", action="store_true", help="a tiny workspace: checks the script runs")
    ap.add_argument("--scale", type=float, default=1.0, help="demo workspace scale (1.0: ~10k image files)")
    ap.add_argument("--workers", type=int, default=None, help="pool size (default: CPUs this process may use)")
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args()
    if args.smoke_test:
        args.scale = 0.02

    from raypipe.workspace import ImageCheckOptions, check_workspace, generate_demo
    from raypipe.workspace._images import machine_workers

    workers = args.workers or machine_workers()
    with tempfile.TemporaryDirectory(prefix="workspace_check_") as tmp:
        ws = generate_demo(Path(tmp) / "ws", seed=0, scale=args.scale)
        files = sorted(p for p in (ws / "images").rglob("*") if p.is_file())
        timings: dict[str, float] = {}

        t0 = time.perf_counter()
        for p in files:
            hashlib.sha256(p.read_bytes()).hexdigest()
        timings["hash only"] = time.perf_counter() - t0

        def timed(name: str, options: ImageCheckOptions) -> None:
            t = time.perf_counter()
            report = check_workspace(ws, images=options)
            timings[name] = time.perf_counter() - t
            assert report.ok, report.summary_text

        timed("cold, 1 process", ImageCheckOptions(cache_dir=Path(tmp) / "cache1", workers=1))
        timed(f"cold, {workers} processes", ImageCheckOptions(cache_dir=Path(tmp) / "cacheN", workers=workers))
        timed("warm (cache)", ImageCheckOptions(cache_dir=Path(tmp) / "cacheN", workers=workers))

    ref = timings["hash only"]
    print(f"{len(files)} image files (scale {args.scale}), pool of {workers}")
    for name, sec in timings.items():
        print(f"  {name:<22} {sec:7.2f} s   {sec / ref:5.1f}x hash-only")
    if args.json_out:
        args.json_out.write_text(json.dumps({"files": len(files), "workers": workers, "seconds": timings}, indent=2))


if __name__ == "__main__":
    main()
