"""Rows → in-memory tensors: decode-once cache, resizing, clear errors, paired augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from raypipe.backends.builtin import ImageDataError
from raypipe.backends.builtin._config import AugmentConfig, data_from_spec
from raypipe.backends.builtin._data import augment_batch, load_image_set, read_csv_rows
from raypipe.spec import nest_dotted
from raypipe.testing import TinyWorkspace


def test_each_distinct_file_is_decoded_once(tiny_ws: TinyWorkspace) -> None:
    rows = read_csv_rows(tiny_ws.val_csv)
    doubled = pd.concat([rows, rows], ignore_index=True)
    data = load_image_set(doubled, tiny_ws.images_dir, data_from_spec(tiny_ws.spec))
    assert len(data) == 2 * len(rows)
    assert data.bank.shape == (len(rows) * 2 * len(tiny_ws.lights), 3, 32, 32)  # captures + goldens, not doubled
    assert data.bank.dtype == torch.uint8
    assert torch.equal(data.capture[: len(rows)], data.capture[len(rows):])
    assert data.labels.tolist() == [0 if lab == "PASS" else 1 for lab in doubled["label"]]


def test_images_are_resized_to_the_spec_size(tiny_ws: TinyWorkspace) -> None:
    spec = nest_dotted({"dataset.classify.image_width": 24, "dataset.classify.image_height": 16}, tiny_ws.spec)
    data = load_image_set(read_csv_rows(tiny_ws.val_csv).iloc[:2], tiny_ws.images_dir, data_from_spec(spec))
    cap, gold = data.batch(torch.tensor([0, 1]))
    assert cap.shape == gold.shape == (2, 2, 3, 16, 24)


def test_grayscale_files_become_rgb(tmp_path: Path, tiny_ws: TinyWorkspace) -> None:
    rows = read_csv_rows(tiny_ws.val_csv).iloc[:1].copy()
    for sub in ("cap", "gold"):
        for light in tiny_ws.lights:
            (tmp_path / sub).mkdir(exist_ok=True)
            Image.fromarray(np.full((32, 32), 77, np.uint8)).save(tmp_path / sub / f"X_{light}.png")
    rows[["input_path", "golden_path", "object_name"]] = ["cap", "gold", "X"]
    data = load_image_set(rows, tmp_path, data_from_spec(tiny_ws.spec))
    assert data.bank.shape[1] == 3 and int(data.bank.min()) == int(data.bank.max()) == 77


def test_missing_image_names_csv_row_column_and_file(tmp_path: Path, tiny_ws: TinyWorkspace) -> None:
    rows = read_csv_rows(tiny_ws.val_csv)
    rows.loc[2, "golden_path"] = "goldens/nowhere"
    with pytest.raises(ImageDataError) as info:
        load_image_set(rows, tiny_ws.images_dir, data_from_spec(tiny_ws.spec), source="val.csv")
    msg = str(info.value)
    assert "val.csv: row 3, column golden_path" in msg and "goldens/nowhere" in msg
    assert f"{rows.loc[2, 'object_name']}_{tiny_ws.lights[0]}.png" in msg


def test_threaded_decode_matches_serial(tiny_ws: TinyWorkspace) -> None:
    rows = read_csv_rows(tiny_ws.train_csv)
    cfg = data_from_spec(tiny_ws.spec)
    a = load_image_set(rows, tiny_ws.images_dir, cfg, threads=1)
    b = load_image_set(rows, tiny_ws.images_dir, cfg, threads=2)
    assert torch.equal(a.bank, b.bank) and torch.equal(a.capture, b.capture)


def test_augmentation_is_identical_for_capture_golden_and_lights() -> None:
    gen = torch.Generator().manual_seed(0)
    golden = torch.randint(0, 255, (64, 2, 3, 8, 8), dtype=torch.uint8, generator=gen)
    capture = golden.clone()
    capture[:, :, :, 1, 2] = 255 - capture[:, :, :, 1, 2]  # one defect pixel, same place in every light
    aug = AugmentConfig(enabled=True, hflip_probability=0.5, vflip_probability=0.5, rotate_probability=0.5,
                        angle_list=(90, 180, 270))
    cap_a, gold_a = augment_batch(capture, golden, aug, torch.Generator().manual_seed(1))
    diff = cap_a != gold_a
    assert diff.sum() == (capture != golden).sum(), "capture and golden must move together"
    where = diff.any(dim=2).nonzero()  # (sample, light, y, x)
    per_sample = {}
    for s, light, y, x in where.tolist():
        per_sample.setdefault(s, set()).add((y, x))
    assert all(len(v) == 1 for v in per_sample.values()), "every light must get the same transform"
    assert len({next(iter(v)) for v in per_sample.values()}) > 1, "augmentation did not transform anything"


def test_augmentation_off_is_identity() -> None:
    x = torch.zeros(2, 1, 3, 4, 4, dtype=torch.uint8)
    a, b = augment_batch(x, x, AugmentConfig(enabled=False), torch.Generator())
    assert a is x and b is x
