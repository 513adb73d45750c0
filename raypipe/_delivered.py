"""Read ``best_model.json``, the one file a user deploys from, with errors that name the file.

``infer`` and ``export`` both start here. A run dir is often copied to another machine after the
run, so a recorded absolute path that no longer exists is looked up again under the run dir the
``best_model.json`` now sits in (``…/run_X/baseline/train/m.pth`` → ``<new>/run_X/baseline/train/m.pth``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raypipe.rundir import RunDir


class DeliverableError(ValueError):
    """``best_model.json`` (or a file it names) is missing or malformed; the message names the file."""


@dataclass(frozen=True)
class DeliveredModel:
    best_model_json: Path
    checkpoint: Path
    threshold: float  # NO_PASS iff siamese_score > threshold
    spec: dict[str, Any]
    spec_path: Path
    record: Mapping[str, Any]  # the whole best_model.json object

    @property
    def run_dir(self) -> Path:
        return self.best_model_json.parent

    @property
    def iteration(self) -> str:
        return str(self.record.get("iteration", ""))


def relocate(recorded: str | Path, run_dir: Path) -> Path:
    """``recorded`` if it exists; else the same path re-rooted at ``run_dir`` (a moved/copied run dir);
    a relative path is taken relative to ``run_dir``."""
    p = Path(recorded)
    if not p.is_absolute():
        return run_dir / p
    if p.exists():
        return p
    parts = p.parts
    if run_dir.name in parts:
        i = len(parts) - 1 - parts[::-1].index(run_dir.name)
        moved = run_dir.joinpath(*parts[i + 1:])
        if moved.exists():
            return moved
    return p


def load_delivered(best_model_json: str | Path) -> DeliveredModel:
    """Parse and check ``best_model.json``: checkpoint file present, finite threshold, a readable spec
    (the inference spec beside it, else the recorded training spec)."""
    from raypipe.spec import SpecError, load_spec

    path = Path(best_model_json)
    if not path.is_file():
        raise DeliverableError(f"{path}: best_model.json not found")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise DeliverableError(f"{path}: not a text file ({exc.reason})") from None
    except ValueError as exc:
        raise DeliverableError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(record, Mapping):
        raise DeliverableError(f"{path}: expected a JSON object, got {type(record).__name__}")
    for key in ("checkpoint", "threshold"):
        if key not in record:
            raise DeliverableError(f"{path}: missing key '{key}'")
    threshold = record["threshold"]
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise DeliverableError(f"{path}: key 'threshold' must be a finite number, got {threshold!r}")
    if not isinstance(record["checkpoint"], str) or not record["checkpoint"]:
        raise DeliverableError(f"{path}: key 'checkpoint' must be a path, got {record['checkpoint']!r}")
    run_dir = path.resolve().parent
    ckpt = relocate(record["checkpoint"], run_dir)
    if not ckpt.is_file():
        raise DeliverableError(f"{ckpt}: checkpoint named by {path} not found")
    spec_path = RunDir(run_dir).inference_spec
    if not spec_path.is_file():
        recorded = record.get("training_spec")
        if not isinstance(recorded, str) or not recorded:
            raise DeliverableError(f"{path}: no {spec_path.name} beside it and no 'training_spec' path in it")
        spec_path = relocate(recorded, run_dir)
    try:
        spec = load_spec(spec_path)
    except SpecError as exc:  # its message starts with the spec's path
        raise DeliverableError(f"{exc} (the spec of {path})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DeliverableError(f"{spec_path}: spec of {path} is not readable ({exc})") from None
    return DeliveredModel(path, ckpt, float(threshold), spec, spec_path, record)
