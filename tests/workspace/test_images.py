"""Opening image files: decode errors, bombs, the per-user cache and the worker pool."""

from __future__ import annotations

import hashlib
import sqlite3
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from raypipe.workspace import (
    DEFAULT_MAX_PIXELS,
    ImageCheckOptions,
    inspect_image,
    scan_images,
    user_cache_dir,
)


def _png(path: Path, size: int = 16, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header promises width x height pixels, with almost no data: what a bomb looks like
    to a reader that checks the header before decompressing."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def _scramble_idat(data: bytes) -> bytes:
    start = data.index(b"IDAT") + 4
    return data[:start + 2] + bytes([0xFF]) * 40 + data[start + 42:]


def test_good_image(tmp_path: Path) -> None:
    p = _png(tmp_path / "a.png")
    facts = inspect_image(str(p))
    assert facts.error is None and (facts.width, facts.height) == (16, 16)
    assert facts.sha256 == hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.mark.parametrize("damage, expected", [
    (lambda b: b[: len(b) // 2], "is truncated (image file is truncated"),
    (lambda b: b"", "is empty (0 bytes)"),
    (lambda b: b"hello, not a picture", "is not an image file Pillow can identify"),
    (lambda b: _scramble_idat(b), "cannot be decoded ("),  # a broken zlib stream inside a valid chunk layout
])
def test_damaged_images(tmp_path: Path, damage, expected: str) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "a.png"
    p.write_bytes(damage(_png(p, size=64).read_bytes()))
    facts = inspect_image(str(p))
    assert facts.error is not None and facts.error.startswith(expected), facts.error
    assert facts.sha256 == hashlib.sha256(p.read_bytes()).hexdigest()  # still hashed for the leakage checks


@pytest.mark.parametrize("width, height, expected", [
    (9000, 8000, "has 9000x8000 = 72,000,000 pixels, over the 67,108,864-pixel cap"),  # our cap
    (10000, 10000, "is a decompression bomb (Image size (100000000 pixels) exceeds limit"),  # Pillow's warning
    (30000, 30000, "is a decompression bomb (Image size (900000000 pixels) exceeds limit"),  # Pillow's error
])
def test_decompression_bombs_are_refused_from_the_header(tmp_path: Path, width: int, height: int,
                                                         expected: str) -> None:
    assert DEFAULT_MAX_PIXELS == 8192 * 8192
    facts = inspect_image(str(_png_header_only(tmp_path / "bomb.png", width, height)))
    assert facts.error is not None and facts.error.startswith(expected), facts.error
    assert Image.MAX_IMAGE_PIXELS == 89478485  # Pillow's process-wide setting is left alone


def test_unreadable_file(tmp_path: Path) -> None:
    facts = inspect_image(str(tmp_path / "missing.png"))
    assert facts.sha256 is None and facts.error == "cannot be read (No such file or directory)"


def test_parallel_scan_equals_serial_scan(tmp_path: Path) -> None:
    paths = [str(_png(tmp_path / f"{i}.png", seed=i)) for i in range(300)]
    (tmp_path / "7.png").write_bytes(b"")
    serial = scan_images(paths, ImageCheckOptions(cache_dir=None, workers=1))
    parallel = scan_images(paths, ImageCheckOptions(cache_dir=None, workers=2))
    assert serial.facts == parallel.facts and serial.unreadable == 1
    assert (parallel.decoded, parallel.cached) == (300, 0)


def test_cache_hits_and_keys(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    odd = tmp_path / "it's; DROP TABLE x; --.png"  # a path is data, never SQL
    paths = [str(_png(tmp_path / "a.png")), str(_png(odd, seed=1))]
    first = scan_images(paths, ImageCheckOptions(cache_dir=cache))
    again = scan_images(paths, ImageCheckOptions(cache_dir=cache))
    assert (first.decoded, again.decoded, again.cached) == (2, 0, 2) and again.facts == first.facts
    other_cap = scan_images(paths, ImageCheckOptions(cache_dir=cache, max_pixels=10))
    assert other_cap.decoded == 2 and all(f.error for f in other_cap.facts.values())  # the cap is in the key
    assert sorted(p.name for p in cache.iterdir()) == ["image_check.sqlite3"]


def test_a_corrupt_cache_is_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "image_check.sqlite3").write_bytes(b"this is not a database" * 100)
    paths = [str(_png(tmp_path / "a.png"))]
    scan = scan_images(paths, ImageCheckOptions(cache_dir=cache))
    assert scan.decoded == 1 and scan.facts[paths[0]].error is None
    assert "image check cache" in caplog.text and "not used" in caplog.text


def test_cache_evicts_the_oldest_entries(tmp_path: Path) -> None:
    from raypipe.workspace._images import FactsCache, ImageFacts

    cache = FactsCache(tmp_path)
    cache.put([(f"/p{i}", "s", ImageFacts("h")) for i in range(5)])
    cache.put([("/new", "s", ImageFacts("h"))], max_entries=3)
    cache.close()
    with sqlite3.connect(tmp_path / "image_check.sqlite3") as db:
        kept = {p for (p,) in db.execute("SELECT path FROM image_facts_v1")}
    assert len(kept) == 3 and "/new" in kept


def test_user_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert user_cache_dir() == tmp_path / "raypipe"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # ignored, as the XDG rules say
    assert user_cache_dir() == Path.home() / ".cache" / "raypipe"
