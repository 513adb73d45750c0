"""Render and write the demo's image files; kept free of pandas so worker processes start light."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from raypipe.workspace._render import photometric, rasterise, shade
from raypipe.workspace._scene import build_scene, random_component, random_defect

_MARGIN = 3  # px rasterised around the frame so the capture can be shifted by ±2 px


class ImageJob(NamedTuple):
    """Everything needed to write one row's capture and golden files, for every light."""

    capture_dir: str
    golden_dir: str
    object_name: str
    label: str
    comp_type: str
    seed: int


def render_row(label: str, ctype: str, seed: int, styles: tuple[str, ...], size: int) -> tuple[np.ndarray, np.ndarray]:
    """(capture, golden) uint8 arrays of shape (lights, size, size, 3) for one row."""
    rng = np.random.default_rng(seed)
    defect_kind = None if label == "PASS" else label
    comp = random_component(ctype, rng, need_neighbour=defect_kind == "bridge")
    defect = random_defect(defect_kind, comp, rng) if defect_kind else None
    golden_maps = rasterise(build_scene(comp), comp.background, styles, size, size, margin=_MARGIN)
    # capture-to-golden misalignment of up to ±2 px: the capture is the (defect) scene, shifted
    offset = (float(rng.uniform(-2.0, 2.0)), float(rng.uniform(-2.0, 2.0)))
    capture_maps = golden_maps if defect is None else rasterise(
        build_scene(comp, defect), comp.background, styles, size, size, margin=_MARGIN)
    golden = shade(golden_maps, styles, size, size)
    capture = shade(capture_maps, styles, size, size, (offset[0] * 64 / size, offset[1] * 64 / size))
    golden_u8 = photometric(golden, rng, gain_range=0.03, offset_range=0.01, noise_sigma=0.008)
    capture_u8 = photometric(capture, rng, gain_range=0.12, offset_range=0.04,
                             noise_sigma=float(rng.uniform(0.015, 0.035)))
    return capture_u8, golden_u8


def png_bytes(rgb: np.ndarray, level: int = 1) -> bytes:
    """Encode an (H, W, 3) uint8 array as PNG (filter 0, zlib ``level``).

    Written by hand because Pillow's encoder costs ~2.5× more per 64×64 tile and the demo writes
    thousands of them; the output is a standard PNG that Pillow (and TAO) read back exactly.
    """
    h, w, _ = rgb.shape
    raw = np.zeros((h, w * 3 + 1), dtype=np.uint8)  # leading 0 per scanline: filter type None
    raw[:, 1:] = rgb.reshape(h, w * 3)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw.tobytes(), level))
            + chunk(b"IEND", b""))


def write_images(jobs: list[ImageJob], lights: tuple[str, ...], styles: tuple[str, ...], size: int,
                 ext: str = ".png") -> int:
    """Render and write every job's files (directories must exist); returns the number of files."""
    written = 0
    for job in jobs:
        capture, golden = render_row(job.label, job.comp_type, job.seed, styles, size)
        for i, light in enumerate(lights):
            name = f"{job.object_name}_{light}{ext}"
            Path(job.capture_dir, name).write_bytes(png_bytes(capture[i]))
            Path(job.golden_dir, name).write_bytes(png_bytes(golden[i]))
            written += 2
    return written


def run_job_file(path: str | Path) -> int:
    """Worker entry point: render the jobs listed in a JSON job file (see ``_demo._run_workers``)."""
    spec = json.loads(Path(path).read_text(encoding="utf-8"))
    jobs = [ImageJob(*j) for j in spec["jobs"]]
    return write_images(jobs, tuple(spec["lights"]), tuple(spec["styles"]), int(spec["size"]))

