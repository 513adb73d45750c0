"""k-NN mining at scale: the FAISS path of ``raypipe.deft._selection`` vs a plain numpy brute force.

Both search the same L2-normalised vectors for the top-k cosine neighbours of every target:
- faiss: ``raypipe.deft._selection.cosine_knn`` (exact ``IndexFlatIP``: index build + search), the
  function the selection recipe calls;
- numpy: chunked matmul over the pool + ``argpartition`` per chunk, merged into a running top-k.
The script checks that both return the same neighbours, then prints times and the ratio.

    python benchmarks/mining_scale.py                # 1,000 targets vs 10k / 100k / 1M pools, 256-d
    python benchmarks/mining_scale.py --smoke-test   # tiny sizes, seconds (CI)
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from raypipe.deft._selection import cosine_knn, l2_normalise


def numpy_knn(targets: np.ndarray, pool: np.ndarray, k: int, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k inner product, best first, in pool chunks (bounded memory: targets × chunk floats)."""
    n_t = targets.shape[0]
    best_s = np.full((n_t, 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((n_t, 0), dtype=np.int64)
    for start in range(0, pool.shape[0], chunk):
        sims = targets @ pool[start:start + chunk].T
        kk = min(k, sims.shape[1])
        part = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        s = np.concatenate([best_s, np.take_along_axis(sims, part, axis=1)], axis=1)
        i = np.concatenate([best_i, part + start], axis=1)
        keep = np.argsort(-s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(s, keep, axis=1), np.take_along_axis(i, keep, axis=1)
    return best_s, best_i


def _timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def run(n_targets: int, sizes: list[int], dim: int, k: int, seed: int) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    targets = l2_normalise(rng.standard_normal((n_targets, dim), dtype=np.float32))
    rows = []
    for n in sizes:
        pool = l2_normalise(rng.standard_normal((n, dim), dtype=np.float32))
        t_faiss, (fs, fi) = _timed(cosine_knn, targets, pool, k)
        t_np, (ns, ni) = _timed(numpy_knn, targets, pool, k)
        # same neighbours: identical index lists (random floats: ties are essentially impossible),
        # and where an index differs the similarities must tie to float32 precision
        same = float((fi == ni).mean())
        if not np.allclose(fs, ns, atol=1e-4):
            raise SystemExit(f"pool {n}: FAISS and numpy similarities differ (max {np.abs(fs - ns).max():.2e})")
        if same < 0.999:
            raise SystemExit(f"pool {n}: only {same:.4%} of neighbour indices agree")
        rows.append({"pool": n, "faiss_s": t_faiss, "numpy_s": t_np, "ratio": t_np / t_faiss, "agree": same})
        print(f"pool {n:>9,}  faiss {t_faiss:8.3f} s  numpy {t_np:8.3f} s  numpy/faiss {t_np / t_faiss:5.2f}x  "
              f"same neighbours {same:.4%}", flush=True)
        del pool
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke-test", action="store_true", help="tiny sizes for CI")
    ap.add_argument("--targets", type=int, default=1000)
    ap.add_argument("--sizes", type=str, default="10000,100000,1000000", help="comma-separated pool sizes")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.smoke_test:
        args.targets, sizes = 50, [2000, 10000]
    else:
        sizes = [int(s) for s in args.sizes.split(",")]
    import faiss

    print(f"{args.targets} targets, {args.dim}-d, top-{args.k}; faiss {faiss.__version__}, "
          f"omp threads {faiss.omp_get_max_threads()}, numpy {np.__version__}")
    run(args.targets, sizes, args.dim, args.k, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
