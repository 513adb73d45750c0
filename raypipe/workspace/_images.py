"""Open every image file a workspace names: decode it, hash its bytes, cache what was learned.

A file that exists is not a file a trainer can read: truncated and zero-byte files, and images whose
header promises billions of pixels (a decompression bomb), fail only when a stage decodes them,
hours into a run. The check decodes each distinct file once, in a process pool sized to the machine,
and remembers the result in the user's cache (never in the workspace, which stays read-only) keyed
by the file's identity, size and times, so a second check of an unchanged workspace decodes nothing.

The sha256 of each file's bytes is the content identity the leakage checks compare: a KPI image
copied or symlinked under another name is still the KPI image.

Pillow's process-wide settings (``Image.MAX_IMAGE_PIXELS``, ``LOAD_TRUNCATED_IMAGES``) are never
changed here: the backends read images with whatever the process has.
"""

from __future__ import annotations

import hashlib
import logging
import math
import multiprocessing
import os
import sqlite3
import time
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

# 8192 x 8192: far above any AOI crop or board image, far below what exhausts a worker's memory.
DEFAULT_MAX_PIXELS = 8192 * 8192
# Bumped whenever what inspect_image() reports changes, so older cache entries are not trusted.
_CHECK_VERSION = 1
_CACHE_FILE = "image_check.sqlite3"
_TABLE = f"image_facts_v{_CHECK_VERSION}"  # a new layout gets a new table, never a failed insert
# A spawned worker imports this package (~1-2 s on a loaded 2-core machine) and a small PNG decodes
# in ~0.3 ms: below this many files a pool costs more than it saves.
_PARALLEL_MIN_FILES = 10_000
# Entries kept per user (~600 bytes each); the oldest writes go first. A 100k-row pool with two
# lights is 400k files.
_MAX_ENTRIES = 1_000_000
_CHUNK = 256


@dataclass(frozen=True)
class ImageFacts:
    """What one file holds: its content hash (None if unreadable) and why it is unusable (None if it
    decodes). ``width``/``height`` are the decoded size."""

    sha256: str | None
    error: str | None = None
    width: int = 0
    height: int = 0


def _sha256(path: str) -> tuple[str, int]:
    """(hex digest, bytes read)."""
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def inspect_image(path: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageFacts:
    """Hash and fully decode one file; problems come back as :attr:`ImageFacts.error`, never raised.

    The pixel count is checked from the header, before any pixel data is decompressed.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        digest, size = _sha256(path)
    except OSError as exc:
        return ImageFacts(None, f"cannot be read ({exc.strerror or exc})")
    if size == 0:
        return ImageFacts(digest, "is empty (0 bytes)")
    try:
        # Pillow warns above Image.MAX_IMAGE_PIXELS and raises above twice that; as an error here,
        # locally, both are reported instead of silently decoding a bomb.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                width, height = im.size
                if width * height > max_pixels:
                    return ImageFacts(digest, _bomb(f"{width}x{height}", width * height, max_pixels), width, height)
                im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return ImageFacts(digest, f"is a decompression bomb ({exc})")
    except UnidentifiedImageError:
        return ImageFacts(digest, "is not an image file Pillow can identify")
    except OSError as exc:
        # Pillow's message for a short file is "image file is truncated (N bytes not processed)"
        detail = str(exc) or type(exc).__name__
        what = "is truncated" if "truncated" in detail else "cannot be decoded"
        return ImageFacts(digest, f"{what} ({detail})")
    except Exception as exc:
        return ImageFacts(digest, f"cannot be decoded ({type(exc).__name__}: {exc})")
    return ImageFacts(digest, None, width, height)


def _bomb(dims: str, pixels: int, cap: int) -> str:
    return (f"has {dims} = {pixels:,} pixels, over the {cap:,}-pixel cap (a decompression bomb, or an image "
            f"far larger than any crop the model trains on)")


def _inspect_chunk(paths: Sequence[str], max_pixels: int) -> list[ImageFacts]:
    """Worker entry point (module level, so the spawn start method can pickle it)."""
    return [inspect_image(p, max_pixels) for p in paths]


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/raypipe``, else ``~/.cache/raypipe`` (a relative XDG_CACHE_HOME is ignored, as
    the XDG base directory rules say)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".cache"
    return root / "raypipe"


def machine_workers() -> int:
    """CPUs this process may run on (the affinity mask, not the host's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _stamp(st: os.stat_result, max_pixels: int) -> str:
    # ctime cannot be set by a user (unlike mtime), and the inode changes when a file is replaced:
    # a file rewritten with the same size and a copied mtime still misses the cache.
    return (f"v{_CHECK_VERSION}:{max_pixels}:{st.st_dev}:{st.st_ino}:{st.st_size}:"
            f"{st.st_mtime_ns}:{st.st_ctime_ns}")


class FactsCache:
    """The per-user cache: one sqlite table, path → (stamp, facts).

    Paths go in as SQL parameters (never into SQL text or a file name), and an entry is used only
    when its stamp matches the file as it is now. Any sqlite failure (read-only home, a corrupt or
    locked file) turns the cache off for this check: it is an optimisation, never a reason to fail.
    """

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / _CACHE_FILE
        self._db: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=10)
            self._db.execute(f"CREATE TABLE IF NOT EXISTS {_TABLE} (path TEXT PRIMARY KEY, stamp TEXT NOT NULL, "
                             "sha256 TEXT, error TEXT, width INTEGER, height INTEGER, written REAL)")
            self._db.commit()
        except (OSError, sqlite3.Error) as exc:
            self._off(exc)

    def _off(self, exc: Exception) -> None:
        log.warning("image check cache %s not used: %s", self.path, exc)
        if self._db is not None:
            self._db.close()
        self._db = None

    def get(self, stamps: dict[str, str]) -> dict[str, ImageFacts]:
        found: dict[str, ImageFacts] = {}
        if self._db is None:
            return found
        paths = list(stamps)
        try:
            for i in range(0, len(paths), 500):
                part = paths[i:i + 500]
                rows = self._db.execute(
                    f"SELECT path, stamp, sha256, error, width, height FROM {_TABLE} "
                    f"WHERE path IN ({','.join('?' * len(part))})", part).fetchall()
                for path, stamp, sha, error, w, h in rows:
                    if stamps.get(path) == stamp:
                        found[path] = ImageFacts(sha, error, int(w or 0), int(h or 0))
        except sqlite3.Error as exc:
            self._off(exc)
            return {}
        return found

    def put(self, entries: Iterable[tuple[str, str, ImageFacts]], max_entries: int = _MAX_ENTRIES) -> None:
        if self._db is None:
            return
        now = time.time()
        try:
            with self._db:
                self._db.executemany(
                    f"INSERT OR REPLACE INTO {_TABLE} (path, stamp, sha256, error, width, height, written) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(p, s, f.sha256, f.error, f.width, f.height, now) for p, s, f in entries])
                (count,) = self._db.execute(f"SELECT COUNT(*) FROM {_TABLE}").fetchone()
                if count > max_entries:
                    self._db.execute(f"DELETE FROM {_TABLE} WHERE path IN (SELECT path FROM {_TABLE} "
                                     f"ORDER BY written LIMIT ?)", (count - max_entries,))
        except sqlite3.Error as exc:
            self._off(exc)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


@dataclass(frozen=True)
class ImageCheckOptions:
    """How the workspace check opens images. ``cache_dir`` None: no cache; ``workers`` None: one
    process per CPU this process may use."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    cache_dir: Path | None = field(default_factory=user_cache_dir)
    workers: int | None = None


@dataclass(frozen=True)
class ImageScan:
    """Facts per real path, plus how many files were decoded now and how many came from the cache."""

    facts: dict[str, ImageFacts]
    decoded: int = 0
    cached: int = 0

    @property
    def unreadable(self) -> int:
        return sum(1 for f in self.facts.values() if f.error is not None)


def scan_images(paths: Iterable[str], options: ImageCheckOptions | None = None) -> ImageScan:
    """Facts for every distinct path (real paths: symlinks already resolved by the caller)."""
    options = options or ImageCheckOptions()
    if options.max_pixels < 1:
        raise ValueError(f"max_pixels must be >= 1, got {options.max_pixels}")
    facts: dict[str, ImageFacts] = {}
    stamps: dict[str, str] = {}
    for p in sorted(set(paths)):
        try:
            stamps[p] = _stamp(os.stat(p), options.max_pixels)
        except OSError as exc:
            facts[p] = ImageFacts(None, f"cannot be read ({exc.strerror or exc})")
    cache = FactsCache(options.cache_dir) if options.cache_dir is not None else None
    try:
        cached = cache.get(stamps) if cache is not None else {}
        facts.update(cached)
        todo = [p for p in stamps if p not in cached]
        fresh = _inspect_all(todo, options)
        facts.update(fresh)
        if cache is not None and fresh:
            cache.put((p, stamps[p], f) for p, f in fresh.items())
    finally:
        if cache is not None:
            cache.close()
    return ImageScan(facts, decoded=len(todo), cached=len(cached))


def _inspect_all(paths: list[str], options: ImageCheckOptions) -> dict[str, ImageFacts]:
    workers = min(options.workers or machine_workers(), math.ceil(len(paths) / _CHUNK))
    if workers <= 1 or (options.workers is None and len(paths) < _PARALLEL_MIN_FILES):
        return {p: inspect_image(p, options.max_pixels) for p in paths}
    chunks = [paths[i:i + _CHUNK] for i in range(0, len(paths), _CHUNK)]
    # spawn, not fork: pre-flight runs this inside a process that already has Ray's threads, and a
    # forked child of a threaded process can deadlock on a lock some other thread held.
    ctx = multiprocessing.get_context("spawn")
    out: dict[str, ImageFacts] = {}
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            for chunk, result in zip(chunks, pool.map(_inspect_chunk, chunks, [options.max_pixels] * len(chunks))):
                out.update(zip(chunk, result))
    except BrokenProcessPool as exc:  # a worker killed (e.g. out of memory): finish here instead
        log.warning("image check worker pool failed (%s); decoding the remaining files in this process", exc)
        out.update({p: inspect_image(p, options.max_pixels) for p in paths if p not in out})
    return out
