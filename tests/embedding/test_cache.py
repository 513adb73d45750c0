"""The content-keyed cache on real demo images: hits, and no stale vector after a change."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from raypipe.embedding import (
    EmbeddingCache,
    embed_rows,
    make_embedder,
    row_content_keys,
)
from tests.embedding.conftest import LAYOUT, pool_rows


def test_second_pass_is_served_from_the_cache(tiny_workspace_template, tmp_path):
    ws = tiny_workspace_template
    rows = pool_rows(ws).iloc[:10]
    emb = make_embedder("difference", LAYOUT)
    cache = EmbeddingCache(tmp_path / "cache", emb)
    first, s1 = embed_rows(emb, rows, ws / "images", cache=cache)
    assert (s1.cache_hits, s1.computed, len(cache)) == (0, 10, 10)
    again, s2 = embed_rows(emb, rows, ws / "images", cache=EmbeddingCache(tmp_path / "cache", emb))
    assert (s2.cache_hits, s2.computed) == (10, 0)
    assert np.array_equal(first, again) and np.array_equal(first, emb.embed(rows, ws / "images"))
    assert cache.path.parent == tmp_path / "cache" and cache.path.name.startswith("difference-")


def test_a_changed_image_is_re_embedded(tiny_workspace, tmp_path):
    ws = tiny_workspace
    rows = pool_rows(ws).iloc[:6]
    emb = make_embedder("difference", LAYOUT)
    cache = EmbeddingCache(tmp_path / "cache", emb)
    before, _ = embed_rows(emb, rows, ws / "images", cache=cache)

    path = LAYOUT.golden_paths(ws / "images", rows.iloc[3])[1]  # one light of one golden, same path and size
    with Image.open(path) as im:
        x = np.asarray(im.convert("RGB")).copy()
    x[10:14, 10:14] = 255 - x[10:14, 10:14]
    Image.fromarray(x).save(path)

    after, stats = embed_rows(emb, rows, ws / "images", cache=cache)
    assert (stats.cache_hits, stats.computed) == (5, 1)
    assert np.array_equal(np.delete(after, 3, 0), np.delete(before, 3, 0))
    assert not np.allclose(after[3], before[3])
    assert np.array_equal(after[3], emb.embed(rows.iloc[[3]], ws / "images")[0])  # the fresh vector, not the old one


def test_a_new_embedder_version_never_reads_old_vectors(tiny_workspace_template, tmp_path):
    ws = tiny_workspace_template
    rows = pool_rows(ws).iloc[:4]
    old, new = make_embedder("difference", LAYOUT, size=8), make_embedder("difference", LAYOUT, size=4)
    embed_rows(old, rows, ws / "images", cache=EmbeddingCache(tmp_path, old))
    vecs, stats = embed_rows(new, rows, ws / "images", cache=EmbeddingCache(tmp_path, new))
    assert stats.cache_hits == 0 and vecs.shape[1] == new.dim != old.dim
    assert len(list(tmp_path.glob("difference-*.sqlite"))) == 2
    with pytest.raises(ValueError, match="another embedder"):
        embed_rows(new, rows, ws / "images", cache=EmbeddingCache(tmp_path, old))


def test_identical_contents_are_embedded_once_and_keys_follow_bytes(tiny_workspace_template, tmp_path):
    ws = tiny_workspace_template
    rows = pool_rows(ws).iloc[:3]
    doubled = pd.concat([rows, rows.iloc[[1]]], ignore_index=True)
    keys = row_content_keys(LAYOUT, doubled, ws / "images")
    assert keys[1] == keys[3] and len(set(keys)) == 3
    emb = make_embedder("pixels", LAYOUT)
    vecs, stats = embed_rows(emb, doubled, ws / "images", cache=EmbeddingCache(tmp_path, emb))
    assert stats.computed == 3 and stats.unique_contents == 3 and np.array_equal(vecs[1], vecs[3])


def test_unreadable_image_names_the_file(tiny_workspace, tmp_path):
    ws = tiny_workspace
    rows = pool_rows(ws).iloc[:2]
    missing = LAYOUT.capture_paths(ws / "images", rows.iloc[1])[0]
    missing.unlink()
    emb = make_embedder("difference", LAYOUT)
    with pytest.raises(ValueError, match=str(missing)):
        embed_rows(emb, rows, ws / "images", cache=EmbeddingCache(tmp_path, emb))
    with pytest.raises(ValueError, match=str(missing)):
        emb.embed(rows, ws / "images")


def test_default_cache_dir_is_the_user_cache_dir(monkeypatch, tmp_path):
    from raypipe.embedding import default_cache_dir
    from raypipe.workspace import user_cache_dir

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == user_cache_dir() / "embeddings" == tmp_path / "xdg" / "raypipe" / "embeddings"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # ignored, as the XDG rules say
    assert default_cache_dir() == Path.home() / ".cache" / "raypipe" / "embeddings"
