"""Parallel pool embedding on a real local Ray: same vectors, same order, cache filled from tasks."""

from __future__ import annotations

import numpy as np
import pytest

from raypipe.embedding import EmbeddingCache, embed_rows, make_embedder
from tests.embedding.conftest import LAYOUT, pool_rows


def test_workers_need_an_initialised_ray(tiny_workspace_template):
    import ray

    assert not ray.is_initialized()  # first in this module: before the module's cluster starts
    with pytest.raises(RuntimeError, match="needs Ray initialised"):
        embed_rows(make_embedder("pixels", LAYOUT), pool_rows(tiny_workspace_template).iloc[:2],
                   tiny_workspace_template / "images", workers=1)


def test_two_workers_match_in_process(tiny_workspace_template, tmp_path, ray_local):
    ws = tiny_workspace_template
    rows = pool_rows(ws).iloc[:40]
    emb = make_embedder("difference", LAYOUT)
    serial, s0 = embed_rows(emb, rows, ws / "images", workers=0)
    parallel, s2 = embed_rows(emb, rows, ws / "images", workers=2, chunk_rows=7)
    assert np.array_equal(serial, parallel)
    assert s0.chunks == 1 and s2.chunks == 6 and s2.workers == 2

    cache = EmbeddingCache(tmp_path, emb)
    cached, s3 = embed_rows(emb, rows, ws / "images", workers=2, chunk_rows=7, cache=cache)
    assert np.array_equal(cached, serial) and s3.computed == 40 and len(cache) == 40
    again, s4 = embed_rows(emb, rows.iloc[::-1], ws / "images", workers=2, chunk_rows=7, cache=cache)
    assert s4.cache_hits == 40 and s4.chunks == 0 and np.array_equal(again, serial[::-1])


def test_imagenet_embeds_in_ray_workers(tiny_workspace_template, ray_local):
    ws = tiny_workspace_template
    rows = pool_rows(ws).iloc[:6]
    emb = make_embedder("imagenet", LAYOUT, input_size=64)
    parallel, _ = embed_rows(emb, rows, ws / "images", workers=2, chunk_rows=3)
    assert np.allclose(parallel, emb.embed(rows, ws / "images"), atol=1e-5)
