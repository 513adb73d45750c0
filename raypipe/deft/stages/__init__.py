"""The DEFT stages as objects, and the ordered registry that is the only list of them.

    from raypipe.deft.stages import REGISTRY
    REGISTRY["routing"].run(ctx, state, "iter1")      # its job → evidence
    REGISTRY["routing"].validate(state, "iter1", ev)  # its evidence check (what commit runs)
    REGISTRY.after("routing")                          # "anomalygen"

Adding a stage: a module here with a :class:`Stage` subclass (name, resources, evidence TypedDict,
``run``, ``check``, ``summary``) and its place in :data:`REGISTRY` below; ``next_stage``, the
commit's evidence check, the driver and the stage conformance suite follow from the registry.
"""

from __future__ import annotations

from raypipe.deft.stages.anomalygen import SDG_KINDS, AnomalygenStage, BuiltinSdg, SdgBackend, sdg_backend
from raypipe.deft.stages.base import FilePath, ResourceClass, Stage, StageRegistry
from raypipe.deft.stages.data_merge import DataMergeStage
from raypipe.deft.stages.data_mining import DataMiningStage
from raypipe.deft.stages.evaluate import EvaluateStage
from raypipe.deft.stages.loop_stop import LoopStopStage
from raypipe.deft.stages.rca import RcaStage
from raypipe.deft.stages.routing import RoutingStage
from raypipe.deft.stages.train import TrainStage

# One iteration in order: iter<N> starts at routing; the baseline enters at train; evaluate decides
# between rca (committed under iteration N, it feeds iteration N+1) and loop_stop.
REGISTRY = StageRegistry(
    iteration=(RoutingStage(), AnomalygenStage(), DataMiningStage(), DataMergeStage(), TrainStage(),
               EvaluateStage(), RcaStage()),
    stop=LoopStopStage(),
    baseline_entry="train",
    decides="evaluate",
)

__all__ = [
    "REGISTRY", "SDG_KINDS", "AnomalygenStage", "BuiltinSdg", "DataMergeStage", "DataMiningStage", "EvaluateStage",
    "FilePath", "LoopStopStage", "RcaStage", "ResourceClass", "RoutingStage", "SdgBackend", "Stage", "StageRegistry",
    "TrainStage", "sdg_backend",
]
