"""NVIDIA TAO's vocabulary for the files of a run dir, as functions the writers call.

raypipe promises that the DEFT AOI tools of NVIDIA's TAO skill bank (``commit_stage.py``,
``prepare_inference_spec.py``, ``finalize_run.py``, ``deft_exec.py``, ``deft_context.py``,
``render_report.py`` of the ``tao-run-deft-aoi`` skill) read a raypipe run dir like one of their
own. Those tools are strict: a label they do not know, a policy word they do not know, a missing
log path or an unresolvable backbone file stops them. Every TAO name raypipe writes is decided
here, once, with the reason beside it, so the state, the stages, finalize and the Phase 3 handoff
cannot drift apart. ``raypipe.testing.tao_contract`` checks a finished run dir against the same
rules.

Everything is a pure function of its arguments, except the three writers at the end
(:func:`write_mining_logs`, :func:`write_resolved_mining_pool`, :func:`stage_builtin_backbone`),
which only ever write under the run dir.
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

# ---------------------------------------------------------------------------------------------
# Execution policy
#
# TAO records, once per run, whether the run may touch the network. Its command wrapper reads only
# `network_mode` and locks everything down when it equals "airgap"; ANY other word (raypipe used
# to write "offline") leaves installs, downloads and registry access open. So raypipe writes
# exactly TAO's two words, and for its own decisions treats anything but "network-enabled" as
# air-gapped (fail closed).

NetworkMode = Literal["airgap", "network-enabled"]
NETWORK_MODES: tuple[str, ...] = ("airgap", "network-enabled")
_OLD_WORDS = {"offline": "airgap", "online": "network-enabled"}
POLICY_KEYS = ("network_mode", "activation_source", "allow_package_install", "allow_remote_fetch",
               "allow_container_pull", "allow_registry_login", "python_launcher", "python_executable",
               "hf_offline")
# How this run's Python was started: TAO records its launcher script here; ours is the CLI.
PYTHON_LAUNCHER = "python -m raypipe.run"
# What TAO injects into every air-gapped container (and its own environment).
OFFLINE_CONTAINER_ENV: dict[str, str] = {"AIR_GAPPED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                                         "PIP_NO_INDEX": "1"}
# raypipe's own process additionally silences the two libraries that report usage over the network
# by default (Ray's usage stats, MLflow's telemetry): an air-gapped run makes no network call at all.
OFFLINE_PROCESS_ENV: dict[str, str] = {**OFFLINE_CONTAINER_ENV, "RAY_USAGE_STATS_ENABLED": "0",
                                       "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
PolicyAction = Literal["container_pull", "registry_login", "package_install", "remote_fetch"]


class PolicyError(ValueError):
    """An execution policy TAO's tools would misread, or one that contradicts itself."""


def network_mode_of(value: Any) -> NetworkMode:
    """``value`` if it is one of TAO's two words; otherwise an error that names the right one."""
    if value == "airgap" or value == "network-enabled":
        return value  # type: ignore[return-value]
    hint = f" (did you mean '{_OLD_WORDS[value]}'?)" if value in _OLD_WORDS else ""
    raise PolicyError(f"execution_policy.network_mode: {value!r} is not one of {', '.join(NETWORK_MODES)}{hint}; "
                      "TAO's tools know only these two words and treat any other as network-enabled")


def resolve_network_mode(configured: str | None, *, source: str,
                         environ: Mapping[str, str] | None = None) -> tuple[NetworkMode, str]:
    """``(network_mode, activation_source)`` for a new run.

    ``AIR_GAPPED=1`` in the environment forces ``airgap`` and cannot be overridden (TAO's rule: the
    environment of an isolated site outranks a config file). Without a configured value raypipe
    defaults to ``airgap``: it needs no network to run. ``source`` says where ``configured`` came
    from (e.g. ``"config:execution_policy.network_mode"``).
    """
    env = os.environ if environ is None else environ
    mode = network_mode_of(configured) if configured is not None else None
    if env.get("AIR_GAPPED") == "1":
        if mode == "network-enabled":
            raise PolicyError("AIR_GAPPED=1 is set in the environment: execution_policy.network_mode cannot be "
                              "network-enabled (unset AIR_GAPPED, or set network_mode: airgap)")
        return "airgap", "environment:AIR_GAPPED"
    if mode is None:
        return "airgap", "default"
    return mode, source


def execution_policy(network_mode: str, *, activation_source: str, python_executable: str | Path | None = None,
                     allow_container_pull: bool = False, allow_registry_login: bool = False) -> dict[str, Any]:
    """``deft_state.json``'s ``execution_policy`` in TAO's vocabulary (its key order, too).

    TAO derives its four ``allow_*`` flags and ``hf_offline`` from the mode. raypipe keeps its own
    finer switches for the two actions it can take itself (``allow_container_pull``,
    ``allow_registry_login``, off unless the user turns them on) and refuses them under ``airgap``
    rather than silently dropping them. ``allow_package_install``/``allow_remote_fetch`` tell TAO's
    tools what the user allowed on this run; raypipe itself never installs or downloads anything.
    """
    mode = network_mode_of(network_mode)
    online = mode == "network-enabled"
    asked = [k for k, v in (("allow_container_pull", allow_container_pull),
                            ("allow_registry_login", allow_registry_login)) if v]
    if asked and not online:
        raise PolicyError(f"execution_policy: {', '.join(asked)} cannot be true with network_mode: airgap "
                          "(an air-gapped run pulls no image and logs into no registry); set them false, or "
                          "network_mode: network-enabled")
    if not str(activation_source).strip():
        raise PolicyError("execution_policy.activation_source must say where the network mode came from")
    # Absolute, not resolved: a virtualenv's python is a symlink to the base interpreter, and the
    # resolved path would name a Python without the run's packages.
    python = Path(os.path.abspath(Path(python_executable if python_executable is not None else sys.executable)
                                  .expanduser()))
    return {
        "network_mode": mode,
        "activation_source": str(activation_source),
        "allow_package_install": online,
        "allow_remote_fetch": online,
        "allow_container_pull": online and bool(allow_container_pull),
        "allow_registry_login": online and bool(allow_registry_login),
        "python_launcher": PYTHON_LAUNCHER,
        "python_executable": str(python),
        "hf_offline": not online,
    }


def airgapped(policy: Mapping[str, Any] | None) -> bool:
    """True unless the policy says, in TAO's word, ``network-enabled`` (no policy = air-gapped)."""
    return not (isinstance(policy, Mapping) and policy.get("network_mode") == "network-enabled")


def allows(policy: Mapping[str, Any] | None, action: PolicyAction) -> bool:
    """Whether ``action`` may happen: network-enabled AND its ``allow_<action>`` flag is exactly true."""
    return not airgapped(policy) and isinstance(policy, Mapping) and policy.get(f"allow_{action}") is True


def offline_environment(policy: Mapping[str, Any] | None, *, container: bool = False) -> dict[str, str]:
    """Variables an air-gapped run sets: for a container (TAO's four) or for raypipe's own process
    (those plus the usage-reporting switches of Ray and MLflow). Empty when network-enabled.

    The process variables must be in ``os.environ`` before Ray starts and before MLflow logs
    anything: Ray's head process and MLflow's telemetry read them at start-up.
    """
    if not airgapped(policy):
        return {}
    return dict(OFFLINE_CONTAINER_ENV if container else OFFLINE_PROCESS_ENV)


def policy_summary(policy: Mapping[str, Any]) -> str:
    """One pre-flight line: the mode, where it came from, and what raypipe will and will not do."""
    mode = policy.get("network_mode")
    source = policy.get("activation_source", "?")
    if airgapped(policy):
        env = " ".join(f"{k}={v}" for k, v in OFFLINE_PROCESS_ENV.items())
        return (f"network_mode: airgap (source: {source}): raypipe makes no image pull, no registry login and no "
                f"network call; it runs with {env}")
    pull = "allowed after approval" if allows(policy, "container_pull") else "not allowed"
    login = "allowed after approval" if allows(policy, "registry_login") else "not allowed"
    return f"network_mode: {mode} (source: {source}): image pull {pull}; registry login {login}"


# ---------------------------------------------------------------------------------------------
# state.config additions
#
# TAO's scripts resolve paths from `config`: `prepare_inference_spec.py` finds the backbone file
# through `backbone_weight_dir` (a KeyError without it); the mining pool resolver writes
# `resolved_mining_pool_csv`; its report prints `num_gpus`x`gpu_model`. `train_container` and the
# `anomalygen` block are what TAO's state schema records about who trained and who synthesised.

RESOLVED_POOL_CSV = Path("inputs") / "mining_pool.resolved.csv"
BUILTIN_BACKBONE_DIR = "backbone"  # RD/backbone: the built-in backend's staged backbone weights
WORKSPACE_BACKBONE_DIR = Path("augmentation") / "backbone"  # where TAO stages backbone files
ANOMALYGEN_KEYS = ("sub_skill", "mode", "project", "defect_spec", "checkpoint_dir", "dataset_dir_source", "step",
                   "num_SDG", "container")


def anomalygen_block(kind: str, num_sdg: int, *, images_dir: str | Path, workspace_root: str | Path | None = None,
                     project: str | None = None, step: int | None = None,
                     container: str | None = None) -> dict[str, Any]:
    """``config.anomalygen``: TAO's record of the synthetic-defect generator, for either SDG kind.

    ``builtin``: raypipe's procedural generator draws defects onto golden images of the training
    rows, so its "dataset" is the image root and it has no project, spec, checkpoint or container.
    ``anomalygen``: NVIDIA AnomalyGen in its container, laid out as TAO lays it out under
    ``<workspace>/augmentation/anomalygen/``.
    """
    if kind == "builtin":
        return {"sub_skill": "raypipe.deft.sdg", "mode": "procedural", "project": None, "defect_spec": None,
                "checkpoint_dir": None, "dataset_dir_source": str(images_dir), "step": None,
                "num_SDG": int(num_sdg), "container": None}
    if kind == "anomalygen":
        if workspace_root is None or not project:
            raise ValueError("anomalygen_block: the AnomalyGen generator needs workspace_root and project")
        base = Path(workspace_root) / "augmentation" / "anomalygen"
        return {"sub_skill": "paidf-anomalygen", "mode": "inference_only", "project": project,
                "defect_spec": str(base / "datasets" / project / "defect_spec.jsonl"),
                "checkpoint_dir": str(base / "checkpoints" / project),
                "dataset_dir_source": str(base / "datasets" / project), "step": step,
                "num_SDG": int(num_sdg), "container": container}
    raise ValueError(f"anomalygen_block: unknown SDG kind {kind!r} (builtin | anomalygen)")


def gpu_model_text(name: str | None) -> str:
    """``config.gpu_model`` is never empty in TAO's state: say "CPU only" rather than null."""
    return name.strip() if name and name.strip() else "none (CPU only)"


def write_resolved_mining_pool(pool_csv: str | Path, images_root: str | Path, out: str | Path, *, light: str,
                               image_ext: str) -> Path:
    """``config.resolved_mining_pool_csv``: the pool with one canonical ``filepath`` per row.

    TAO mines only from this resolved copy, never from guessed paths: ``filepath`` is the row's
    capture image for ``light`` (relative to ``images_root`` when inside it), and every capture and
    golden file must exist. Problems name the pool CSV, the row (1-based, header excluded) and
    the column; nothing is written then. The workspace's pool itself is never touched.
    """
    import pandas as pd

    from raypipe._io import atomic_write_text

    pool_csv, root = Path(pool_csv), Path(images_root).resolve()
    rows = pd.read_csv(pool_csv, dtype=str, keep_default_na=False)
    problems: list[str] = []
    missing_cols = [c for c in ("input_path", "golden_path", "object_name") if c not in rows.columns]
    if missing_cols:
        raise ValueError(f"{pool_csv}: missing column(s) {missing_cols}")
    filepaths: list[str] = []
    for i, rec in enumerate(rows.to_dict("records"), start=1):
        name = f"{rec['object_name']}_{light}{image_ext}"
        capture = (root / rec["input_path"] / name).resolve()
        for col in ("input_path", "golden_path"):
            f = (root / rec[col] / name).resolve()
            if not f.is_file():
                problems.append(f"row {i}, column '{col}': {f} does not exist")
        filepaths.append(capture.relative_to(root).as_posix() if capture.is_relative_to(root) else str(capture))
    if problems:
        shown = "; ".join(problems[:10]) + (f" (+{len(problems) - 10} more)" if len(problems) > 10 else "")
        raise ValueError(f"{pool_csv}: {len(problems)} pool file(s) do not resolve under {root}: {shown}")
    rows["filepath"] = filepaths
    return atomic_write_text(Path(out), rows.to_csv(index=False))


def state_config_additions(*, run_dir: str | Path, backbone_weight_dir: str | Path, train_container: str | None,
                           anomalygen: Mapping[str, Any]) -> dict[str, Any]:
    """The ``config`` keys TAO's state has and raypipe's lacked; merge them into the config block.

    ``backbone_weight_dir``: the directory holding the backbone file the training spec names
    (:func:`stage_builtin_backbone` for the built-in backend; the TAO backend's staged file's
    directory, normally ``<workspace>/augmentation/backbone``). ``train_container``: the TAO image
    URI, or None for the built-in backend, which trains in-process.
    """
    missing = [k for k in ANOMALYGEN_KEYS if k not in anomalygen]
    if missing:
        raise ValueError(f"state_config_additions: anomalygen block lacks {missing}")
    return {"backbone_weight_dir": str(Path(backbone_weight_dir).resolve()),
            "resolved_mining_pool_csv": str(Path(run_dir).resolve() / RESOLVED_POOL_CSV),
            "train_container": train_container, "anomalygen": dict(anomalygen)}


# ---------------------------------------------------------------------------------------------
# data_mining records
#
# `commit_stage.py` refuses a mining commit without three step logs under the iteration dir
# (non-empty, not a placeholder such as "ok"), and the run-level ledger `mining_history.json`.
# TAO's logs are the complete output of its embedding and k-NN containers, ending with TAO's
# status line; raypipe's are the facts of its own steps, ending the same way.

MINING_LOG_FILES: dict[str, str] = {"mining_target_log": "target_embeddings.log",
                                    "mining_source_log": "source_embeddings.log",
                                    "mining_knn_log": "nearest_neighbors.log"}
MINING_HISTORY_FILE = "mining_history.json"
STATUS_PASS = "Execution status: PASS"
STATUS_FAIL = "Execution status: FAIL"
LEDGER_VERSION = 1
# What TAO's history filter reports from an iteration's mining_history_summary.json.
MINING_SUMMARY_KEYS = ("iteration", "topn", "candidate_unique_count", "already_mined_count", "selected_count",
                       "cumulative_unique_count")


def mining_log_text(step: str, facts: Mapping[str, Any], *, passed: bool = True) -> str:
    """A step log: what ran, on what, with what result (``key: value`` lines), then TAO's status line."""
    if not facts:
        raise ValueError(f"mining log '{step}': no facts to record (TAO refuses placeholder logs)")
    lines = [f"raypipe data_mining: {step}"] + [f"{k}: {v}" for k, v in facts.items()]
    return "\n".join(lines + [STATUS_PASS if passed else STATUS_FAIL]) + "\n"


def mining_records(iter_dir: str | Path, run_dir: str | Path) -> dict[str, str]:
    """The four data_mining fields TAO requires beside raypipe's: three step logs and the ledger."""
    mining_dir = Path(iter_dir).resolve() / "mining_filter"
    out = {key: str(mining_dir / name) for key, name in MINING_LOG_FILES.items()}
    out["mining_history"] = str(Path(run_dir).resolve() / MINING_HISTORY_FILE)
    return out


def write_mining_logs(iter_dir: str | Path, steps: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Write the three step logs; ``steps`` maps ``mining_target_log``/``mining_source_log``/
    ``mining_knn_log`` to that step's facts (embedder, rows, dimension, seconds; index, k, counts).
    Returns the field → path mapping to commit."""
    from raypipe._io import atomic_write_text

    missing = [k for k in MINING_LOG_FILES if k not in steps]
    if missing:
        raise ValueError(f"write_mining_logs: no facts for {missing}")
    mining_dir = Path(iter_dir).resolve() / "mining_filter"
    out: dict[str, str] = {}
    for key, name in MINING_LOG_FILES.items():
        out[key] = str(atomic_write_text(mining_dir / name, mining_log_text(name.removesuffix(".log"), steps[key])))
    return out


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def mining_ledger_entry(*, iteration: int, topn: int, candidate_parquet: str | Path, output_parquet: str | Path,
                        summary_file: str | Path, candidate_unique_count: int, already_mined_count: int,
                        selected_filepaths: Iterable[str]) -> dict[str, Any]:
    """One ``mining_history.json`` iteration in TAO's ledger format.

    TAO's history filter re-verifies a committed iteration by these digests before it trusts the
    ledger, so write the candidate parquet, the mined parquet and the summary first, then this.
    """
    selected = sorted(str(p) for p in selected_filepaths)
    if len(selected) != len(set(selected)):
        raise ValueError(f"mining ledger iteration {iteration}: selected_filepaths has duplicates")
    paths = {k: Path(v).resolve() for k, v in (("candidate_parquet", candidate_parquet),
                                               ("output_parquet", output_parquet), ("summary_file", summary_file))}
    return {"iteration": int(iteration), "topn": int(topn),
            "candidate_parquet": str(paths["candidate_parquet"]),
            "candidate_sha256": file_sha256(paths["candidate_parquet"]),
            "candidate_unique_count": int(candidate_unique_count), "already_mined_count": int(already_mined_count),
            "selected_count": len(selected), "selected_filepaths": selected,
            "output_parquet": str(paths["output_parquet"]), "output_sha256": file_sha256(paths["output_parquet"]),
            "summary_file": str(paths["summary_file"]), "summary_sha256": file_sha256(paths["summary_file"])}


def mining_ledger(entries: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The whole ledger: TAO's version and identity, entries by iteration, the cumulative count."""
    ordered = sorted((dict(e) for e in entries), key=lambda e: int(e["iteration"]))
    unique = {p for e in ordered for p in e["selected_filepaths"]}
    return {"version": LEDGER_VERSION, "identity": "filepath", "iterations": ordered,
            "cumulative_unique_count": len(unique)}


# ---------------------------------------------------------------------------------------------
# evaluate: the metric result as TAO stores it
#
# TAO keeps the evaluator's JSON as written (threshold, diagnostics and all), adds where it came
# from and recomputes `passed` from the contract. best_model.json copies it from there.

def metric_result_record(evaluator_output: Mapping[str, Any], *, evidence_path: str | Path,
                         passed: bool) -> dict[str, Any]:
    """``iterations.<label>.metric_result``: evaluator output + ``evidence_path`` + recomputed ``passed``."""
    out = dict(evaluator_output)
    out["evidence_path"] = str(Path(evidence_path).resolve())
    out["passed"] = bool(passed)
    return out


# ---------------------------------------------------------------------------------------------
# Phase 3
#
# TAO's three-phase skill registers Phase 3's winner as `iterations.final_automl` — an entry "with
# the same shape as iteration entries" — and re-runs the handoff. It files NO stage event for it:
# `commit_stage.py` accepts only `baseline` and `iter<N>` labels, and the loop ended with its one
# `loop_stop`. Phase 3 trains on the final iteration's combined CSV (not the best iteration's).

FINAL_AUTOML = "final_automl"
LOOP_LABEL = re.compile(r"^(baseline|iter[1-9][0-9]*)$")


def phase3_training_csv(state: Mapping[str, Any]) -> Path:
    """The CSV Phase 3 trains on: the last loop iteration's combined CSV, else the base training CSV
    (the baseline met the KPI and the loop added nothing)."""
    merged = [(int(label[4:]), entry["combined_training_csv"]) for label, entry in state.get("iterations", {}).items()
              if label.startswith("iter") and LOOP_LABEL.match(label) and entry.get("combined_training_csv")]
    if merged:
        return Path(max(merged)[1])
    return Path(state["config"]["training_csv"])


def record_training_data(spec: Mapping[str, Any], *, train_csv: str | Path, images_dir: str | Path,
                         val_csv: str | Path, val_images_dir: str | Path) -> dict[str, Any]:
    """A copy of ``spec`` whose dataset block names the CSVs a training actually read.

    Every spec raypipe records (a trial's ``experiment.yaml``, ``final_automl/best_spec.yaml``, an
    entry's ``training_spec``) must say what the model was trained on; TAO's report and anyone
    re-running the spec read it from ``dataset.classify.{train,validation}_dataset``.
    """
    out = copy.deepcopy(dict(spec))
    classify = out.setdefault("dataset", {}).setdefault("classify", {})
    classify["train_dataset"] = {"csv_path": str(Path(train_csv).resolve()), "images_dir": str(Path(images_dir).resolve())}
    classify["validation_dataset"] = {"csv_path": str(Path(val_csv).resolve()),
                                      "images_dir": str(Path(val_images_dir).resolve())}
    return out


def final_automl_entry(*, best_ckpt_path: str | Path, training_spec: str | Path, metric_result: Mapping[str, Any],
                       threshold: float | None, training_csv: str | Path, metric_name: str,
                       inference_csv: str | Path | None = None,
                       parent_ckpt_path: str | Path | None = None) -> dict[str, Any]:
    """``iterations.final_automl``: what TAO's handoff picks from, and what its report shows.

    ``status: complete`` and a ``metric_result`` make it a candidate of the best-model pick;
    ``training_spec`` is the spec the winner trained with; ``combined_training_csv`` is the CSV it
    actually trained on (the report counts its rows).
    """
    entry: dict[str, Any] = {"status": "complete", "stage_completed": "evaluate",
                             "best_ckpt_path": str(Path(best_ckpt_path).resolve()),
                             "training_spec": str(Path(training_spec).resolve()),
                             "combined_training_csv": str(Path(training_csv).resolve()),
                             "metric_result": dict(metric_result), "threshold": threshold,
                             "source": "automl_phase3"}
    if metric_name == "far_pct":
        entry["far_pct"] = float(metric_result["value"])
    if inference_csv is not None:
        entry["inference_csv"] = str(Path(inference_csv).resolve())
    if parent_ckpt_path is not None:
        entry["parent_ckpt_path"] = str(Path(parent_ckpt_path).resolve())
    return entry


# ---------------------------------------------------------------------------------------------
# Backbone, best_model.json and the inference spec
#
# TAO's handoff resolves the backbone file the training spec names (`pretrained_backbone_path`):
# as a host file when it is one, else `config.backbone_weight_dir/<its file name>`; it refuses a
# spec without one, a name without a weights suffix, and a file that is not there. Its consumer
# mounts `best_model.json`'s `backbone` at `backbone_container_path` and the checkpoint at
# `/model/best.pth`, and runs the inference spec as written.

CHECKPOINT_MOUNT = "/model/best.pth"
BACKBONE_SUFFIXES = (".ckpt", ".pth", ".safetensors")
BEST_MODEL_KEYS = ("checkpoint", "threshold", "metric_contract", "metric_result", "iteration", "backbone",
                   "backbone_container_path", "backbone_type", "backbone_frozen", "images_dir", "training_spec")
INFERENCE_SPEC_TOP_KEYS = ("encryption_key", "task", "results_dir", "train", "model", "dataset", "inference")
_TRAINING_DATASETS = ("train_dataset", "validation_dataset", "test_dataset")


class BackboneError(ValueError):
    """The training spec names no backbone file TAO's handoff can resolve; the message says what to stage."""


@dataclass(frozen=True)
class ResolvedBackbone:
    host: Path  # the file to mount
    container_path: str  # the spec's value: where the file appears inside a TAO container
    backbone_type: str
    frozen: bool


def _backbone_section(spec: Mapping[str, Any]) -> Mapping[str, Any]:
    model = spec.get("model") or {}
    backbone = model.get("backbone") if isinstance(model, Mapping) else None
    return backbone if isinstance(backbone, Mapping) else {}


def resolve_backbone(spec: Mapping[str, Any], backbone_weight_dir: str | Path | None) -> ResolvedBackbone:
    """The backbone file of ``spec`` resolved the way TAO's handoff resolves it."""
    section = _backbone_section(spec)
    value = section.get("pretrained_backbone_path")
    if not isinstance(value, str) or not value.strip():
        raise BackboneError("the training spec names no backbone weights (model.backbone.pretrained_backbone_path "
                            "is empty); TAO's handoff needs the file the backbone was built from")
    named = Path(value)
    if named.suffix not in BACKBONE_SUFFIXES:
        raise BackboneError(f"model.backbone.pretrained_backbone_path {value!r}: TAO loads a local "
                            f"{'/'.join(BACKBONE_SUFFIXES)} file (no URL or hub id)")
    if named.is_absolute() and named.is_file():
        host = named
    elif backbone_weight_dir is not None:
        host = Path(backbone_weight_dir) / named.name
    else:
        raise BackboneError(f"{value} is not a host file and no backbone_weight_dir is recorded to find it in")
    if not host.is_file() or host.stat().st_size == 0:
        raise BackboneError(f"backbone file {host} (for model.backbone.pretrained_backbone_path {value}) is missing "
                            "or empty")
    return ResolvedBackbone(host=host.resolve(), container_path=value, backbone_type=str(section.get("type", "")),
                            frozen=bool(section.get("freeze_backbone", False)))


def best_model_record(*, label: str, entry: Mapping[str, Any], spec: Mapping[str, Any],
                      metric_contract: Mapping[str, Any], images_dir: str | Path,
                      backbone_weight_dir: str | Path | None) -> dict[str, Any]:
    """``best_model.json`` with TAO's fields, in TAO's order (``far_pct`` last, for a far_pct contract).

    ``entry`` is the picked iteration's state entry, ``spec`` the loaded training spec it names.
    """
    backbone = resolve_backbone(spec, backbone_weight_dir)
    ts = entry["training_spec"]
    threshold = entry.get("threshold")
    record: dict[str, Any] = {
        "checkpoint": str(entry["best_ckpt_path"]),
        "threshold": float(threshold) if threshold is not None else None,
        "metric_contract": dict(metric_contract),
        "metric_result": dict(entry["metric_result"]),
        "iteration": label,
        "backbone": str(backbone.host),
        "backbone_container_path": backbone.container_path,
        "backbone_type": backbone.backbone_type,
        "backbone_frozen": backbone.frozen,
        "images_dir": str(images_dir),
        "training_spec": str(ts),
    }
    if metric_contract.get("name") == "far_pct":
        record["far_pct"] = float(entry["metric_result"]["value"])
    return record


def inference_spec(training_spec: Mapping[str, Any], *, threshold: float | None,
                   backbone_container_path: str) -> dict[str, Any]:
    """``best_model_inference_spec.yaml``: runnable by ``visual_changenet inference -e`` once the
    consumer fills four empty fields (``dataset.classify.infer_dataset.{csv_path, images_dir}``,
    ``inference.results_dir``, ``results_dir``).

    Model and dataset blocks are the training spec's, verbatim, so architecture, lights, image size
    and difference module match the checkpoint; training data sources are dropped; augmentation is
    off; one sample per batch. The checkpoint is the container mount ``/model/best.pth`` (the host
    file is ``best_model.json``'s ``checkpoint``). ``train.classify.loss`` is kept alone because the
    TAO 7.1 runtime rebuilds its criterion even for inference.
    """
    if not isinstance(training_spec.get("model"), Mapping):
        raise ValueError("inference_spec: the training spec has no model block")
    classify = copy.deepcopy(dict(((training_spec.get("dataset") or {}).get("classify")) or {}))
    for key in _TRAINING_DATASETS:
        classify.pop(key, None)
    classify["infer_dataset"] = {"csv_path": "", "images_dir": ""}
    classify["batch_size"] = 1
    classify["workers"] = 1
    if isinstance(classify.get("augmentation_config"), dict):
        classify["augmentation_config"]["augment"] = False
    model = copy.deepcopy(dict(training_spec["model"]))
    if threshold is not None:
        model.setdefault("classify", {})["eval_margin"] = float(threshold)
    model.setdefault("backbone", {})["pretrained_backbone_path"] = backbone_container_path
    loss = ((training_spec.get("train") or {}).get("classify") or {}).get("loss", "ce")
    return {
        "encryption_key": training_spec.get("encryption_key", "tlt_encode"),
        "task": training_spec.get("task", "classify"),
        "results_dir": "",
        "train": {"classify": {"loss": loss}},
        "model": model,
        "dataset": {"classify": classify},
        "inference": {"checkpoint": CHECKPOINT_MOUNT, "batch_size": 1, "results_dir": ""},
    }


def builtin_backbone_filename(backbone_type: str, seed: int) -> str:
    """The staged initial weights of the built-in backbone: the name says they are an init, not a pretraining."""
    return f"{backbone_type}_init_seed{int(seed)}.pth"


def stage_builtin_backbone(run_dir: str | Path, spec: Mapping[str, Any], seed: int) -> tuple[dict[str, Any], Path]:
    """Give the built-in backend a backbone file, as TAO specs always have one; returns ``(spec', dir)``.

    The built-in backbone has no pretrained weights. So that the spec still names the file its
    backbone starts from (TAO's handoff and its consumers need one), the seeded initial network is
    written once per run to ``RD/backbone/<type>_init_seed<seed>.pth`` and ``spec'`` points
    ``model.backbone.pretrained_backbone_path`` at it (a host path: nothing runs in a container).
    The built-in trainer loads its stem from that file in every training that does not warm-start,
    which makes the spec true. A spec that already names an existing file is returned unchanged.
    ``dir`` is the run's ``config.backbone_weight_dir``.
    """
    section = _backbone_section(spec)
    current = section.get("pretrained_backbone_path")
    if isinstance(current, str) and current and Path(current).is_file():
        return copy.deepcopy(dict(spec)), Path(current).resolve().parent
    from raypipe.backends.builtin import DEFAULT_BACKBONE, save_untrained_checkpoint

    backbone_type = str(section.get("type") or DEFAULT_BACKBONE)
    weight_dir = Path(run_dir).resolve() / BUILTIN_BACKBONE_DIR
    path = weight_dir / builtin_backbone_filename(backbone_type, seed)
    if not path.is_file() or path.stat().st_size == 0:
        weight_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        save_untrained_checkpoint(dict(spec), tmp, seed=int(seed))
        tmp.replace(path)  # atomic: a resumed run never finds half a file
    out = copy.deepcopy(dict(spec))
    out.setdefault("model", {}).setdefault("backbone", {})["pretrained_backbone_path"] = str(path)
    return out, weight_dir


# ---------------------------------------------------------------------------------------------
# kpi_target text
#
# TAO reads `kpi_target` only when a state has no `metric_contract`, with a compact grammar:
# "<label> <op> <number><unit>[ at <context>]", where the label's slug must be the metric name
# ("FAR" with unit "%" is `far_pct`) and, for FAR, "Recall=<r>%" in the context sets the recall.
# "far_pct < 10% with recall_pct >= 100%" reads as a metric called "far_pct_10_with_recall_pct".

def _slug(text: str, unit: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return "far_pct" if slug == "far" and unit == "%" else slug


def _plain_number(x: float) -> str:
    """No exponent (TAO's grammar reads "1e-05" as 1 with unit "e-05")."""
    text = format(Decimal(repr(float(x))), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _with_unit(value: float, unit: str) -> str:
    if not unit or any(ch.isspace() for ch in unit):
        return _plain_number(value)  # a unit with a space cannot be carried by the grammar
    return f"{_plain_number(value)}{unit}" if unit == "%" else f"{_plain_number(value)} {unit}"


def kpi_target_text(contract: Mapping[str, Any]) -> str:
    """Human-readable KPI text that TAO's parser turns back into the contract's name, operator,
    target and unit (and, for FAR, its recall target)."""
    name, unit = str(contract["name"]), str(contract.get("unit", ""))
    display = str(contract.get("display_name") or name)
    if name == "far_pct":
        label = "FAR"
    elif _slug(display, unit) == name and not re.search(r"[<>=]|\sat\s", display):
        label = display
    else:
        label = name
    text = f"{label} {contract['operator']} {_with_unit(float(contract['target']), unit)}"
    if name == "far_pct":
        recall = ((contract.get("evaluator") or {}).get("parameters") or {}).get("recall_target_pct", 100)
        return f"{text} at Recall={_plain_number(float(recall))}%"
    context = [f"{c.get('display_name') or c['name']} {c['operator']} {_with_unit(float(c['target']), str(c.get('unit', '')))}"
               for c in contract.get("constraints") or []]
    return f"{text} at {', '.join(context)}" if context else text
