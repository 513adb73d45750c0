"""Pool-embedding throughput: in process vs Ray tasks on 1 and 2 workers (and Ray Data for comparison).

Embeds a demo workspace's mining pool with :func:`raypipe.embedding.embed_rows` and prints rows/s:

- ``inline``: ``workers=0``, this process, one thread (the bare reference);
- ``tasks×1`` / ``tasks×2``: Ray tasks over row chunks, at most 1 / 2 in flight (one CPU each);
- ``ray-data×2``: Ray Data ``map_batches`` with 2 actors over the same rows, for the design choice;
- ``cache warm``: a second ``embed_rows`` over the same pool with a filled content-keyed cache
  (hashing every image's bytes, no embedding).

Each parallel variant is checked to return the inline vectors. Ray starts before the timings; a
first warm-up call starts the worker processes (their torch import is not counted).

    python benchmarks/pool_embedding.py                    # demo pool (1,200 rows), difference + imagenet
    python benchmarks/pool_embedding.py --embedders difference pixels --repeat 2
    python benchmarks/pool_embedding.py --smoke-test       # tiny pool, seconds (CI)

On a shared, loaded 2-core machine the ratios are what to read; absolute rows/s are pessimistic, and
two workers can only beat one when a second core is actually idle (the load average is printed).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raypipe.embedding import Embedder, EmbeddingCache, embed_rows, make_embedder
from raypipe.embedding._pool import chunk_size
from raypipe.workspace import ImageLayout, generate_demo, read_rows


def _timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t0, out


class _BatchEmbedder:
    """A Ray Data actor: holds one embedder, embeds each batch of rows."""

    def __init__(self, embedder: Embedder, images_dir: str) -> None:
        self.embedder, self.images_dir = embedder, Path(images_dir)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        vecs = self.embedder.embed(batch.drop(columns=["_row"]), self.images_dir)
        return pd.DataFrame({"_row": batch["_row"].to_numpy(), "vec": list(vecs)})


def ray_data_embed(embedder: Embedder, rows: pd.DataFrame, images_dir: Path, workers: int, batch: int) -> np.ndarray:
    import ray.data

    # one block per batch, made here: a single block would feed a single actor, and a repartition
    # task cannot be scheduled while the two actors hold both CPUs of a 2-CPU node
    rows = rows.assign(_row=np.arange(len(rows)))
    ds = ray.data.from_pandas([rows.iloc[s:s + batch] for s in range(0, len(rows), batch)])
    out = ds.map_batches(_BatchEmbedder, fn_constructor_args=(embedder, str(images_dir)), batch_format="pandas",
                         batch_size=batch, concurrency=workers, num_cpus=1).to_pandas()
    out = out.sort_values("_row")
    return np.stack(out["vec"].to_numpy()).astype(np.float32)


def bench(embedder: Embedder, rows: pd.DataFrame, images_dir: Path, *, chunk: int, repeat: int,
          ray_data: bool, cache_dir: Path) -> dict[str, float]:
    n = len(rows)
    t_inline, (ref, _) = _timed(embed_rows, embedder, rows, images_dir, workers=0)
    rates = {"inline": n / t_inline}
    embed_rows(embedder, rows.iloc[: 4 * chunk], images_dir, workers=2, chunk_rows=chunk)  # warm the workers
    for workers in (1, 2):
        best = np.inf
        for _ in range(repeat):
            t, (vecs, _) = _timed(embed_rows, embedder, rows, images_dir, workers=workers, chunk_rows=chunk)
            if not np.allclose(vecs, ref, rtol=1e-4, atol=1e-4):
                raise SystemExit(f"{embedder.name}: tasks x{workers} returned different vectors")
            best = min(best, t)
        rates[f"tasks x{workers}"] = n / best
    if ray_data:
        ray_data_embed(embedder, rows.iloc[:chunk], images_dir, 2, chunk)  # warm-up (plan, actors)
        t, vecs = _timed(ray_data_embed, embedder, rows, images_dir, 2, chunk)
        if not np.allclose(vecs, ref, rtol=1e-4, atol=1e-4):
            raise SystemExit(f"{embedder.name}: Ray Data returned different vectors")
        rates["ray-data x2"] = n / t
    cache = EmbeddingCache(cache_dir, embedder)
    embed_rows(embedder, rows, images_dir, workers=2, chunk_rows=chunk, cache=cache)
    t, (vecs, stats) = _timed(embed_rows, embedder, rows, images_dir, workers=0, cache=cache)
    if stats.cache_hits != n or not np.array_equal(vecs, ref):
        raise SystemExit(f"{embedder.name}: the warm cache did not serve every row ({stats})")
    rates["cache warm"] = n / t
    return rates


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke-test", action="store_true", help="tiny demo pool, difference embedder only")
    ap.add_argument("--workspace", type=Path, default=None, help="default: generate a demo (scale 1.0)")
    ap.add_argument("--embedders", nargs="+", default=["difference", "imagenet"])
    ap.add_argument("--chunk", type=int, default=None,
                    help="rows per task / batch (default: embed_rows' own choice for 2 workers)")
    ap.add_argument("--repeat", type=int, default=1, help="best of N for the task timings")
    ap.add_argument("--no-ray-data", action="store_true")
    args = ap.parse_args(argv)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    import torch

    torch.set_num_threads(1)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="pool_embedding_") as tmp:
        ws = args.workspace or generate_demo(Path(tmp) / "ws", seed=0, scale=0.1 if args.smoke_test else 1.0)
        rows = read_rows(Path(ws) / "augmentation" / "mining_pool" / "mining_pool.csv")
        from raypipe.spec import load_spec

        layout = ImageLayout.from_spec(load_spec(Path(ws) / "specs" / "baseline_spec.yaml"))
        names = ["difference"] if args.smoke_test else args.embedders
        chunk = 16 if args.smoke_test else args.chunk or chunk_size(len(rows), 2)
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            print(f"pool {len(rows)} rows, {len(layout.lights)} lights; chunk {chunk} rows; Ray {ray.__version__}, "
                  f"2 CPUs; os.cpu_count()={os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
            for name in names:
                emb = make_embedder(name, layout)
                rates = bench(emb, rows, Path(ws) / "images", chunk=chunk, repeat=args.repeat,
                              ray_data=not args.no_ray_data and not args.smoke_test, cache_dir=Path(tmp) / "cache")
                results[name] = rates
                base = rates["inline"]
                print(f"{name:<12}" + "  ".join(f"{k} {v:7.1f} rows/s ({v / base:4.2f}x)" for k, v in rates.items())
                      + f"  [load average now {os.getloadavg()[0]:.1f}]", flush=True)
        finally:
            ray.shutdown()
    return results


if __name__ == "__main__":
    main()
