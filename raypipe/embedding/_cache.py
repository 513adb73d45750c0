"""A content-keyed embedding cache: one SQLite file per embedder identity, one vector per row content.

Key of a row: sha256 over the bytes of its capture and golden files, light by light. Not the
path and not the mtime: a pool re-exported to a new directory hits, and an image changed in place
(same path, same size) misses. The file is named after the embedder's identity digest (name,
version, layout), so a new embedder version starts a new file and never reads a stale vector.

SQLite because it is in the standard library, its transactions are atomic (a killed run leaves the
cache as it was before the last write, never half a vector), and readers never block on a writer.
Only the process that owns the cache writes; Ray workers compute, the caller stores.

Where it lives: under the run dir or a user cache dir (:func:`default_cache_dir`), never in the
user's workspace outside ``results/``: the workspace is read-only to a run.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable, Sequence
from contextlib import closing
from pathlib import Path

import numpy as np
import pandas as pd

from raypipe.embedding._base import Embedder
from raypipe.workspace._rows import ImageLayout, iter_records

_SQL_VARS = 500  # keys per SELECT … IN (…): below SQLite's bound-parameter limit everywhere


def default_cache_dir() -> Path:
    """``<user cache dir>/embeddings`` (``~/.cache/raypipe/embeddings``, or under ``$XDG_CACHE_HOME``): the
    same per-user cache root as the workspace image checks, never the workspace itself."""
    from raypipe.workspace._images import user_cache_dir

    return user_cache_dir() / "embeddings"


def row_content_keys(layout: ImageLayout, rows: pd.DataFrame, images_dir: Path) -> list[str]:
    """One hex sha256 per row over its files' bytes (each length-prefixed, so files cannot run together)."""
    keys = []
    for rec in iter_records(rows):
        h = hashlib.sha256()
        for cap, gold in zip(layout.capture_paths(Path(images_dir), rec), layout.golden_paths(Path(images_dir), rec)):
            for path in (cap, gold):
                try:
                    data = path.read_bytes()
                except OSError as exc:
                    raise ValueError(f"{path}: cannot read image for row {rec.get('object_name', '?')} "
                                     f"({exc.strerror or exc})") from None
                h.update(len(data).to_bytes(8, "little"))
                h.update(data)
        keys.append(h.hexdigest())
    return keys


class EmbeddingCache:
    """Vectors of one embedder identity, keyed by row content."""

    def __init__(self, root: Path, embedder: Embedder) -> None:
        self.root = Path(root)
        self.identity = embedder.identity
        self.path = self.root / f"{embedder.name}-{embedder.identity_digest}.sqlite"
        self.root.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db, db:
            db.execute("CREATE TABLE IF NOT EXISTS meta (identity TEXT NOT NULL)")
            db.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, vec BLOB NOT NULL)")
            row = db.execute("SELECT identity FROM meta").fetchone()
            if row is None:
                db.execute("INSERT INTO meta (identity) VALUES (?)", (self.identity,))
            elif row[0] != self.identity:  # a 64-bit digest collision, or a file copied by hand
                raise ValueError(f"{self.path}: holds vectors of {row[0]}, not {self.identity}; delete the file")

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=60.0)
        db.execute("PRAGMA journal_mode=WAL")  # readers proceed while another process writes
        return db

    def get(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """The cached vectors among ``keys`` (absent keys are simply missing from the result)."""
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(keys))
        with closing(self._connect()) as db:
            for start in range(0, len(unique), _SQL_VARS):
                part = unique[start:start + _SQL_VARS]
                marks = ",".join("?" * len(part))
                for key, blob in db.execute(f"SELECT key, vec FROM vectors WHERE key IN ({marks})", part):
                    found[key] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put(self, items: Iterable[tuple[str, np.ndarray]]) -> int:
        """Store vectors in one transaction; returns how many were written."""
        rows = [(key, np.ascontiguousarray(vec, dtype=np.float32).tobytes()) for key, vec in items]
        with closing(self._connect()) as db, db:
            db.executemany("INSERT OR REPLACE INTO vectors (key, vec) VALUES (?, ?)", rows)
        return len(rows)

    def __len__(self) -> int:
        with closing(self._connect()) as db:
            return int(db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0])
