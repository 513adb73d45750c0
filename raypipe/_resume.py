"""What ``--resume RD`` checks before it touches anything: the run dir's three state files.

A resumed run trusts ``config.yaml`` (what was approved), ``pipeline_state.json`` (which phases are
done) and ``deft_state.json`` (the loop's evidence). One of them truncated or hand-edited must be a
clear error naming the file, never a traceback from deep inside a phase, and never a reason to
mark the run failed: the run is left exactly as it was, so a complete run stays complete.

``config.yaml`` carries the digest of the config it was written from (``resolved.config_digest``);
a file that no longer matches it was truncated or edited after approval. Changes go through
``--config``/overrides on ``--resume``, which re-open the gate and rewrite the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raypipe.rundir import RunDir

PHASES = ("phase1", "phase2", "phase3")


class RunDirError(ValueError):
    """A run dir that cannot be resumed as it is; the message names the file and what to do."""


@dataclass(frozen=True)
class ResumeFacts:
    status: str  # pipeline_state.json's run status: in_progress | interrupted | failed | complete
    workspace: Path  # the workspace the run was approved on


def _damaged(path: Path, why: str) -> RunDirError:
    return RunDirError(f"{path}: {why}. The run dir was left as it is; restore the file from a backup, "
                       "or start a new run without --resume")


def _json_object(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _damaged(path, "missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _damaged(path, f"unreadable ({exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        what = "empty" if not text.strip() else f"not valid JSON (truncated or edited?): {exc.msg} at line {exc.lineno}"
        raise _damaged(path, what) from None
    if not isinstance(data, dict):
        raise _damaged(path, f"expected a JSON object, got {type(data).__name__}")
    return data


def _check_config(path: Path) -> dict[str, Any]:
    from raypipe.config import ConfigError, config_digest, read_layer

    if not path.is_file():
        raise RunDirError(f"{path.parent}: not a raypipe run dir (no config.yaml)")
    try:
        saved = read_layer(path)
    except ConfigError as exc:
        raise _damaged(path, f"{str(exc).split(': ', 1)[-1]} (truncated or edited?)") from None
    resolved = saved.pop("resolved", None)
    digest = resolved.get("config_digest") if isinstance(resolved, dict) else None
    if not isinstance(digest, str):
        raise _damaged(path, "its 'resolved' block (written last) is missing: the file is truncated")
    if config_digest(saved) != digest:
        raise _damaged(path, f"it no longer matches the config the run was approved with (digest {digest}): "
                             "it was truncated or edited. Change settings with --config or key=value on "
                             "--resume instead (that re-opens the gate)")
    if not isinstance(saved.get("workspace"), str):
        raise _damaged(path, "no 'workspace' key")
    return saved


def _check_pipeline_state(path: Path) -> str:
    state = _json_object(path)
    phases = state.get("phases")
    status = state.get("status")
    if not isinstance(status, str) or not isinstance(phases, dict) or \
            any(not isinstance(phases.get(p), dict) or not isinstance(phases[p].get("status"), str) for p in PHASES):
        raise _damaged(path, "expected 'status' and the status of phase1, phase2 and phase3")
    return status


def _check_deft_state(path: Path) -> None:
    if not path.exists():
        return  # Phase 2 has not started yet
    state = _json_object(path)
    if not isinstance(state.get("iterations"), dict) or not isinstance(state.get("events"), list):
        raise _damaged(path, "expected 'iterations' and 'events'")


def check_run_dir(run_dir: str | Path) -> ResumeFacts:
    """Every state file of ``run_dir`` readable and consistent, or :class:`RunDirError`; reads only."""
    rd = RunDir(run_dir)
    if not rd.root.is_dir():
        raise RunDirError(f"{rd.root}: no such run dir" if not rd.root.exists() else f"{rd.root}: not a directory")
    saved = _check_config(rd.config_yaml)
    status = _check_pipeline_state(rd.pipeline_state)
    _check_deft_state(rd.deft_state)
    return ResumeFacts(status=status, workspace=Path(saved["workspace"]))


__all__ = ["ResumeFacts", "RunDirError", "check_run_dir"]
