"""The run config: one typed tree built and validated once (defaults ← ``--config`` ← overrides).

    cfg = load_config("experiments/smoke.yaml", ["phase2.max_iterations=2"])
    cfg.phase2.mining_filter.top_k_per_target  # 5 — typed, frozen, validated
    cfg.automl.resources_per_trial.as_dict()  # {"cpu": 1.0, "gpu": 0.0}

Phases receive the node they need (``cfg.phase2``, ``cfg.tao``); nobody reads raw dicts or
re-merges defaults.
"""

from raypipe.config._load import (
    DEFAULTS_SOURCE,
    REMOVED_KEYS,
    ConfigError,
    build_config,
    check_node,
    config_digest,
    dump_config,
    load_config,
    package_defaults,
    parse_override,
    read_layer,
    read_saved_config,
)
from raypipe.config._model import (
    AutoMLConfig,
    ExecutionPolicy,
    KeyProblem,
    MiningFilterConfig,
    Node,
    Phase1Config,
    Phase2Config,
    Phase2Resources,
    Phase3Config,
    PreflightConfig,
    RcaConfig,
    Resources,
    RunConfig,
    SdgConfig,
    TaoConfig,
    TrackingConfig,
)

__all__ = [
    "DEFAULTS_SOURCE", "REMOVED_KEYS", "AutoMLConfig", "ConfigError", "ExecutionPolicy",
    "KeyProblem", "MiningFilterConfig", "Node", "Phase1Config", "Phase2Config", "Phase2Resources", "Phase3Config",
    "PreflightConfig", "RcaConfig", "Resources", "RunConfig", "SdgConfig", "TaoConfig", "TrackingConfig",
    "build_config", "check_node", "config_digest", "dump_config", "load_config", "package_defaults", "parse_override",
    "read_layer", "read_saved_config",
]
