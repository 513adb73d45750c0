"""Run NVIDIA TAO's own DEFT AOI scripts on a copy of a finished raypipe run dir.

    python tools/tao_scripts_check.py /path/to/tao-skill-bank /ws/results/run_YYYYMMDD_HHMMSS

raypipe promises that TAO users can read its run dirs with TAO's tools. This is the by-hand check
of that promise: it copies the run dir to a temporary directory, points the copy's state files at
the copy (``deft_state.json`` and friends record absolute paths, and some scripts insist that an
artifact lies under ``--results-dir``), and runs every script of the skill
``skills/applications/tao-run-deft-aoi/scripts/`` that reads or writes a finished run, with the
arguments the skill documents. ``commit_stage.py`` replays every event raypipe recorded, in order,
onto a fresh state built the way TAO's ``init_deft_state.py`` builds one, and the replayed
iterations are compared with raypipe's. The loop's ``loop_stop`` goes through ``finalize_run.py``,
which regenerates ``best_model.json`` and ``best_model_inference_spec.yaml``; TAO's versions of
both are compared with raypipe's.

One line per script run: name, exit code, last line of its output. The original run dir is never
written. TAO's code is not part of raypipe: this tool is not in the test suite, and it needs a
checkout of ``NVIDIA-TAO/tao-skill-bank`` (any Python with pyyaml, pyarrow, pandas and matplotlib
runs the scripts; ``--python`` picks one).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SKILL = Path("skills/applications/tao-run-deft-aoi/scripts")
HISTORY_FILTER = Path("skills/data/tao-mine-aoi-images/scripts/filter_mined_history.py")
RELOCATED_SUFFIXES = (".json", ".jsonl", ".yaml", ".yml")
# Fields of a fresh state: TAO's init writes these and nothing about iterations or events.
PER_RUN_FIELDS = ("iterations", "events", "final_artifacts", "completed_at")


@dataclass
class Outcome:
    name: str
    rc: int
    last_line: str
    ok: bool


@dataclass
class Checker:
    bank: Path
    original: Path
    work: Path
    python: str
    workspace: Path
    timeout_s: int
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def scripts(self) -> Path:
        return self.bank / SKILL

    # -- running one script --------------------------------------------------------------------
    def run(self, name: str, argv: list[str], *, expect_rc: int = 0, cwd: Path | None = None) -> Outcome:
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")  # never write into the checkout
        try:
            proc = subprocess.run(argv, cwd=cwd or self.work, env=env, capture_output=True, text=True,
                                  timeout=self.timeout_s, check=False)
            rc, text = proc.returncode, (proc.stdout or "") + (proc.stderr or "")
        except subprocess.TimeoutExpired:
            rc, text = 124, f"timed out after {self.timeout_s}s"
        outcome = Outcome(name, rc, _last_line(text), rc == expect_rc)
        self.outcomes.append(outcome)
        print(f"{'ok  ' if outcome.ok else 'FAIL'} {name:<58} rc={rc:<3} {outcome.last_line}", flush=True)
        return outcome

    def script(self, script: str, *args: str, label: str = "", expect_rc: int = 0) -> Outcome:
        name = f"{script} {label}".strip()
        return self.run(name, [self.python, str(self.scripts / script), *args], expect_rc=expect_rc)

    def note(self, name: str, ok: bool, text: str) -> None:
        """A check of our own on TAO's output (a comparison, not a script run)."""
        self.outcomes.append(Outcome(name, 0 if ok else 1, text, ok))
        print(f"{'ok  ' if ok else 'FAIL'} {name:<58} {'same' if ok else 'DIFFERS'}: {text}", flush=True)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:400] if lines else "(no output)"


# -- copying -------------------------------------------------------------------------------------

def _pinned_digests(run_dir: Path) -> set[str]:
    """sha256 digests the mining ledger records: the files behind them must stay byte-identical."""
    try:
        ledger = json.loads((run_dir / "mining_history.json").read_text())
    except (OSError, ValueError):
        return set()
    return {str(v) for e in ledger.get("iterations", []) if isinstance(e, dict)
            for k, v in e.items() if k.endswith("_sha256")}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def relocate(original: Path, copy: Path) -> int:
    """Copy ``original`` to ``copy`` and rewrite its absolute path inside the copy's text state files.

    Only the run dir's own prefix changes; workspace paths stay as they are (the workspace is read,
    never written, by every script run here). A file whose digest the mining ledger records is
    copied byte for byte (rewriting it would break the digest, not the run). Returns the number of
    rewritten occurrences.
    """
    shutil.copytree(original, copy, symlinks=True)
    old, new, count = str(original), str(copy), 0
    pinned = _pinned_digests(original)
    for path in copy.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.suffix in RELOCATED_SUFFIXES:
            if pinned and _sha256(path) in pinned:
                continue
            text = path.read_text(encoding="utf-8", errors="surrogateescape")
            if old in text:
                count += text.count(old)
                path.write_text(text.replace(old, new), encoding="utf-8", errors="surrogateescape")
    return count


def fresh_state(state: dict[str, Any]) -> dict[str, Any]:
    """The state as TAO's ``init_deft_state.py`` leaves it: same run facts, no iterations, no events."""
    out = {k: v for k, v in state.items() if k not in PER_RUN_FIELDS}
    out.update(status="in_progress", current_iteration=0, iterations={}, events=[])
    return out


# -- what a script needs from the state ----------------------------------------------------------

def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _flag(args: list[str], flag: str, value: Any) -> None:
    """Append ``flag value`` when the state has a value: a missing field is TAO's to refuse, not ours."""
    if value is None or value == "":
        return
    args += [flag, str(value)]


def commit_args(run_dir: Path, state: dict[str, Any], event: dict[str, Any]) -> list[str]:
    """``commit_stage.py`` arguments for one recorded event, taken from the final iteration entry."""
    label, stage = str(event.get("iter")), str(event.get("stage"))
    entry = state.get("iterations", {}).get(label, {})
    args = ["--results-dir", str(run_dir), "--iter-label", label, "--stage", stage,
            "--summary", str(event.get("summary") or stage), "--duration-sec", str(event.get("duration_sec"))]
    if event.get("status") == "error":
        return args + ["--status", "error"]
    if stage == "train":
        _flag(args, "--best-ckpt", entry.get("best_ckpt_path"))
        _flag(args, "--training-spec", _spec_path(entry))
        if entry.get("best_ckpt_kind") in ("best_val", "latest"):
            args += ["--best-ckpt-kind", entry["best_ckpt_kind"]]
        if _finite(entry.get("val_loss")):
            args += ["--val-loss", str(entry["val_loss"])]
    elif stage == "evaluate":
        _flag(args, "--metric-result", (entry.get("metric_result") or {}).get("evidence_path"))
        _flag(args, "--best-ckpt", entry.get("best_ckpt_path"))
        _flag(args, "--inference-csv", entry.get("inference_csv"))
        _flag(args, "--training-spec", _spec_path(entry))
        if _finite(entry.get("threshold")):
            args += ["--threshold", str(entry["threshold"])]
    elif stage == "rca":
        _flag(args, "--rca-gaps", entry.get("rca_gaps_parquet"))
        if _finite(entry.get("rca_threshold")):
            args += ["--rca-threshold", str(entry["rca_threshold"])]
        for label_name in entry.get("rca_target_defects") or []:
            args += ["--rca-target-defect", str(label_name)]
    elif stage == "routing":
        _flag(args, "--routing-mining", entry.get("routing_mining_parquet"))
        _flag(args, "--routing-anomalygen", entry.get("routing_anomalygen_parquet"))
    elif stage == "anomalygen":
        if entry.get("anomalygen_skipped") is True:
            args.append("--skip")
        else:
            _flag(args, "--anomalygen-sdg", entry.get("anomalygen_sdg_csv"))
            _flag(args, "--anomalygen-allocation", entry.get("anomalygen_allocation_json"))
    elif stage == "data_mining":
        if entry.get("data_mining_skipped") is True:
            args.append("--skip")
        else:
            for flag, key in (("--mining-parquet", "mining_mined_parquet"),
                              ("--mining-candidates", "mining_candidate_parquet"),
                              ("--mining-summary", "mining_summary"), ("--mining-history", "mining_history"),
                              ("--mining-history-summary", "mining_history_summary"),
                              ("--mining-target-embeddings", "mining_target_embeddings"),
                              ("--mining-source-embeddings", "mining_source_embeddings"),
                              ("--mining-target-log", "mining_target_log"),
                              ("--mining-source-log", "mining_source_log"),
                              ("--mining-knn-log", "mining_knn_log"), ("--mining-count", "mining_mined_count")):
                _flag(args, flag, entry.get(key))
    elif stage == "data_merge":
        _flag(args, "--combined-csv", entry.get("combined_training_csv"))
        _flag(args, "--provenance-csv", entry.get("provenance_csv"))
        _flag(args, "--merge-validation-report", entry.get("merge_validation_report"))
    return args


def stop_reason(state: dict[str, Any], label: str) -> str:
    """TAO's two loop-end reasons: the final entry passed the contract, or the budget ran out."""
    result = state.get("iterations", {}).get(label, {}).get("metric_result") or {}
    return "metric_met" if result.get("passed") is True else "max_iterations"


def _spec_path(entry: dict[str, Any]) -> str | None:
    spec = entry.get("training_spec")
    return spec if isinstance(spec, str) else None


def _training_spec(state: dict[str, Any]) -> dict[str, Any]:
    for entry in state.get("iterations", {}).values():
        path = _spec_path(entry)
        if path and Path(path).is_file():
            return yaml.safe_load(Path(path).read_text()) or {}
    return {}


def light_and_ext(state: dict[str, Any]) -> tuple[str, str]:
    """The first light (lowest channel) and image extension of the run's spec, for the CSV checks."""
    classify = (_training_spec(state).get("dataset") or {}).get("classify") or {}
    lights = classify.get("input_map") or {"SolderLight": 0}
    light = min(lights, key=lambda name: lights[name])
    return str(light), str(classify.get("image_ext") or ".jpg")


def differences(ours: Any, theirs: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ (numbers compared with a relative tolerance)."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        out: list[str] = []
        for key in sorted(set(ours) | set(theirs), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in ours:
                out.append(f"{name} (only TAO's)")
            elif key not in theirs:
                out.append(f"{name} (only raypipe's)")
            else:
                out += differences(ours[key], theirs[key], name)
        return out
    if _finite(ours) and _finite(theirs):
        return [] if math.isclose(float(ours), float(theirs), rel_tol=1e-9, abs_tol=1e-12) else [prefix]
    return [] if ours == theirs else [prefix or "(root)"]


def _summarise(diffs: list[str]) -> str:
    return "; ".join(diffs[:6]) + (f" (+{len(diffs) - 6} more)" if len(diffs) > 6 else "") if diffs else "identical"


# -- the checks ----------------------------------------------------------------------------------

def check_reading_scripts(ck: Checker, rd: Path, state: dict[str, Any]) -> None:
    state_file = str(rd / "deft_state.json")
    ck.script("deft_context.py", "--state", state_file)
    ck.script("render_report.py", "--results-dir", str(rd), "--require-terminal")
    policy = state.get("execution_policy") or {}
    if policy.get("network_mode") == "airgap":
        # `pip --version` is harmless if it ran; an air-gapped state must make TAO refuse it unrun.
        ck.script("deft_exec.py", "--state", state_file, "--", "pip", "--version",
                  label="(airgap: must refuse pip)", expect_rc=2)
    else:
        ck.note("deft_exec.py (policy)", policy.get("network_mode") == "network-enabled",
                f"execution_policy.network_mode={policy.get('network_mode')!r}; TAO knows airgap|network-enabled")
    light, ext = light_and_ext(state)
    config = state.get("config") or {}
    ws = str(ck.workspace)
    for label, entry in sorted(state.get("iterations", {}).items()):
        combined = entry.get("combined_training_csv")
        if combined and label.startswith("iter"):  # final_automl's CSV is one of these (or the base CSV)
            ck.script("validate_training_csv.py", "--csv", combined, "--workspace-root", ws,
                      "--validation-csv", str(config.get("validation_csv")), "--light", light, "--image-ext", ext,
                      "--report-json", str(ck.work / f"merge_validation_{label}.json"), label=f"({label} combined)")
        pool = Path(str(entry.get("mining_pool_csv") or rd / label / "mining_filter" / "mining_pool.csv"))
        if label.startswith("iter") and pool.is_file():
            ck.script("validate_training_csv.py", "--csv", str(pool), "--workspace-root", ws,
                      "--validation-csv", str(config.get("validation_csv")), "--light", light, "--image-ext", ext,
                      label=f"({label} mining_pool.csv)")
    if config.get("mining_pool_csv"):
        resolved = config.get("resolved_mining_pool_csv") or str(ck.work / "mining_pool.resolved.csv")
        ck.script("resolve_mining_pool.py", "--csv", str(config["mining_pool_csv"]), "--images-root",
                  str(config.get("mining_images_root") or config.get("images_dir")), "--output-csv", resolved,
                  "--light", light, "--image-ext", ext)
    for label, entry in sorted(state.get("iterations", {}).items()):
        if entry.get("inference_csv"):
            ck.script("analyze_kpi.py", str(entry["inference_csv"]), "--output-dir",
                      str(ck.work / "analyze_kpi" / label), label=f"({label})")
    check_kpi_target(ck, state)
    check_mining_ledger(ck, rd, state)


def check_kpi_target(ck: Checker, state: dict[str, Any]) -> None:
    """TAO falls back to parsing ``kpi_target`` when a state has no ``metric_contract``."""
    probe = ("import json, sys\n"
             "from metric_contract import parse_target_expression\n"
             "c = parse_target_expression(sys.argv[1])\n"
             "print(json.dumps({k: c[k] for k in ('name', 'operator', 'target', 'unit')}))\n")
    out = ck.run("metric_contract.parse_target_expression(kpi_target)",
                 [ck.python, "-c", probe, str(state.get("kpi_target", ""))], cwd=ck.scripts)
    contract = state.get("metric_contract") or {}
    try:
        parsed = json.loads(out.last_line)
    except ValueError:
        return
    want = {k: contract.get(k) for k in ("name", "operator", "target", "unit")}
    ck.note("kpi_target parses to metric_contract", not differences(want, parsed),
            f"{state.get('kpi_target')!r} -> {parsed}")


def check_mining_ledger(ck: Checker, rd: Path, state: dict[str, Any]) -> None:
    """TAO's history filter re-verifies a committed iteration of the ledger with ``--resume``."""
    script = ck.bank / HISTORY_FILTER
    topn = (state.get("config", {}).get("mining_filter") or {}).get("top_k_per_target", 5)
    for label, entry in sorted(state.get("iterations", {}).items()):
        if not label.startswith("iter") or not entry.get("mining_mined_parquet"):
            continue
        ck.run(f"filter_mined_history.py --resume ({label})", [
            ck.python, str(script), "--candidate-parquet", str(entry.get("mining_candidate_parquet")),
            "--output-parquet", str(entry["mining_mined_parquet"]),
            "--history-file", str(entry.get("mining_history") or rd / "mining_history.json"),
            "--summary", str(entry.get("mining_history_summary")), "--iteration", label[4:],
            "--topn", str(topn), "--resume"])


def check_handoff(ck: Checker, rd: Path) -> None:
    """TAO's ``prepare_inference_spec.py`` on the finished state: same two files as raypipe's?"""
    ours_json = _read_json(rd / "best_model.json")
    ours_spec = _read_yaml(rd / "best_model_inference_spec.yaml")
    out = ck.script("prepare_inference_spec.py", "--results-dir", str(rd))
    if out.rc != 0:
        return
    # TAO's consumers read best_model.json by key: fields only raypipe writes (a verdict, sealed-test
    # numbers) are extras, not differences; every field TAO writes must match.
    diffs = differences(ours_json, _read_json(rd / "best_model.json"))
    extra = [d for d in diffs if d.endswith("(only raypipe's)")]
    ck.note("best_model.json vs TAO's", ours_json is not None and len(diffs) == len(extra),
            _summarise([d for d in diffs if d not in extra]) + (f" (raypipe's extras: {', '.join(extra)})"
                                                                 if extra else ""))
    theirs_spec = _read_yaml(rd / "best_model_inference_spec.yaml")
    ck.note("best_model_inference_spec.yaml vs TAO's", not differences(ours_spec, theirs_spec),
            _summarise(differences(ours_spec, theirs_spec)))


def replay(ck: Checker, rd: Path, state: dict[str, Any]) -> None:
    """Every recorded event through ``commit_stage.py`` (``loop_stop`` through ``finalize_run.py``)."""
    (rd / "deft_state.json").write_text(json.dumps(fresh_state(state), indent=2) + "\n")
    for event in state.get("events", []):
        label, stage = str(event.get("iter")), str(event.get("stage"))
        tag = f"({event.get('seq')} {label}/{stage})"
        if stage == "loop_stop" and event.get("status") != "error":
            ck.script("finalize_run.py", "--results-dir", str(rd), "--iter-label", label,
                      "--stop-reason", stop_reason(state, label), "--duration-sec", str(event.get("duration_sec")),
                      label=tag)
        else:
            ck.script("commit_stage.py", *commit_args(rd, state, event), label=tag)
    replayed = _read_json(rd / "deft_state.json") or {}
    ours = {k: v for k, v in state.get("iterations", {}).items()}
    theirs = replayed.get("iterations", {})
    # TAO's entries must hold what raypipe's hold for every field TAO writes; raypipe may add more.
    diffs = [d for d in differences(ours, theirs) if not d.endswith("(only raypipe's)")]
    ck.note("replayed iterations vs raypipe's", not diffs, _summarise(diffs))
    ck.note("replayed status vs raypipe's", replayed.get("status") == state.get("status"),
            f"TAO {replayed.get('status')!r}, raypipe {state.get('status')!r}")
    ck.script("deft_context.py", "--state", str(rd / "deft_state.json"), label="(replayed)")
    ck.script("render_report.py", "--results-dir", str(rd), "--require-terminal", label="(replayed)")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def main(argv: Iterable[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("skill_bank", type=Path, help="checkout of NVIDIA-TAO/tao-skill-bank")
    p.add_argument("run_dir", type=Path, help="a finished raypipe run dir (results/run_*)")
    p.add_argument("--workspace", type=Path, help="workspace root (default: the run dir's ../..)")
    p.add_argument("--python", default=sys.executable, help="interpreter for TAO's scripts")
    p.add_argument("--timeout", type=int, default=300, help="seconds per script")
    p.add_argument("--keep", action="store_true", help="keep the temporary copies and print where")
    a = p.parse_args(list(argv) if argv is not None else None)
    bank, original = a.skill_bank.resolve(), a.run_dir.resolve()
    if not (bank / SKILL / "commit_stage.py").is_file():
        p.error(f"{bank}: not a tao-skill-bank checkout (no {SKILL}/commit_stage.py)")
    if not (original / "deft_state.json").is_file():
        p.error(f"{original}: no deft_state.json (not a raypipe run dir)")
    work = Path(tempfile.mkdtemp(prefix="tao_scripts_check_"))
    try:
        ck = Checker(bank, original, work, a.python, (a.workspace or original.parent.parent).resolve(), a.timeout)
        reading = work / "as_written" / original.name
        n = relocate(original, reading)
        print(f"copy: {reading} ({n} absolute paths of the run dir rewritten to the copy)")
        state = _read_json(reading / "deft_state.json")
        check_reading_scripts(ck, reading, state)
        check_handoff(ck, reading)
        replayed = work / "replayed" / original.name
        relocate(original, replayed)
        replay(ck, replayed, _read_json(replayed / "deft_state.json"))
        failed = [o for o in ck.outcomes if not o.ok]
        print(f"{len(ck.outcomes) - len(failed)}/{len(ck.outcomes)} checks passed"
              + (f"; failed: {', '.join(o.name for o in failed)}" if failed else ""))
        return 1 if failed else 0
    finally:
        if a.keep:
            print(f"kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
