"""Checkpoint files: ``{state_dict, architecture, epoch, step, val_far, val_loss, backbone}``.

The architecture travels inside the checkpoint so that sweeps can pin a warm start's architecture keys
to the checkpoint's (a warm start cannot change the network's shape) and a mismatch is reported by key name, not as a tensor-shape trace.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from raypipe._io import atomic_write_bytes


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, or does not fit the network the spec describes."""


def save_checkpoint(path: Path, model: nn.Module, architecture: dict[str, Any], *, epoch: int, step: int,
                    val_far: float, val_loss: float) -> Path:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "state_dict": state,
        "architecture": dict(architecture),
        "epoch": int(epoch),
        "step": int(step),
        "val_far": None if val_far is None or math.isnan(val_far) else float(val_far),
        "val_loss": None if val_loss is None or math.isnan(val_loss) else float(val_loss),
        "backbone": str(architecture["model.backbone.type"]),
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    return atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        # weights_only: a checkpoint is data; never execute pickled code from it.
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({exc})") from None
    if not isinstance(payload, dict) or "state_dict" not in payload:
        raise CheckpointError(f"{path}: expected a dict with 'state_dict' (a builtin-backend checkpoint)")
    return payload


def read_checkpoint_architecture(path: str | Path) -> dict[str, Any]:
    """The checkpoint's architecture keys as a flat dotted dict (``model.backbone.type`` → value, …).

    Sweeps that warm-start pin these keys in every trial's spec, so no trial asks for another shape.
    """
    payload = load_checkpoint(path)
    arch = payload.get("architecture")
    if not isinstance(arch, dict) or not arch:
        raise CheckpointError(f"{path}: checkpoint has no 'architecture' record")
    return dict(arch)


def architecture_mismatch(expected: dict[str, Any], found: dict[str, Any]) -> list[str]:
    """Human-readable differences ``key: spec X, checkpoint Y`` (empty when they agree)."""
    out = []
    for key in sorted(set(expected) | set(found)):
        if expected.get(key) != found.get(key):
            out.append(f"{key}: spec {expected.get(key)!r}, checkpoint {found.get(key)!r}")
    return out


def load_weights(model: nn.Module, path: str | Path, architecture: dict[str, Any]) -> dict[str, Any]:
    """Load a checkpoint's weights into ``model`` (weights only: no epoch, no optimiser state).

    Strict: every parameter/buffer must be present with the same shape; the error names each
    mismatching key. Returns the checkpoint payload (for its epoch/metrics, used in logs only).
    """
    payload = load_checkpoint(path)
    found = payload.get("architecture")
    if isinstance(found, dict) and found:
        diffs = architecture_mismatch(architecture, found)
        if diffs:
            raise CheckpointError(f"{path}: checkpoint architecture does not match the spec; pin these keys "
                                  f"to the checkpoint's values: " + "; ".join(diffs))
    state = payload["state_dict"]
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shape = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or shape:
        parts = []
        if shape:
            parts.append("shape mismatch: " + ", ".join(
                f"{k} (model {tuple(own[k].shape)}, checkpoint {tuple(state[k].shape)})" for k in shape))
        if missing:
            parts.append("missing in checkpoint: " + ", ".join(missing))
        if unexpected:
            parts.append("not in model: " + ", ".join(unexpected))
        raise CheckpointError(f"{path}: weights do not fit the network: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)
    return payload


def load_backbone_weights(model: nn.Module, path: str | Path) -> int:
    """Load ``model.backbone.pretrained_backbone_path`` into the stem: a stem state dict, or any
    checkpoint whose ``state_dict`` has ``stem.*`` keys. Returns the number of tensors loaded."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model.backbone.pretrained_backbone_path: file not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable torch file ({exc})") from None
    state = payload.get("state_dict", payload) if isinstance(payload, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict")
    stem = {k[len("stem."):]: v for k, v in state.items() if k.startswith("stem.")} or state
    target = model.get_submodule("stem")
    own = target.state_dict()
    bad = sorted(k for k in own if k not in stem or tuple(stem[k].shape) != tuple(own[k].shape))
    if bad:
        raise CheckpointError(f"{path}: backbone weights do not fit the '{getattr(model, 'cfg').backbone}' stem "
                              f"(missing or mis-shaped: {', '.join(bad)})")
    target.load_state_dict({k: stem[k] for k in own}, strict=True)
    return len(own)
