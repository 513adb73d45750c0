"""Bad inputs, each a small function of the case directory (``ws/`` is the input copy).

Rows are 1-based data rows, as every message names them; lights are indices in channel order.
"""

from __future__ import annotations

import os
import shutil
import struct
import zlib
from pathlib import Path

import pandas as pd

from raypipe.workspace import ALL_CSV_FILES, read_rows

from ._harness import Setup

LIGHTS = ("LowAngleLight", "SolderLight")
INFERENCE = "inference.csv"


def _csv(case: Path, split: str) -> Path:
    return case / "ws" / ALL_CSV_FILES.get(split, split)


def _rows(case: Path, split: str) -> pd.DataFrame:
    return read_rows(_csv(case, split))


def _write(case: Path, split: str, df: pd.DataFrame) -> None:
    df.to_csv(_csv(case, split), index=False)


def image_path(case: Path, split: str, row: int, column: str = "input_path", light: int = 0) -> Path:
    r = _rows(case, split).iloc[row - 1]
    return case / "ws" / "images" / r[column] / f"{r.object_name}_{LIGHTS[light]}.png"


def both(*setups: Setup) -> Setup:
    def run(case: Path) -> None:
        for s in setups:
            s(case)
    return run


def cell(split: str, row: int, column: str, value: str) -> Setup:
    def run(case: Path) -> None:
        df = _rows(case, split)
        df.loc[row - 1, column] = value
        _write(case, split, df)
    return run


def drop_column(split: str, column: str) -> Setup:
    return lambda case: _write(case, split, _rows(case, split).drop(columns=[column]))


def append_row(src: str, row: int, dst: str) -> Setup:
    def run(case: Path) -> None:
        _write(case, dst, pd.concat([_rows(case, dst), _rows(case, src).iloc[[row - 1]]], ignore_index=True))
    return run


def keep(split: str, pass_rows: bool) -> Setup:
    """Keep only the PASS rows (``pass_rows``) or only the defect rows."""
    def run(case: Path) -> None:
        df = _rows(case, split)
        _write(case, split, df[(df["label"].str.strip().str.upper() == "PASS") == pass_rows])
    return run


def text(rel: str, content: str | bytes) -> Setup:
    def run(case: Path) -> None:
        p = case / "ws" / rel
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return run


def remove(rel: str) -> Setup:
    return lambda case: (case / "ws" / rel).unlink()


def remove_image(split: str, row: int, column: str = "input_path", light: int = 0) -> Setup:
    return lambda case: image_path(case, split, row, column, light).unlink()


def _png_header(width: int, height: int) -> bytes:
    """A PNG that promises width x height pixels and holds almost no data."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


_DAMAGE = {
    "truncate": lambda data: data[: len(data) // 2],
    "empty": lambda data: b"",
    "text": lambda data: b"this is not an image\n",
    "bomb": lambda data: _png_header(30000, 30000),
    "oversized": lambda data: _png_header(9000, 8000),
}


def image(split: str, row: int, how: str, column: str = "input_path", light: int = 0) -> Setup:
    """Damage one image file in place: truncate, empty, text, bomb (Pillow's limit) or oversized (ours)."""
    def run(case: Path) -> None:
        p = image_path(case, split, row, column, light)
        p.write_bytes(_DAMAGE[how](p.read_bytes()))
    return run


def symlink_outside(split: str, row: int, column: str = "input_path", light: int = 0) -> Setup:
    """Move an image file outside the workspace and leave a symlink to it in its place."""
    def run(case: Path) -> None:
        p = image_path(case, split, row, column, light)
        target = case / "outside" / p.name
        shutil.move(p, target)
        p.symlink_to(target)
    return run


def capture_from(src: str, src_row: int, dst: str, dst_row: int, via: str = "copy") -> Setup:
    """Replace every capture file of ``dst`` row with ``src`` row's: a byte copy or a symlink."""
    def run(case: Path) -> None:
        for light in range(len(LIGHTS)):
            a, b = image_path(case, src, src_row, light=light), image_path(case, dst, dst_row, light=light)
            b.unlink()
            if via == "copy":
                shutil.copyfile(a, b)
            else:
                b.symlink_to(os.path.relpath(a, b.parent))
    return run


def inference_scores(rows: pd.DataFrame) -> pd.DataFrame:
    """An inference CSV for KPI rows: scores that separate PASS from defects, with one false alarm."""
    df = rows.copy()
    defect = df["label"].str.upper() != "PASS"
    df["siamese_score"] = [f"{0.6 + 0.01 * i:.4f}" if d else f"{0.05 + 0.01 * i:.4f}" for i, d in enumerate(defect)]
    first_pass = int((~defect).to_numpy().argmax())
    df.loc[df.index[first_pass], "siamese_score"] = "0.9900"
    return df


# -- the spec and the run dir ----------------------------------------------------------------------

SPEC = "specs/baseline_spec.yaml"
RUN_DIR = "results/run_20260101_000000"
MODEL_DIR = "results/run_delivered"  # the ``delivered`` template's run dir (best_model.json, checkpoint, spec)
CHECKPOINT = f"{MODEL_DIR}/baseline/train/model_epoch_000_step_00000.pth"


def spec_value(key: str, value: object) -> Setup:
    """Set one dotted key of the workspace spec (the file is rewritten as YAML)."""
    def run(case: Path) -> None:
        import yaml

        from raypipe.spec import set_dotted

        p = case / "ws" / SPEC
        spec = yaml.safe_load(p.read_text())
        set_dotted(spec, key, value)
        p.write_text(yaml.safe_dump(spec, sort_keys=False))
    return run


def run_dir(status: str = "in_progress", *, deft: bool = True) -> Setup:
    """A run dir as the gate leaves it (config.yaml with its digest, pipeline_state.json, and a DEFT
    state when ``deft``), recorded as ``status``: what ``--resume`` reads before anything else."""
    def run(case: Path) -> None:
        from raypipe import pipeline_state
        from raypipe._io import atomic_write_json, atomic_write_text
        from raypipe.config import config_digest, dump_config, load_config
        from tests.conftest import REPO

        ws = case / "ws"
        rd = ws / RUN_DIR
        cfg = load_config(REPO / "experiments" / "smoke.yaml", ["tracking.enabled=false"],
                          extra=[("--workspace", {"workspace": str(ws)})])
        resolved = {"workspace": str(ws), "run_dir": str(rd), "config_digest": config_digest(cfg)}
        atomic_write_text(rd / "config.yaml", dump_config(cfg, resolved=resolved))
        state = pipeline_state.new_state()
        state["status"] = status
        for phase in state["phases"].values():
            phase["status"] = "complete" if status == "complete" else "pending"
        atomic_write_json(rd / "pipeline_state.json", state)
        if deft:
            atomic_write_json(rd / "deft_state.json", {"version": 4, "status": status, "iterations": {}, "events": []})
    return run


def truncate(rel: str, keep: float = 0.5) -> Setup:
    """Cut a file to ``keep`` of its bytes (a kill mid-write by a writer that is not atomic)."""
    def run(case: Path) -> None:
        p = case / "ws" / rel
        data = p.read_bytes()
        p.write_bytes(data[: int(len(data) * keep)])
    return run


def replace_text(rel: str, old: str, new: str) -> Setup:
    def run(case: Path) -> None:
        p = case / "ws" / rel
        text = p.read_text()
        assert old in text, f"{old!r} not in {p}"
        p.write_text(text.replace(old, new, 1))
    return run


def deliver(ws: Path) -> None:
    """What a finished run hands over, under ``ws/MODEL_DIR``: an (untrained) checkpoint of the
    workspace spec's network, ``best_model.json`` naming it relative to the run dir, and the
    inference spec beside it."""
    import json

    from raypipe.backends.builtin import save_untrained_checkpoint
    from raypipe.spec import dump_spec, load_spec

    spec = load_spec(ws / SPEC)
    rd = ws / MODEL_DIR
    save_untrained_checkpoint(spec, ws / CHECKPOINT)
    (rd / "best_model_inference_spec.yaml").write_text(dump_spec(spec))
    (rd / "best_model.json").write_text(json.dumps({"checkpoint": str(Path(CHECKPOINT).relative_to(MODEL_DIR)),
                                                    "threshold": 0.5, "iteration": "baseline"}))


def checkpoint_of(key: str, value: object) -> Setup:
    """Replace the delivered checkpoint by one of another network (``key`` set to ``value``)."""
    def run(case: Path) -> None:
        from raypipe.backends.builtin import save_untrained_checkpoint
        from raypipe.spec import load_spec, set_dotted

        spec = load_spec(case / "ws" / SPEC)
        set_dotted(spec, key, value)
        save_untrained_checkpoint(spec, case / "ws" / CHECKPOINT)
    return run
