"""NVIDIA TAO's vocabulary for the files of a run dir, as functions the writers call.

raypipe promises that the DEFT AOI tools of NVIDIA's TAO skill bank (``commit_stage.py``,
``prepare_inference_spec.py``, ``finalize_run.py``, ``deft_exec.py``, ``deft_context.py``,
``render_report.py`` of the ``tao-run-deft-aoi`` skill) read a raypipe run dir like one of their
own. Those tools are strict: a label they do not know, a policy word they do not know, a missing
log path or an unresolvable backbone file stops them. Every TAO name raypipe writes is decided
here, once, with the reason beside it, so the state, the stages, finalize and the Phase 3 handoff
cannot drift apart. ``raypipe.testing.tao_contract`` checks a finished run dir against the same
rules.

One module per artifact: ``_policy`` (``execution_policy``), ``_config`` (``state.config``),
``_mining`` (data_mining logs and ledger), ``_entries`` (evaluate results, Phase 3's entry),
``_handoff`` (backbone, ``best_model.json``, inference spec), ``_kpi`` (``kpi_target``).
Everything is a pure function of its arguments except :func:``write_mining_logs``,
:func:``write_resolved_mining_pool`` and :func:``stage_builtin_backbone``, which write only under the
run dir.
"""

from raypipe.tao_interop._config import (
    ANOMALYGEN_KEYS,
    BUILTIN_BACKBONE_DIR,
    RESOLVED_POOL_CSV,
    WORKSPACE_BACKBONE_DIR,
    anomalygen_block,
    gpu_model_text,
    state_config_additions,
    write_resolved_mining_pool,
)
from raypipe.tao_interop._entries import (
    FINAL_AUTOML,
    LOOP_LABEL,
    final_automl_entry,
    metric_result_record,
    phase3_training_csv,
    record_training_data,
)
from raypipe.tao_interop._handoff import (
    BACKBONE_SUFFIXES,
    BEST_MODEL_KEYS,
    CHECKPOINT_MOUNT,
    INFERENCE_SPEC_TOP_KEYS,
    BackboneError,
    ResolvedBackbone,
    best_model_record,
    builtin_backbone_filename,
    inference_spec,
    resolve_backbone,
    stage_builtin_backbone,
)
from raypipe.tao_interop._kpi import kpi_target_text
from raypipe.tao_interop._mining import (
    LEDGER_VERSION,
    MINING_HISTORY_FILE,
    MINING_LOG_FILES,
    MINING_SUMMARY_KEYS,
    STATUS_FAIL,
    STATUS_PASS,
    file_sha256,
    mining_ledger,
    mining_ledger_entry,
    mining_log_text,
    mining_records,
    write_mining_logs,
)
from raypipe.tao_interop._policy import (
    NETWORK_MODES,
    OFFLINE_CONTAINER_ENV,
    OFFLINE_PROCESS_ENV,
    POLICY_KEYS,
    PYTHON_LAUNCHER,
    NetworkMode,
    PolicyAction,
    PolicyError,
    airgapped,
    allows,
    execution_policy,
    network_mode_of,
    offline_environment,
    policy_summary,
    resolve_network_mode,
    validate_policy,
)

__all__ = [
    "ANOMALYGEN_KEYS", "BACKBONE_SUFFIXES", "BEST_MODEL_KEYS", "BUILTIN_BACKBONE_DIR", "CHECKPOINT_MOUNT",
    "FINAL_AUTOML", "INFERENCE_SPEC_TOP_KEYS", "LEDGER_VERSION", "LOOP_LABEL", "MINING_HISTORY_FILE",
    "MINING_LOG_FILES", "MINING_SUMMARY_KEYS", "NETWORK_MODES", "OFFLINE_CONTAINER_ENV", "OFFLINE_PROCESS_ENV",
    "POLICY_KEYS", "PYTHON_LAUNCHER", "RESOLVED_POOL_CSV", "STATUS_FAIL", "STATUS_PASS", "WORKSPACE_BACKBONE_DIR",
    "BackboneError", "NetworkMode", "PolicyAction", "PolicyError", "ResolvedBackbone", "airgapped", "allows",
    "anomalygen_block", "best_model_record", "builtin_backbone_filename", "execution_policy", "file_sha256",
    "final_automl_entry", "gpu_model_text", "inference_spec", "kpi_target_text", "metric_result_record",
    "mining_ledger", "mining_ledger_entry", "mining_log_text", "mining_records", "network_mode_of",
    "offline_environment", "phase3_training_csv", "policy_summary", "record_training_data", "resolve_backbone",
    "resolve_network_mode", "stage_builtin_backbone", "state_config_additions", "validate_policy", "write_mining_logs",
    "write_resolved_mining_pool",
]
