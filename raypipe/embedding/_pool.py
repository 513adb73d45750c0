"""Embed many rows: cache look-up by content, then the misses in parallel Ray tasks over row chunks.

Why tasks over chunks rather than Ray Data ``map_batches``: the unit of work is "a few hundred rows
→ a matrix", the rows are already a DataFrame in the driver, and the order of results must match
the rows. Tasks do exactly that with no dataset plumbing; measured with
``benchmarks/pool_embedding.py`` on a 1,200-row demo pool with two workers, Ray Data's
``map_batches`` ran 1.5–1.8× slower than the tasks (its planning, actors and block conversion).

``workers=0`` runs everything in this process (tests, tiny pools, a caller already inside a task).
With ``workers >= 1`` Ray must already be initialised by the caller (``ray.init(address="local")``
or the cluster's address): an implicit ``ray.init()`` would join whatever cluster is running here.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pandas as pd

from raypipe.embedding._base import Embedder
from raypipe.embedding._cache import EmbeddingCache, row_content_keys
from raypipe.workspace._rows import ImageLayout

if TYPE_CHECKING:
    from raypipe.placement import Placement

log = logging.getLogger(__name__)

T = TypeVar("T")
MIN_CHUNK, MAX_CHUNK = 32, 512


@dataclass(frozen=True)
class EmbedStats:
    """What one :func:`embed_rows` call did (for logs, the loop log and MLflow)."""

    rows: int
    unique_contents: int  # rows with distinct image bytes (0 when no cache: not computed)
    cache_hits: int  # rows served from the cache
    computed: int  # rows embedded now
    workers: int
    chunks: int
    seconds: float

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else math.inf


def _embed_chunk(embedder: Embedder, rows: pd.DataFrame, images_dir: Path) -> np.ndarray:
    return embedder.embed(rows, images_dir)


def _hash_chunk(layout: ImageLayout, rows: pd.DataFrame, images_dir: Path) -> list[str]:
    return row_content_keys(layout, rows, images_dir)


def chunk_size(n_rows: int, workers: int) -> int:
    """About four chunks per worker (so a slow chunk does not idle the others), within [32, 512] rows."""
    return int(min(MAX_CHUNK, max(MIN_CHUNK, math.ceil(n_rows / max(1, 4 * workers)))))


def _placed(placement: Placement | None, fn: Callable[..., T], first: Any, rows: pd.DataFrame, images_dir: Path) -> T:
    """One chunk's task: where it ran goes to the run's placement record, then the work."""
    if placement is not None:
        placement.record({"rows": len(rows)})
    return fn(first, rows, images_dir)


def _run_chunks(fn: Callable[..., T], first: Any, rows: pd.DataFrame, images_dir: Path, *, workers: int,
                chunk: int, resources: dict[str, float], on_result: Callable[[int, T], None],
                placement: Placement | None = None) -> int:
    """Apply ``fn(first, rows_chunk, images_dir)`` to consecutive chunks; ``on_result(start, value)`` per
    chunk as it finishes. At most ``workers`` Ray tasks run at once; ``workers=0``: in this process.
    Each Ray task records itself under ``placement`` (when given)."""
    starts = list(range(0, len(rows), chunk))
    if workers <= 0:
        for s in starts:
            on_result(s, fn(first, rows.iloc[s:s + chunk], images_dir))
        return len(starts)
    import ray

    if not ray.is_initialized():
        raise RuntimeError("embed_rows(workers>=1) needs Ray initialised by the caller "
                           "(ray.init(address='local') or the cluster's address)")
    task: Any = ray.remote(_placed).options(num_cpus=resources.get("cpu", 1.0), num_gpus=resources.get("gpu", 0.0))
    first_ref = ray.put(first)  # one copy of the embedder in the object store, not one per task
    pending: dict[Any, int] = {}
    queue = list(starts)
    while queue or pending:
        while queue and len(pending) < workers:
            s = queue.pop(0)
            pending[task.remote(placement, fn, first_ref, rows.iloc[s:s + chunk], images_dir)] = s
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            on_result(pending.pop(ref), ray.get(ref))
    return len(starts)


def embed_rows(embedder: Embedder, rows: pd.DataFrame, images_dir: Path, *, cache: EmbeddingCache | None = None,
               workers: int = 0, resources: dict[str, float] | None = None,
               chunk_rows: int | None = None, placement: Placement | None = None) -> tuple[np.ndarray, EmbedStats]:
    """``(len(rows), d)`` float32 in row order, and what it took.

    With a ``cache`` the rows' content keys are computed first (chunked over the same workers:
    hashing reads every image once), cached vectors are reused, each distinct content is embedded
    once, and every finished chunk is written to the cache at once (a killed run keeps what it
    finished).
    ``resources``: per task, ``{"cpu": 1, "gpu": 0}`` by default. ``placement``: where each embedding
    task records itself (``RD/placement.jsonl``; hashing tasks are not recorded).
    """
    t0 = time.perf_counter()
    images_dir = Path(images_dir)
    res = {"cpu": 1.0, "gpu": 0.0, **(resources or {})}
    n = len(rows)
    rows = rows.reset_index(drop=True)
    chunk = chunk_rows or chunk_size(n, workers)
    if cache is not None and cache.identity != embedder.identity:
        raise ValueError(f"cache {cache.path} belongs to another embedder ({cache.identity})")

    if cache is None:
        parts: dict[int, np.ndarray] = {}
        n_chunks = _run_chunks(_embed_chunk, embedder, rows, images_dir, workers=workers, chunk=chunk,
                               resources=res, on_result=parts.__setitem__, placement=placement)
        out = (np.concatenate([parts[s] for s in sorted(parts)]) if parts
               else embedder.embed(rows.iloc[:0], images_dir))
        return out, EmbedStats(n, 0, 0, n, workers, n_chunks, time.perf_counter() - t0)

    keys: list[str] = [""] * n

    def keep_keys(start: int, part: list[str]) -> None:
        keys[start:start + len(part)] = part

    # hashing is I/O-light work per row; cheap next to embedding, so it uses the same chunking
    _run_chunks(_hash_chunk, embedder.layout, rows, images_dir, workers=workers, chunk=chunk,
                resources={"cpu": res["cpu"], "gpu": 0.0}, on_result=keep_keys)
    vectors = cache.get(keys)
    n_hits = sum(1 for k in keys if k in vectors)
    first_row: dict[str, int] = {}
    for i, k in enumerate(keys):
        if k not in vectors:
            first_row.setdefault(k, i)
    todo = rows.iloc[sorted(first_row.values())]
    todo_keys = [keys[i] for i in sorted(first_row.values())]

    def store(start: int, part: np.ndarray) -> None:
        batch = list(zip(todo_keys[start:start + len(part)], part))
        cache.put(batch)
        vectors.update(batch)

    n_chunks = _run_chunks(_embed_chunk, embedder, todo, images_dir, workers=workers, chunk=chunk,
                           resources=res, on_result=store, placement=placement) if len(todo) else 0
    if n == 0:
        out = embedder.embed(rows, images_dir)
    else:
        out = np.stack([vectors[k] for k in keys]).astype(np.float32, copy=False)
    stats = EmbedStats(n, len(set(keys)), n_hits, len(todo), workers, n_chunks, time.perf_counter() - t0)
    log.info("embedding: %d rows with %s (%d cache hits, %d embedded, %d workers) in %.1f s",
             n, embedder.name, n_hits, len(todo), workers, stats.seconds)
    return out, stats
