"""Where each piece of work ran: one JSON line per trial / DEFT task in ``RD/placement.jsonl``.

Called INSIDE a Ray task or trial (the only place that knows its node and the resources Ray gave
it), so on a multi-node cluster a user can check that GPU work landed on GPU nodes and that
fractional-GPU trials shared a device. One short line per call (one ``write``, ``O_APPEND``):
concurrent appends from processes on one host interleave whole lines; across NFS clients append is
not atomic, so a rare collision can garble a line, which the reader skips (``read_jsonl``).

    record_placement(run_dir, phase="phase2", what="iter1/train")
    read_placements(run_dir)  # → [{"ts": …, "phase": "phase2", "what": "iter1/train", "node_id": …}, …]

``python -m raypipe.placement RD`` prints the records as a table.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from raypipe._io import append_jsonl, read_jsonl
from raypipe.rundir import RunDir

log = logging.getLogger(__name__)

__all__ = ["Placement", "format_placements", "placement_path", "read_placements", "record_placement"]


def placement_path(run_dir: str | os.PathLike[str]) -> Path:
    return RunDir(run_dir).placement


def _ray_facts() -> dict[str, Any]:
    """Node, assigned resources and GPUs of this process, as Ray sees them (None outside Ray)."""
    facts: dict[str, Any] = {"node_id": None, "node_ip": None, "assigned_resources": None, "gpu_ids": []}
    try:
        import ray
    except ImportError:
        return facts
    if not ray.is_initialized():
        return facts
    ctx = ray.get_runtime_context()
    facts["node_id"] = ctx.get_node_id()
    facts["node_ip"] = ray.util.get_node_ip_address()
    try:
        # Only a worker (task, actor, trial) holds resources; a driver gets an AssertionError.
        facts["assigned_resources"] = dict(ctx.get_assigned_resources())
        facts["gpu_ids"] = [str(g) for g in ray.get_gpu_ids()]
    except AssertionError:
        pass
    return facts


def record_placement(run_dir: str | os.PathLike[str], *, phase: str, what: str,
                     extra: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """Append where this process runs to ``RD/placement.jsonl``; returns the record.

    Observability only: a record that cannot be written is logged and skipped (returns None),
    never a reason to fail the trial or stage that called it.
    """
    try:
        record: dict[str, Any] = {"ts": time.time(), "phase": phase, "what": what, **_ray_facts(),
                                  "pid": os.getpid(),
                                  "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
        if extra:
            record["extra"] = dict(extra)
        append_jsonl(placement_path(run_dir), record)
        return record
    except Exception as exc:  # a boundary: observability must never fail the work it observes
        log.warning("could not record the placement of %s/%s in %s: %s", phase, what, run_dir, exc)
        return None


def read_placements(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every record of a run dir, in file order ([] when nothing was recorded)."""
    return list(read_jsonl(placement_path(run_dir)))


@dataclass(frozen=True)
class Placement:
    """What to record, carried into a Ray task (small, picklable); ``None`` in its place records nothing."""

    run_dir: str
    phase: str
    what: str
    extra: Mapping[str, Any] | None = None  # recorded with every record of this placement

    def record(self, extra: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        merged = {**(self.extra or {}), **(extra or {})}
        return record_placement(self.run_dir, phase=self.phase, what=self.what, extra=merged or None)

    def child(self, suffix: str) -> "Placement":
        """The same run and phase, ``what`` extended: ``iter1/inference`` → ``iter1/inference/best_val``."""
        return replace(self, what=f"{self.what}/{suffix}")


def format_placements(records: Sequence[Mapping[str, Any]], node_names: Mapping[str, str] | None = None) -> str:
    """One line per record, in time order: phase, what, node (short id or a given name), resources, GPUs."""
    names = dict(node_names or {})
    rows = [("phase", "what", "node", "resources", "gpu_ids")]
    for r in sorted(records, key=lambda r: r.get("ts") or 0.0):
        node = r.get("node_id") or "-"
        res = r.get("assigned_resources")
        rows.append((str(r.get("phase")), str(r.get("what")), names.get(node, node[:8]),
                     "-" if res is None else ",".join(f"{k}={v:g}" for k, v in sorted(res.items())) or "{}",
                     ",".join(r.get("gpu_ids") or []) or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m raypipe.placement RUN_DIR")
    if not placement_path(sys.argv[1]).is_file():
        sys.exit(f"error: {placement_path(sys.argv[1])} does not exist (nothing recorded in this run dir yet)")
    print(format_placements(read_placements(sys.argv[1])))
