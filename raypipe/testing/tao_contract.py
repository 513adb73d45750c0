"""Does a run dir read as NVIDIA TAO's DEFT AOI tools expect? Reusable checks for tests and users.

``check_run_dir(run_dir)`` returns every problem it finds (an empty list: the run dir honours the
contract), each naming the file and the field. The rules are those of :mod:`raypipe.tao_interop`,
restated here as checks on what is on disk, so they also catch a writer that bypassed it:

- ``deft_state.json``: top level, ``execution_policy`` in TAO's words, the ``config`` keys TAO
  resolves paths from, events TAO's commit script would accept (labels, stages, durations), the
  per-stage fields of every committed stage (mining step logs and ledger included), Phase 3's
  ``final_automl`` entry (no event of its own, the CSV it trained on) and a ``kpi_target`` text
  that TAO's parser turns back into the metric contract;
- ``best_model.json`` and ``best_model_inference_spec.yaml`` as TAO's handoff writes them;
- ``mining_history.json`` in TAO's ledger format, its digests matching the files.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from raypipe import tao_interop as ti

STAGES = ("train", "evaluate", "rca", "routing", "anomalygen_finetune", "anomalygen", "data_mining", "data_merge",
          "loop_stop")
ITERATION_STATUSES = ("in_progress", "complete", "failed")
CONFIG_PATH_KEYS = ("specs_file", "training_csv", "validation_csv", "kpi_test_csv", "images_dir", "mining_pool_csv",
                    "mining_images_root", "resolved_mining_pool_csv", "backbone_weight_dir")
CONFIG_KEYS = CONFIG_PATH_KEYS + ("train_container", "num_gpus", "gpu_model", "batch_size", "num_epochs",
                                  "anomalygen", "mining_filter")
KNN_METRICS = ("cosine", "euclidean", "manhattan")
LEDGER_ENTRY_KEYS = ("iteration", "topn", "candidate_parquet", "candidate_sha256", "candidate_unique_count",
                     "already_mined_count", "selected_count", "selected_filepaths", "output_parquet", "output_sha256",
                     "summary_file", "summary_sha256")
# What TAO's commit script takes for an empty log (after lower-casing and dropping punctuation).
PLACEHOLDER_LOGS = {"placeholder", "recorded", "todo", "n a", "none", "ok"}
_STAGE_FILES = {
    "train": ("best_ckpt_path", "training_spec"),
    "evaluate": ("best_ckpt_path", "inference_csv", "training_spec"),
    "rca": ("rca_gaps_parquet",),
    "routing": ("routing_mining_parquet", "routing_anomalygen_parquet"),
    "data_merge": ("combined_training_csv", "provenance_csv", "merge_validation_report"),
}
_MINING_FILES = ("mining_mined_parquet", "mining_candidate_parquet", "mining_summary", "mining_history_summary",
                 "mining_target_embeddings", "mining_source_embeddings")


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _file(where: str, key: str, value: Any, *, under: Path | None = None) -> list[str]:
    if not isinstance(value, str) or not value:
        return [f"{where}: '{key}' must be an absolute file path, got {value!r}"]
    p = Path(value)
    if not p.is_absolute():
        return [f"{where}: '{key}' must be absolute, got {value}"]
    if not p.is_file() or p.stat().st_size == 0:
        return [f"{where}: '{key}' names {value}, which is missing or empty"]
    if under is not None and not p.resolve().is_relative_to(under.resolve()):
        return [f"{where}: '{key}' {value} must lie under {under}"]
    return []


def _parquet_rows(path: str) -> int:
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(path).metadata.num_rows)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


# -- state ----------------------------------------------------------------------------------------

def check_execution_policy(policy: Any, where: str = "deft_state.json execution_policy") -> list[str]:
    """TAO's nine keys; a mode TAO's tools know; flags consistent with the mode."""
    if not isinstance(policy, Mapping):
        return [f"{where}: missing (TAO's tools then read the run as network-enabled)"]
    out = [f"{where}: missing '{k}'" for k in ti.POLICY_KEYS if k not in policy]
    mode = policy.get("network_mode")
    if mode not in ti.NETWORK_MODES:
        out.append(f"{where}: network_mode {mode!r} is not one of {list(ti.NETWORK_MODES)} (TAO's command wrapper "
                   "treats every other word as network-enabled)")
        return out
    online = mode == "network-enabled"
    for key in ("allow_package_install", "allow_remote_fetch", "allow_container_pull", "allow_registry_login",
                "hf_offline"):
        if key in policy and not isinstance(policy[key], bool):
            out.append(f"{where}: '{key}' must be true or false, got {policy[key]!r}")
    if not online:
        out += [f"{where}: '{k}' is true under airgap" for k in
                ("allow_package_install", "allow_remote_fetch", "allow_container_pull", "allow_registry_login")
                if policy.get(k) is True]
    if "hf_offline" in policy and policy["hf_offline"] is online:
        out.append(f"{where}: hf_offline must be {not online} when network_mode is {mode}")
    exe = policy.get("python_executable")
    if "python_executable" in policy and (not isinstance(exe, str) or not Path(exe).is_absolute()):
        out.append(f"{where}: python_executable must be an absolute path, got {exe!r}")
    if "activation_source" in policy and not str(policy.get("activation_source") or "").strip():
        out.append(f"{where}: activation_source is empty")
    return out


def check_state_config(config: Any, where: str = "deft_state.json config") -> list[str]:
    """The keys TAO's scripts and references resolve paths and facts from."""
    if not isinstance(config, Mapping):
        return [f"{where}: missing"]
    out = [f"{where}: missing '{k}'" for k in CONFIG_KEYS if k not in config]
    for key in CONFIG_PATH_KEYS:
        value = config.get(key)
        if key in config and value is not None and not (isinstance(value, str) and Path(value).is_absolute()):
            out.append(f"{where}: '{key}' must be an absolute path, got {value!r}")
    if "num_gpus" in config and not (_is_int(config["num_gpus"]) and config["num_gpus"] >= 0):
        out.append(f"{where}: num_gpus must be an int >= 0, got {config['num_gpus']!r}")
    if "gpu_model" in config and not (isinstance(config["gpu_model"], str) and config["gpu_model"].strip()):
        out.append(f"{where}: gpu_model must be a non-empty text (e.g. 'none (CPU only)'), got {config['gpu_model']!r}")
    ag = config.get("anomalygen")
    if "anomalygen" in config:
        if not isinstance(ag, Mapping):
            out.append(f"{where}: anomalygen must be a mapping")
        else:
            out += [f"{where}: anomalygen lacks '{k}'" for k in ti.ANOMALYGEN_KEYS if k not in ag]
    mf = config.get("mining_filter")
    if "mining_filter" in config:
        if not isinstance(mf, Mapping):
            out.append(f"{where}: mining_filter must be a mapping")
        else:
            out += [f"{where}: mining_filter lacks '{k}'" for k in ("top_k_per_target", "metric", "min_similarity",
                                                                   "history_aware") if k not in mf]
            if mf.get("metric") not in KNN_METRICS:
                out.append(f"{where}: mining_filter.metric {mf.get('metric')!r} is not one of {list(KNN_METRICS)}")
            ha = mf.get("history_aware") or {}
            if ha.get("identity") != "filepath" or "enabled" not in ha or "history_file" not in ha:
                out.append(f"{where}: mining_filter.history_aware must have enabled, identity 'filepath', history_file")
    return out


def check_events(state: Mapping[str, Any], where: str = "deft_state.json events") -> list[str]:
    """Every event in the shape TAO's commit script writes, with a label it would accept."""
    events = state.get("events")
    if not isinstance(events, list):
        return [f"{where}: must be a list"]
    out: list[str] = []
    for i, ev in enumerate(events, start=1):
        at = f"{where}[{i}]"
        if not isinstance(ev, Mapping):
            out.append(f"{at}: not an object")
            continue
        missing = [k for k in ("seq", "ts", "iter", "stage", "status", "summary", "duration_sec", "context_tokens")
                   if k not in ev]
        if missing:
            out.append(f"{at}: missing {missing}")
        if ev.get("seq") != i:
            out.append(f"{at}: seq {ev.get('seq')!r}, expected {i} (1, 2, ... in order)")
        if not ti.LOOP_LABEL.match(str(ev.get("iter"))):
            out.append(f"{at}: iter {ev.get('iter')!r} is not baseline or iter<N> (TAO's commit script refuses it; "
                       "Phase 3 is registered without an event)")
        if ev.get("stage") not in STAGES:
            out.append(f"{at}: stage {ev.get('stage')!r} is not one of {list(STAGES)}")
        if ev.get("status") not in ("ok", "error"):
            out.append(f"{at}: status {ev.get('status')!r} is not ok|error")
        if not (_is_int(ev.get("duration_sec")) and ev["duration_sec"] > 0):
            out.append(f"{at}: duration_sec must be a positive int, got {ev.get('duration_sec')!r}")
        if ev.get("context_tokens") != 0:
            out.append(f"{at}: context_tokens must be 0, got {ev.get('context_tokens')!r}")
        summary = ev.get("summary")
        if not isinstance(summary, str) or not summary.strip() or "\n" in summary:
            out.append(f"{at}: summary must be one non-empty line")
        try:
            datetime.fromisoformat(str(ev.get("ts")).replace("Z", "+00:00"))
        except ValueError:
            out.append(f"{at}: ts {ev.get('ts')!r} is not ISO-8601")
    return out


def _committed(state: Mapping[str, Any], label: str) -> list[str]:
    return [str(e.get("stage")) for e in state.get("events", [])
            if isinstance(e, Mapping) and e.get("iter") == label and e.get("status") == "ok"]


def check_metric_result(state: Mapping[str, Any], where: str, entry: Mapping[str, Any]) -> list[str]:
    """The evaluator's output as written (nothing dropped), plus evidence_path and passed."""
    contract = state.get("metric_contract") or {}
    mr = entry.get("metric_result")
    if not isinstance(mr, Mapping):
        return [f"{where}: metric_result missing"]
    out = []
    if mr.get("name") != contract.get("name"):
        out.append(f"{where}: metric_result.name {mr.get('name')!r} is not the contract's {contract.get('name')!r}")
    if not _finite(mr.get("value")):
        out.append(f"{where}: metric_result.value must be a finite number")
    if mr.get("unit") != contract.get("unit"):
        out.append(f"{where}: metric_result.unit {mr.get('unit')!r} is not the contract's {contract.get('unit')!r}")
    if not isinstance(mr.get("passed"), bool):
        out.append(f"{where}: metric_result.passed must be true or false")
    if not isinstance(mr.get("constraints", {}), Mapping):
        out.append(f"{where}: metric_result.constraints must be a mapping")
    bad = _file(where, "metric_result.evidence_path", mr.get("evidence_path"))
    out += bad
    if not bad:
        written = _read_json(Path(mr["evidence_path"]))
        dropped = sorted(k for k in written if k != "passed" and mr.get(k) != written[k])
        if dropped:
            out.append(f"{where}: metric_result drops or changes {dropped} of {mr['evidence_path']} (TAO keeps the "
                       "evaluator's output as written)")
    if contract.get("name") == "far_pct" and entry.get("far_pct") != mr.get("value"):
        out.append(f"{where}: far_pct {entry.get('far_pct')!r} differs from metric_result.value {mr.get('value')!r}")
    evaluator = contract.get("evaluator") or {}
    if evaluator.get("id") == "far_at_recall" and not _finite(entry.get("threshold")):
        out.append(f"{where}: threshold is required with the far_at_recall evaluator")
    return out


def _check_mining(where: str, entry: Mapping[str, Any], iter_dir: Path, rd: Path) -> list[str]:
    out: list[str] = []
    for key in _MINING_FILES:
        out += _file(where, key, entry.get(key), under=iter_dir)
    for key in ti.MINING_LOG_FILES:
        bad = _file(where, key, entry.get(key), under=iter_dir)
        out += bad
        if not bad:
            text = re.sub(r"[^a-z0-9]+", " ", Path(entry[key]).read_text(errors="replace").lower()).strip()
            if not text or text in PLACEHOLDER_LOGS:
                out.append(f"{where}: {key} {entry[key]} is a placeholder, not the step's output")
    out += _file(where, "mining_history", entry.get("mining_history"), under=rd)
    if not _file(where, "mining_history_summary", entry.get("mining_history_summary")):
        summary = _read_json(Path(entry["mining_history_summary"]))
        lacking = [k for k in ti.MINING_SUMMARY_KEYS if k not in summary]
        if lacking:
            out.append(f"{where}: {entry['mining_history_summary']} lacks {lacking}")
    count = entry.get("mining_mined_count")
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        out.append(f"{where}: mining_mined_count must be an int >= 0, got {count!r}")
    elif not _file(where, "mining_mined_parquet", entry.get("mining_mined_parquet")):
        rows = _parquet_rows(entry["mining_mined_parquet"])
        if rows != count:
            out.append(f"{where}: mining_mined_count {count} but {entry['mining_mined_parquet']} has {rows} rows")
    return out


def _check_anomalygen(where: str, entry: Mapping[str, Any]) -> list[str]:
    out = _file(where, "anomalygen_sdg_csv", entry.get("anomalygen_sdg_csv"))
    bad = _file(where, "anomalygen_allocation_json", entry.get("anomalygen_allocation_json"))
    out += bad
    if bad:
        return out
    alloc = _read_json(Path(entry["anomalygen_allocation_json"]))
    if not isinstance(alloc, Mapping) or not alloc or not all(_is_int(v) and v >= 0 for v in alloc.values()):
        return out + [f"{where}: {entry['anomalygen_allocation_json']} must map defects to non-negative int counts"]
    if sum(alloc.values()) <= 0 or entry.get("anomalygen_amp_allocated") != sum(alloc.values()):
        out.append(f"{where}: anomalygen_amp_allocated {entry.get('anomalygen_amp_allocated')!r} must be the "
                   f"allocation's sum {sum(alloc.values())} (> 0)")
    return out


def check_iterations(state: Mapping[str, Any], rd: Path) -> list[str]:
    """Each loop iteration holds the fields of every stage committed for it."""
    out: list[str] = []
    iterations = state.get("iterations")
    if not isinstance(iterations, Mapping):
        return ["deft_state.json: iterations must be a mapping"]
    numbers = [int(lb[4:]) for lb in iterations if ti.LOOP_LABEL.match(lb) and lb != "baseline"]
    if numbers and state.get("current_iteration") != max(numbers):
        out.append(f"deft_state.json: current_iteration {state.get('current_iteration')!r}, expected {max(numbers)}")
    for label, entry in iterations.items():
        where = f"deft_state.json iterations.{label}"
        if label == ti.FINAL_AUTOML:
            continue
        if not ti.LOOP_LABEL.match(label):
            out.append(f"{where}: label is not baseline, iter<N> or final_automl")
            continue
        if entry.get("status") not in ITERATION_STATUSES:
            out.append(f"{where}: status {entry.get('status')!r} is not one of {list(ITERATION_STATUSES)}")
        for stage in _committed(state, label):
            if stage in _STAGE_FILES:
                under = {"best_ckpt_path": rd / label / "train"}
                for key in _STAGE_FILES[stage]:
                    out += _file(f"{where} ({stage})", key, entry.get(key), under=under.get(key))
            if stage == "evaluate":
                out += check_metric_result(state, f"{where} (evaluate)", entry)
                if entry.get("status") not in ("complete", "failed"):
                    out.append(f"{where}: evaluate committed but status is {entry.get('status')!r}")
            elif stage == "anomalygen" and entry.get("anomalygen_skipped") is not True:
                out += _check_anomalygen(f"{where} (anomalygen)", entry)
            elif stage == "data_mining" and entry.get("data_mining_skipped") is not True:
                out += _check_mining(f"{where} (data_mining)", entry, rd / label, rd)
    return out


def check_loop_stop(state: Mapping[str, Any]) -> list[str]:
    """A complete state ends with one ``loop_stop`` TAO's commit script would accept."""
    if state.get("status") != "complete":
        return []
    stops = [e for e in state.get("events", []) if isinstance(e, Mapping) and e.get("stage") == "loop_stop"]
    if len(stops) != 1:
        return [f"deft_state.json: a complete loop has exactly one loop_stop event, found {len(stops)}"]
    label = str(stops[0].get("iter"))
    its = state.get("iterations", {})
    out = []
    if (its.get("baseline") or {}).get("status") != "complete":
        out.append("deft_state.json: loop_stop needs iterations.baseline.status complete")
    entry = its.get(label) or {}
    if entry.get("status") != "complete":
        out.append(f"deft_state.json: loop_stop is filed under {label}, whose status is not complete")
    passed = (entry.get("metric_result") or {}).get("passed") is True
    m = re.fullmatch(r"iter([1-9][0-9]*)", label)
    if not passed and not (m and int(m.group(1)) >= int(state.get("max_iterations", 0))):
        out.append(f"deft_state.json: loop_stop under {label} is neither metric_met (passed) nor max_iterations "
                   f"(iter<N> with N >= max_iterations)")
    fa = state.get("final_artifacts") or {}
    rd = Path(str(state.get("results_dir")))
    for key in ("best_model_json", "inference_spec"):
        out += _file("deft_state.json final_artifacts", key, fa.get(key), under=rd)
    return out


def check_final_automl(state: Mapping[str, Any]) -> list[str]:
    """Phase 3's entry: a pick candidate with the same shape as an iteration, no event, the right CSV."""
    entry = (state.get("iterations") or {}).get(ti.FINAL_AUTOML)
    if entry is None:
        return []
    where = f"deft_state.json iterations.{ti.FINAL_AUTOML}"
    out = []
    if entry.get("status") != "complete" or entry.get("stage_completed") != "evaluate":
        out.append(f"{where}: must be status complete, stage_completed evaluate")
    for key in ("best_ckpt_path", "training_spec", "combined_training_csv"):
        out += _file(where, key, entry.get(key))
    out += check_metric_result(state, where, entry)
    expected = ti.phase3_training_csv(state).resolve()
    trained = entry.get("combined_training_csv")
    if not isinstance(trained, str) or Path(trained).resolve() != expected:
        out.append(f"{where}: combined_training_csv {entry.get('combined_training_csv')!r}, but Phase 3 trains on "
                   f"{expected}")
    if isinstance(entry.get("training_spec"), str) and Path(entry["training_spec"]).is_file():
        spec = yaml.safe_load(Path(entry["training_spec"]).read_text()) or {}
        named = ((((spec.get("dataset") or {}).get("classify") or {}).get("train_dataset")) or {}).get("csv_path")
        same = isinstance(named, str) and isinstance(trained, str) and Path(named).resolve() == Path(trained).resolve()
        if not same:
            out.append(f"{where}: its training_spec {entry['training_spec']} names train_dataset {named!r}, not the "
                       f"CSV Phase 3 trained on ({entry.get('combined_training_csv')})")
    return out


def parse_kpi_target(text: str) -> dict[str, Any] | None:
    """``"<label> <op> <number><unit>[ at <context>]"`` → name/operator/target/unit, None if unreadable.

    The compact form TAO reads when a state lacks ``metric_contract``: the first comparison
    operator splits label and value; the label's slug is the metric name (``FAR`` + ``%`` is
    ``far_pct``); the number has no exponent; whatever follows " at " is context.
    """
    m = re.search(r"<=|>=|<|>", text)
    if not m or not text[:m.start()].strip():
        return None
    rest = text[m.end():].strip()
    num = re.match(r"-?(?:\d+(?:\.\d*)?|\.\d+)", rest)
    if not num:
        return None
    tail = rest[num.end():]
    unit_m = re.match(r"\s*(\S*)", tail)
    unit = unit_m.group(1) if unit_m else ""
    after = tail[unit_m.end():] if unit_m else tail
    if after.strip() and not re.match(r"\s+at\s+\S", after):
        return None
    label = text[:m.start()].strip()
    slug = re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")
    return {"name": "far_pct" if slug == "far" and unit == "%" else slug, "operator": m.group(0),
            "target": float(num.group(0)), "unit": unit}


def check_kpi_target(state: Mapping[str, Any]) -> list[str]:
    contract = state.get("metric_contract") or {}
    parsed = parse_kpi_target(str(state.get("kpi_target", "")))
    want = {k: contract.get(k) for k in ("name", "operator", "target", "unit")}
    raw = want["target"]
    target = float(raw) if isinstance(raw, (int, float)) and _finite(raw) else math.nan
    if parsed is None or parsed["name"] != want["name"] or parsed["operator"] != want["operator"] \
            or not math.isclose(parsed["target"], target) \
            or (parsed["unit"] != want["unit"] and not any(ch.isspace() for ch in str(want["unit"]))):
        return [(f"deft_state.json: kpi_target {state.get('kpi_target')!r} reads as {parsed} in TAO's compact form, "
                f"not as the metric contract {want}")]
    return []


def check_state(state: Mapping[str, Any], rd: Path) -> list[str]:
    out = []
    if state.get("version") != 4:
        out.append(f"deft_state.json: version {state.get('version')!r}, expected 4")
    if state.get("status") not in ("in_progress", "complete", "failed"):
        out.append(f"deft_state.json: status {state.get('status')!r}")
    for key in ("started_at", "kpi_target", "metric_contract", "results_dir", "max_iterations", "current_iteration"):
        if key not in state:
            out.append(f"deft_state.json: missing '{key}'")
    if state.get("results_dir") != str(rd.resolve()):
        out.append(f"deft_state.json: results_dir {state.get('results_dir')!r} is not the run dir {rd.resolve()}")
    out += check_execution_policy(state.get("execution_policy"))
    out += check_state_config(state.get("config"))
    out += check_events(state)
    out += check_iterations(state, rd)
    out += check_loop_stop(state)
    out += check_final_automl(state)
    out += check_kpi_target(state)
    return out


# -- the handoff ----------------------------------------------------------------------------------

def best_entry(state: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]] | None:
    """TAO's pick: complete entries with a metric result; those meeting every constraint if any do;
    lowest value for < / <=, highest for > / >=; ties to the earlier entry."""
    contract = state.get("metric_contract") or {}
    cands = [(lb, e) for lb, e in (state.get("iterations") or {}).items() if isinstance(e, Mapping)
             and e.get("status") == "complete" and isinstance(e.get("metric_result"), Mapping)]

    def meets(e: Mapping[str, Any]) -> bool:
        values = e["metric_result"].get("constraints") or {}
        ops = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}
        return all(c["name"] in values and ops[c["operator"]](float(values[c["name"]]), float(c["target"]))
                   for c in contract.get("constraints") or [])

    pool = [c for c in cands if meets(c[1])] or cands
    if not pool:
        return None
    descending = contract.get("operator") in (">", ">=")
    return sorted(pool, key=lambda c: float(c[1]["metric_result"]["value"]), reverse=descending)[0]


def check_best_model(rd: Path, state: Mapping[str, Any]) -> list[str]:
    where = "best_model.json"
    path = rd / where
    if not path.is_file():
        return [f"{where}: missing"]
    bm = _read_json(path)
    out = [f"{where}: missing '{k}'" for k in ti.BEST_MODEL_KEYS if k not in bm]
    contract = state.get("metric_contract") or {}
    if contract.get("name") == "far_pct" and "far_pct" not in bm:
        out.append(f"{where}: missing 'far_pct' (the contract is far_pct)")
    pick = best_entry(state)
    if pick is None:
        return out + [f"{where}: the state has no complete entry with a metric result"]
    label, entry = pick
    for key, want in (("iteration", label), ("checkpoint", entry.get("best_ckpt_path")),
                      ("threshold", entry.get("threshold")), ("metric_result", entry.get("metric_result")),
                      ("training_spec", entry.get("training_spec")), ("metric_contract", contract),
                      ("images_dir", (state.get("config") or {}).get("images_dir"))):
        if key in bm and bm[key] != want:
            out.append(f"{where}: '{key}' is {bm[key]!r}; TAO's handoff writes {want!r} (best entry: {label})")
    backbone, container = bm.get("backbone"), bm.get("backbone_container_path")
    out += _file(where, "backbone", backbone)
    if not (isinstance(container, str) and container.startswith("/")):
        out.append(f"{where}: backbone_container_path must be an absolute path, got {container!r}")
    elif isinstance(backbone, str) and Path(container).name != Path(backbone).name:
        out.append(f"{where}: backbone {backbone} and backbone_container_path {container} name different files")
    if "backbone_frozen" in bm and not isinstance(bm["backbone_frozen"], bool):
        out.append(f"{where}: backbone_frozen must be true or false")
    spec_path = entry.get("training_spec")
    if isinstance(spec_path, str) and Path(spec_path).is_file():
        spec = yaml.safe_load(Path(spec_path).read_text()) or {}
        try:
            resolved = ti.resolve_backbone(spec, (state.get("config") or {}).get("backbone_weight_dir"))
        except ti.BackboneError as exc:
            out.append(f"{where}: TAO's handoff cannot resolve the backbone of {spec_path}: {exc}")
        else:
            for key, want in (("backbone", str(resolved.host)), ("backbone_container_path", resolved.container_path),
                              ("backbone_type", resolved.backbone_type), ("backbone_frozen", resolved.frozen)):
                if key in bm and bm[key] != want:
                    out.append(f"{where}: '{key}' is {bm[key]!r}; the training spec resolves to {want!r}")
    return out


def check_inference_spec(rd: Path, state: Mapping[str, Any]) -> list[str]:
    where = "best_model_inference_spec.yaml"
    path, bm_path = rd / where, rd / "best_model.json"
    if not path.is_file() or not bm_path.is_file():
        return [f"{where}: missing (or best_model.json missing)"]
    spec = yaml.safe_load(path.read_text()) or {}
    bm = _read_json(bm_path)
    out = []
    if sorted(spec) != sorted(ti.INFERENCE_SPEC_TOP_KEYS):
        out.append(f"{where}: top-level keys {sorted(spec)}, expected {sorted(ti.INFERENCE_SPEC_TOP_KEYS)}")
    if spec.get("results_dir") != "":
        out.append(f"{where}: results_dir must be empty (the consumer sets it)")
    if spec.get("inference") != {"checkpoint": ti.CHECKPOINT_MOUNT, "batch_size": 1, "results_dir": ""}:
        out.append(f"{where}: inference must be {{checkpoint: {ti.CHECKPOINT_MOUNT}, batch_size: 1, results_dir: ''}}, "
                   f"got {spec.get('inference')!r}")
    train = spec.get("train")
    if not (isinstance(train, Mapping) and list(train) == ["classify"] and list(train["classify"]) == ["loss"]):
        out.append(f"{where}: train must be exactly the {{classify: {{loss}}}} stub, got {train!r}")
    try:
        training = yaml.safe_load(Path(str(bm.get("training_spec"))).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return out + [f"{where}: cannot read the training spec {bm.get('training_spec')!r}"]
    try:
        want = ti.inference_spec(training, threshold=bm.get("threshold"),
                                 backbone_container_path=str(bm.get("backbone_container_path")))
    except ValueError as exc:
        return out + [f"{where}: {exc}"]
    for block in ("model", "dataset", "train", "encryption_key", "task"):
        if spec.get(block) != want[block]:
            out.append(f"{where}: '{block}' differs from the training spec {bm.get('training_spec')} as TAO's handoff "
                       f"derives it")
    return out


def check_mining_ledger(rd: Path, state: Mapping[str, Any]) -> list[str]:
    """``mining_history.json`` in TAO's ledger format, with digests matching the files."""
    mined = [lb for lb, e in (state.get("iterations") or {}).items()
             if isinstance(e, Mapping) and e.get("mining_mined_parquet")]
    if not mined:
        return []
    where = ti.MINING_HISTORY_FILE
    path = rd / where
    if not path.is_file():
        return [f"{where}: missing"]
    ledger = _read_json(path)
    out = []
    if ledger.get("version") != ti.LEDGER_VERSION or ledger.get("identity") != "filepath":
        out.append(f"{where}: version must be {ti.LEDGER_VERSION} and identity 'filepath'")
    entries = ledger.get("iterations") if isinstance(ledger.get("iterations"), list) else []
    numbers = [e.get("iteration") for e in entries if isinstance(e, Mapping)]
    if numbers != list(range(1, len(entries) + 1)):
        out.append(f"{where}: iterations {numbers} are not contiguous from 1")
    seen: set[str] = set()
    for e in entries:
        if not isinstance(e, Mapping):
            continue
        at = f"{where} iteration {e.get('iteration')}"
        selected = list(e.get("selected_filepaths") or [])
        if e.get("selected_count") != len(selected) or len(set(selected)) != len(selected):
            out.append(f"{at}: selected_count/selected_filepaths disagree or repeat")
        if seen & set(selected):
            out.append(f"{at}: reselects filepaths mined earlier")
        seen |= set(selected)
        missing = [k for k in LEDGER_ENTRY_KEYS if k not in e]
        if missing:
            out.append(f"{at}: missing {missing}")
            continue
        for file_key, digest_key in (("candidate_parquet", "candidate_sha256"), ("output_parquet", "output_sha256"),
                                     ("summary_file", "summary_sha256")):
            p = Path(str(e[file_key]))
            if not p.is_file() or ti.file_sha256(p) != e[digest_key]:
                out.append(f"{at}: {file_key} {p} is missing or its sha256 differs from {digest_key}")
    if ledger.get("cumulative_unique_count") != len(seen):
        out.append(f"{where}: cumulative_unique_count {ledger.get('cumulative_unique_count')!r}, expected {len(seen)}")
    for label in mined:
        if int(label[4:]) not in numbers:
            out.append(f"{where}: no entry for {label}, which mined")
    return out


def check_run_dir(run_dir: str | Path) -> list[str]:
    """Every problem a TAO tool would have with this run dir (empty: none)."""
    rd = Path(run_dir)
    path = rd / "deft_state.json"
    if not path.is_file():
        return [f"{path}: missing"]
    state = _read_json(path)
    out = check_state(state, rd) + check_mining_ledger(rd, state)
    if state.get("status") == "complete":
        out += check_best_model(rd, state) + check_inference_spec(rd, state)
    return out


def assert_tao_contract(run_dir: str | Path, *, ignore: Iterable[str] = ()) -> None:
    """``assert`` form for tests: fails listing every problem (``ignore``: substrings to tolerate)."""
    problems = [p for p in check_run_dir(run_dir) if not any(s in p for s in ignore)]
    assert not problems, "run dir breaks the TAO contract:\n  " + "\n  ".join(problems)
