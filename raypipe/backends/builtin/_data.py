"""Rows → in-memory uint8 tensors, decoded once; batches are tensor indexing (no DataLoader workers).

On a 1-core trial, decoding PNGs per epoch (or forking DataLoader workers) would cost more than the
model itself. Each distinct image file is decoded once into one ``(U, 3, H, W)`` uint8 bank; rows
hold indices into it (a golden shared by many rows is stored once).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from raypipe.backends.builtin._config import AugmentConfig, DataConfig
from raypipe.workspace._rows import REQUIRED_COLUMNS, is_defect, normalise_label


class ImageDataError(ValueError):
    """A row's image is missing or unreadable; the message names the CSV, 1-based row, column and file."""


@dataclass
class ImageSet:
    """One dataset in memory: ``bank[capture[i, l]]`` is row ``i``'s capture for light ``l``."""

    bank: torch.Tensor  # (U, 3, H, W) uint8
    capture: torch.Tensor  # (N, L) int64
    golden: torch.Tensor  # (N, L) int64
    labels: torch.Tensor  # (N,) int64, 1 = defect
    rows: pd.DataFrame

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device) -> "ImageSet":
        return ImageSet(self.bank.to(device), self.capture.to(device), self.golden.to(device),
                        self.labels.to(device), self.rows)

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 capture and golden batches, each ``(B, L, 3, H, W)``."""
        return self.bank[self.capture[idx]], self.bank[self.golden[idx]]


def _decode(path: Path, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        if im.size != size:  # size is (W, H) as PIL has it
            im = im.resize(size, Image.Resampling.BILINEAR)
        return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1).copy()


def load_image_set(rows: pd.DataFrame, images_dir: Path, cfg: DataConfig, *, source: str = "<rows>",
                   threads: int = 1, need_label: bool = True) -> ImageSet:
    """Decode every image the rows name (each distinct file once) at the spec's image size.

    ``source`` names the CSV in error messages; ``threads`` decode in parallel (PIL releases the GIL);
    without ``need_label`` (embedding) a missing ``label`` column reads as all PASS.
    """
    needed = [c for c in REQUIRED_COLUMNS if need_label or c != "label"]
    missing_cols = [c for c in needed if c not in rows.columns]
    if missing_cols:
        raise ImageDataError(f"{source}: missing required column(s) {missing_cols}; expected "
                             f"{', '.join(REQUIRED_COLUMNS)}")
    layout = cfg.layout
    index: dict[str, int] = {}
    files: list[Path] = []
    where: list[tuple[int, str]] = []  # (1-based row, column) of each file's first use, for errors
    cap = np.zeros((len(rows), len(layout.lights)), dtype=np.int64)
    gold = np.zeros_like(cap)
    for i, rec in enumerate(rows[["input_path", "golden_path", "object_name"]].itertuples(index=False)):
        for column, target in (("input_path", cap), ("golden_path", gold)):
            for l_idx, light in enumerate(layout.lights):
                path = layout.image_path(images_dir, getattr(rec, column), rec.object_name, light)
                key = str(path)
                if key not in index:
                    index[key] = len(files)
                    files.append(path)
                    where.append((i + 1, column))
                target[i, l_idx] = index[key]
    size = (cfg.image_width, cfg.image_height)

    def decode(k: int) -> np.ndarray:
        try:
            return _decode(files[k], size)
        except FileNotFoundError:
            row, column = where[k]
            raise ImageDataError(f"{source}: row {row}, column {column}: image file not found: {files[k]}") from None
        except Exception as exc:  # PIL raises many types for a corrupt file
            row, column = where[k]
            raise ImageDataError(f"{source}: row {row}, column {column}: cannot decode {files[k]}: {exc}") from None

    bank = np.empty((len(files), 3, cfg.image_height, cfg.image_width), dtype=np.uint8)
    if threads > 1 and len(files) > 64:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            for k, arr in enumerate(pool.map(decode, range(len(files)))):
                bank[k] = arr
    else:
        for k in range(len(files)):
            bank[k] = decode(k)
    label_col = rows["label"] if "label" in rows.columns else ["PASS"] * len(rows)
    labels = torch.tensor([1 if is_defect(v) else 0 for v in label_col], dtype=torch.int64)
    return ImageSet(torch.from_numpy(bank), torch.from_numpy(cap), torch.from_numpy(gold), labels, rows)


def read_csv_rows(path: Path) -> pd.DataFrame:
    """Read a workspace CSV (all strings) with labels normalised (PASS spellings to ``PASS``)."""
    from raypipe.workspace._rows import read_rows

    rows = read_rows(path)
    if "label" in rows.columns:
        rows["label"] = rows["label"].map(normalise_label)
    return rows


class Normaliser:
    """uint8 → float, ``(x/255 − mean)/std`` per RGB channel, on the model's device."""

    def __init__(self, cfg: DataConfig, device: torch.device) -> None:
        self.mean = torch.tensor(cfg.rgb_mean, device=device).view(1, 1, 3, 1, 1) * 255.0
        self.std = torch.tensor(cfg.rgb_std, device=device).view(1, 1, 3, 1, 1) * 255.0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std


def augment_batch(capture: torch.Tensor, golden: torch.Tensor, aug: AugmentConfig,
                  gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flips / 90° rotations / brightness-contrast, the SAME per sample for capture, golden and
    every light (a transform applied to one side only would itself look like a defect).

    Random numbers come from ``gen`` (CPU) so a seeded run is reproducible on any device.
    """
    if not aug.enabled:
        return capture, golden
    b = capture.shape[0]
    pair = torch.stack([capture, golden], 1)  # (B, 2, L, 3, H, W): one transform per sample
    dev = pair.device

    def draw(p: float) -> torch.Tensor:
        return (torch.rand(b, generator=gen) < p).to(dev).view(b, 1, 1, 1, 1, 1)

    if aug.hflip_probability > 0:
        pair = torch.where(draw(aug.hflip_probability), pair.flip(-1), pair)
    if aug.vflip_probability > 0:
        pair = torch.where(draw(aug.vflip_probability), pair.flip(-2), pair)
    if aug.rotate_probability > 0 and aug.angle_list:
        rotate = torch.rand(b, generator=gen) < aug.rotate_probability
        choice = torch.randint(len(aug.angle_list), (b,), generator=gen)
        square = pair.shape[-1] == pair.shape[-2]
        for j, angle in enumerate(aug.angle_list):
            k = angle // 90
            if k == 0 or (k % 2 and not square):  # 90°/270° would change a non-square image's shape
                continue
            sel = (rotate & (choice == j)).nonzero().flatten().to(dev)
            if sel.numel():
                pair[sel] = torch.rot90(pair[sel], k, dims=(-2, -1))
    if aug.color_probability > 0 and (aug.brightness > 0 or aug.contrast > 0):
        apply = (torch.rand(b, generator=gen) < aug.color_probability).float()
        bright = 1 + (torch.rand(b, generator=gen) * 2 - 1) * aug.brightness * apply
        contrast = 1 + (torch.rand(b, generator=gen) * 2 - 1) * aug.contrast * apply
        x = pair.float()
        mean = x.mean(dim=(-3, -2, -1), keepdim=True)
        x = (x - mean) * contrast.to(dev).view(b, 1, 1, 1, 1, 1) + mean
        x = x * bright.to(dev).view(b, 1, 1, 1, 1, 1)
        pair = x.clamp_(0, 255).to(torch.uint8)
    return pair[:, 0], pair[:, 1]


def sampler_weights(labels: torch.Tensor, fpratio_sampling: float | None) -> torch.Tensor | None:
    """Per-row weights of TAO's weighted sampler: PASS 1, defect ``(n_pass/n_defect) * fpratio_sampling``.

    None (plain shuffle) when the key is unset or one class is absent (the formula is undefined then).
    """
    if fpratio_sampling is None or fpratio_sampling <= 0:
        return None
    n_def = int(labels.sum())
    n_pass = int(labels.numel()) - n_def
    if n_def == 0 or n_pass == 0:
        return None
    w_def = (n_pass / n_def) * float(fpratio_sampling)
    return torch.where(labels.cpu() == 1, torch.tensor(w_def, dtype=torch.float64),
                       torch.tensor(1.0, dtype=torch.float64))


def epoch_order(n: int, weights: torch.Tensor | None, gen: torch.Generator) -> torch.Tensor:
    """Row indices of one epoch: ``n`` draws with replacement by ``weights``, else a permutation."""
    if weights is None:
        return torch.randperm(n, generator=gen)
    return torch.multinomial(weights, n, replacement=True, generator=gen)
