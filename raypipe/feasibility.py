"""Can the Ray cluster ever run what the config asks for? Checked at the gate, before approval.

Ray queues a task or trial that no node can fit and waits for the autoscaler to add a node that
can, silently and forever when there is none (``automl.resources_per_trial.gpu=99`` on a laptop).
So every resource request of the config is compared with the nodes the cluster has now and the
node types it can scale to:

- it fits a node of the cluster → fine (with the real number of trials that run at once);
- it fits only a node type the autoscaler can add → a warning (the run waits for that node);
- it fits nothing, and the cluster cannot scale (a private local Ray, or node types that are all
  too small) → a BLOCKER;
- it fits nothing now and the node types are unknown → a warning that says so.

Node types: Ray exposes no public API for the autoscaler's node types, so they are read from the
cluster launcher's config on the head node (``~/ray_bootstrap_config.yaml``, the file Ray Tune
itself checks to tell an autoscaling cluster): ``available_node_types.<name>.resources`` and
``max_workers``. A private local Ray (no ``ray_address``) has no autoscaler.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

BOOTSTRAP_CONFIG = Path("~/ray_bootstrap_config.yaml")


@dataclass(frozen=True)
class NodeShape:
    """What one node (or one node type the autoscaler can add) offers."""

    name: str
    cpu: float
    gpu: float

    def fits(self, demand: Demand) -> bool:
        return self.cpu >= demand.cpu - 1e-9 and self.gpu >= demand.gpu - 1e-9

    def slots(self, demand: Demand) -> int:
        """How many of ``demand`` run on this node at once."""
        counts = [math.floor(have / need + 1e-9) for have, need in ((self.cpu, demand.cpu), (self.gpu, demand.gpu))
                  if need > 0]
        return min(counts) if counts else 0

    def describe(self) -> str:
        return f"{self.name} (cpu={self.cpu:g}, gpu={self.gpu:g})"


@dataclass(frozen=True)
class Demand:
    """One resource request of the config, named by its config key."""

    key: str
    cpu: float
    gpu: float

    def describe(self) -> str:
        return f"{self.key} {{cpu: {self.cpu:g}, gpu: {self.gpu:g}}}"


@dataclass(frozen=True)
class Finding:
    level: str  # ok | warn | blocker
    text: str


def live_nodes() -> list[NodeShape]:
    """The alive nodes of the connected Ray cluster (``ray.nodes()``)."""
    import ray

    return [NodeShape(str(n.get("NodeManagerAddress") or n.get("NodeID", "?")),
                      float(n.get("Resources", {}).get("CPU", 0)), float(n.get("Resources", {}).get("GPU", 0)))
            for n in ray.nodes() if n.get("Alive")]


def node_types_from_launcher_config(config: Mapping[str, Any]) -> list[NodeShape]:
    """Worker node types a cluster launcher config lets the autoscaler add (``max_workers`` > 0)."""
    out = []
    types = config.get("available_node_types")
    for name, spec in (types.items() if isinstance(types, Mapping) else ()):
        if not isinstance(spec, Mapping) or spec.get("max_workers", 0) in (0, None):
            continue
        res = spec.get("resources") or {}
        out.append(NodeShape(f"node type {name}", float(res.get("CPU", 0)), float(res.get("GPU", 0))))
    return out


def autoscaler_node_types(*, private: bool, bootstrap: Path = BOOTSTRAP_CONFIG) -> list[NodeShape] | None:
    """The node types the cluster can scale to: [] for a private local Ray, None when unknown."""
    if private:
        return []
    path = bootstrap.expanduser()
    if not path.is_file():
        return None
    import yaml

    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    return node_types_from_launcher_config(config) if isinstance(config, Mapping) else None


def check(demands: list[Demand], nodes: list[NodeShape], node_types: list[NodeShape] | None, *,
          trial: Demand | None = None, max_concurrent_trials: int | None = None) -> list[Finding]:
    """The findings for every demand, then the real trial concurrency against ``max_concurrent_trials``."""
    out: list[Finding] = []
    for d in demands:
        if any(n.fits(d) for n in nodes):
            continue
        largest = ", ".join(n.describe() for n in sorted(nodes, key=lambda n: (n.gpu, n.cpu), reverse=True)[:3])
        have = f"the cluster's nodes: {largest or 'none'}"
        fitting = [t for t in node_types or [] if t.fits(d)]
        if fitting:
            out.append(Finding("warn", f"{d.describe()}: no node fits it now; the autoscaler can add "
                                       f"{fitting[0].describe()}, and the run waits until it has"))
        elif node_types is None:
            out.append(Finding("warn", f"{d.describe()}: no node of the cluster fits it ({have}), and the "
                                       "autoscaler's node types are not visible from here; unless the cluster "
                                       "can add such a node the run waits forever"))
        else:
            types = f"; autoscaler node types: {', '.join(t.describe() for t in node_types)}" if node_types else \
                "; the cluster cannot add nodes (a private local Ray has no autoscaler)"
            out.append(Finding("blocker", f"{d.describe()}: no node can ever run it ({have}{types}); lower the "
                                          "request or use a cluster with such a node (--ray-address)"))
    if trial is not None and max_concurrent_trials is not None:
        slots = sum(n.slots(trial) for n in nodes)
        if 0 < slots < max_concurrent_trials:
            more = " (more once the autoscaler adds nodes)" if node_types else ""
            out.append(Finding("warn", f"automl.max_concurrent_trials={max_concurrent_trials}, but the cluster "
                                       f"fits {slots} trial(s) of {{cpu: {trial.cpu:g}, gpu: {trial.gpu:g}}} at once: "
                                       f"{slots} run concurrently{more}"))
    return out


__all__ = ["BOOTSTRAP_CONFIG", "Demand", "Finding", "NodeShape", "autoscaler_node_types", "check", "live_nodes",
           "node_types_from_launcher_config"]
