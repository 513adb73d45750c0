"""``python -m raypipe.status RD``: where a run is — phase, stage, elapsed, ETA, best so far.

It reads the run dir only (``pipeline_state.json``, ``deft_state.json``, the sweeps' trial results,
``time_plan.json``) and the workspace's run lock, never writes, and works the same while the run
is going, after it finished, or after it was killed. The console's live Phase 2 line is built from
the same :func:`snapshot`.

The ETA is the run's time model (:mod:`raypipe.budget`) with every piece already measured in this
run replaced by its measurement: finished trials give the trial time, committed DEFT stages give
the stage times. The DEFT loop stops early when the KPI is met, so Phase 2's part of the ETA is an
upper bound.

    python -m raypipe.status workspace/results/run_20260101_120000
    python -m raypipe.status RD --json        # the same, as one JSON object
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping

from raypipe.rundir import BASELINE, FINAL_AUTOML, RunDir, SweepDir, iteration_number, resume_command

PHASES = ("phase1", "phase2", "phase3")
_TAIL_S = 10.0  # what a phase does after its last piece of work (read-back, files, registration)


# -- reading ------------------------------------------------------------------------------------------


def _json(path: Path) -> dict[str, Any] | None:
    """A JSON file, or None when it is missing or being replaced (every writer is atomic; a reader may
    still see no file for an instant)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _ts(text: Any) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def deft_events(run_dir: str | Path | RunDir) -> list[dict[str, Any]]:
    """The loop's committed events (``deft_state.json`` is the truth; ``loop_log.jsonl`` mirrors it)."""
    state = _json(RunDir(run_dir).deft_state)
    return list(state.get("events", [])) if state else []


def stage_line(event: Mapping[str, Any]) -> str:
    """One committed DEFT stage as the console shows it: ``iter1  data_mining  6 s  mined 150 novel pool rows``."""
    from raypipe.console import fmt_duration

    mark = "" if event.get("status") == "ok" else "FAILED "
    return (f"{event.get('iter', '?'):<8} {event.get('stage', '?'):<11} {fmt_duration(event.get('duration_sec')):>6}  "
            f"{mark}{event.get('summary', '')}")


# -- the time model of this run -----------------------------------------------------------------------


def _config(rd: RunDir) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(rd.config_yaml.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _cost_model(rd: RunDir, cfg: Mapping[str, Any]) -> tuple[Any, Any] | None:
    """(CostModel, Knobs) from ``time_plan.json`` (written when the run was approved); None for a run
    that has none (older runs): then only measured times are used."""
    from raypipe.budget import CostModel, Knobs

    plan = _json(rd.time_plan)
    if not plan:
        return None
    try:
        model = CostModel.from_json(plan)
        knobs = Knobs(**plan["knobs"])
    except (KeyError, TypeError, ValueError):
        return None
    return model, knobs


@dataclass
class TrialTimes:
    """A sweep's trials as its result files show them."""

    planned: int
    epochs: int
    done: list[float] = field(default_factory=list)  # seconds of each finished trial
    running: list[float] = field(default_factory=list)  # seconds so far of each unfinished one
    best: float | None = None  # the best ``score`` reported so far
    epoch_s: list[float] = field(default_factory=list)  # seconds per epoch of each trial that reported one

    def trial_s(self, fallback: float | None) -> float | None:
        if self.done:
            return sum(self.done) / len(self.done)
        return fallback

    def remaining_s(self, concurrency: int, trial_s: float | None) -> float | None:
        if trial_s is None:
            return None
        started = len(self.done) + len(self.running)
        work = max(0, self.planned - started) * trial_s + sum(max(0.0, trial_s - r) for r in self.running)
        return work / max(1, concurrency) + _TAIL_S


def trial_times(sweep: SweepDir, planned: int, epochs: int, now: float) -> TrialTimes:
    """Finished and running trials from ``<sweep>/<name>/trial_*/result.json`` (local storage only)."""
    out = TrialTimes(planned, epochs)
    for trial in sorted((sweep.path / sweep.name).glob("trial_*")):
        results = _result_lines(trial / "result.json")
        if not results:
            out.running.append(max(0.0, now - trial.stat().st_mtime))
            continue
        last = results[-1]
        if int(last.get("epoch", 0) or 0) > 0:
            out.epoch_s.append(float(last.get("time_total_s", 0.0)) / int(last["epoch"]))
        score = last.get("score")
        if isinstance(score, (int, float)) and math.isfinite(score):
            out.best = score if out.best is None else min(out.best, score)
        if last.get("done") or int(last.get("epoch", 0) or 0) >= epochs:
            out.done.append(float(last.get("time_total_s", 0.0)))
        else:
            started = last.get("started_at")
            out.running.append(now - float(started) if isinstance(started, (int, float)) else
                               float(last.get("time_total_s", 0.0)))
    return out


def epoch_seconds(sweep: SweepDir) -> list[float]:
    """Seconds per epoch of each trial of ``sweep`` that reported an epoch (its time so far ÷ its epochs)."""
    return trial_times(sweep, planned=0, epochs=1, now=time.time()).epoch_s


def _result_lines(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # the line being written
    return out


# -- the snapshot ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    """The DEFT stage running now."""

    label: str
    name: str
    index: int  # 1-based position within its iteration
    count: int  # stages in that iteration
    started: float  # epoch seconds: the previous commit
    estimate_s: float | None


@dataclass
class Snapshot:
    run_dir: str
    status: str  # running | in progress | complete | failed | interrupted | not started
    phase: str | None  # the phase in progress
    phases: dict[str, str]  # phase → pending | in_progress | complete | skipped | failed
    started: float | None
    ended: float | None
    now: float
    stage: Stage | None = None
    phase_eta_s: float | None = None  # to the end of the phase in progress
    eta_s: float | None = None  # to the end of the run
    best: list[str] = field(default_factory=list)
    holder: str | None = None  # the process that runs it, when the workspace lock says so
    notes: list[str] = field(default_factory=list)

    @property
    def elapsed_s(self) -> float | None:
        if self.started is None:
            return None
        return (self.ended or self.now) - self.started

    def stage_text(self) -> str:
        """The live Phase 2 line: ``iter2 · train (5/7) · 0:42 in stage · Phase 2 ETA ≤ ~3 min · run ETA ~8 min``."""
        from raypipe.console import fmt_duration, fmt_eta

        parts = []
        if self.stage is not None:
            s = self.stage
            parts.append(f"{s.label} · {s.name} ({s.index}/{s.count}) · {fmt_duration(self.now - s.started)} in stage")
        parts.append(f"Phase 2 ETA ≤ {fmt_eta(self.phase_eta_s)}")
        parts.append(f"run ETA {fmt_eta(self.eta_s)}")
        return " · ".join(parts)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["elapsed_s"] = self.elapsed_s
        return out


def snapshot(run_dir: str | Path | RunDir, *, now: float | None = None) -> Snapshot:
    """Where the run in ``run_dir`` stands (reads files only)."""
    rd = RunDir(run_dir)
    now = time.time() if now is None else now
    ps = _json(rd.pipeline_state) or {}
    phases = {p: str((ps.get("phases") or {}).get(p, {}).get("status", "pending")) for p in PHASES}
    current = next((p for p in PHASES if phases[p] == "in_progress"), None)
    status = str(ps.get("status", "not started")) if ps else "not started"
    snap = Snapshot(str(rd.root), status.replace("_", " "), current, phases, _ts(ps.get("started_at")),
                    _ts(ps.get("completed_at")), now)
    if status in ("interrupted", "failed") and snap.ended is None:
        snap.ended = _newest_mtime(rd)
    snap.holder = _holder(rd)
    if snap.holder and status == "in_progress":
        snap.status = "running"
    elif status == "in_progress" and _lock_file(rd).is_file():
        # Only a workspace whose runs take the lock can say that nobody runs this one.
        snap.notes.append("no raypipe process holds this run's workspace lock: if the run was stopped, continue "
                          f"it with {resume_command(rd.root)}")
    _estimate(rd, snap, _config(rd))
    snap.best = best_so_far(rd, snap)
    return snap


def _newest_mtime(rd: RunDir) -> float | None:
    times = [p.stat().st_mtime for p in (rd.pipeline_state, rd.deft_state, rd.loop_log) if p.is_file()]
    return max(times) if times else None


def _lock_file(rd: RunDir) -> Path:
    from raypipe._lock import LOCK_FILE

    return rd.root.parent.parent / LOCK_FILE


def _holder(rd: RunDir) -> str | None:
    """``PID n on host h`` when a live raypipe process holds the workspace for this run dir."""
    if rd.root.parent.name != "results":
        return None
    from raypipe._lock import lock_status

    try:
        held, holder = lock_status(rd.root.parent.parent)
    except OSError:
        return None
    if not held or holder is None or not holder.run_dir:
        return None
    if Path(holder.run_dir).resolve() != rd.root.resolve():
        return None
    return f"PID {holder.pid} on {holder.host}"


def _estimate(rd: RunDir, snap: Snapshot, cfg: Mapping[str, Any]) -> None:
    """Fill the running stage and the ETAs (None where nothing is known yet)."""
    if snap.status in ("complete", "failed", "interrupted", "not started"):
        return
    planned = _cost_model(rd, cfg)
    model, knobs = planned if planned else (None, None)
    conc = int((cfg.get("automl") or {}).get("max_concurrent_trials", 1) or 1)
    epochs = int((cfg.get("spec_overrides") or {}).get("train.num_epochs", 1) or 1)
    p1 = trial_times(rd.sweep("phase1"), int((cfg.get("phase1") or {}).get("automl_max_recommendations", 0) or 0),
                     epochs, snap.now)
    # Phase 3's trial count as the run started it (under a time budget it is planned when Phase 3 starts)
    p3_started = ((_json(rd.pipeline_state) or {}).get("phases") or {}).get("phase3") or {}
    p3_planned = p3_started.get("trials") or (cfg.get("phase3") or {}).get("automl_max_recommendations", 0) or 0
    p3 = trial_times(rd.sweep("phase3"), int(p3_planned), epochs, snap.now)
    trial_fallback = model.trial_s(epochs) if model else None
    t_trial = p1.trial_s(trial_fallback)
    remaining: dict[str, float | None] = {}
    # Phase 1
    if snap.phases["phase1"] == "in_progress":
        remaining["phase1"] = p1.remaining_s(conc, t_trial)
    elif snap.phases["phase1"] == "pending":
        remaining["phase1"] = model.estimate(knobs).phase1_s if model else None
    # Phase 2
    if snap.phases["phase2"] in ("in_progress", "pending"):
        stage, p2_left = _deft_remaining(rd, model, knobs, cfg, snap.now)
        if snap.phases["phase2"] == "in_progress":
            snap.stage = stage
        remaining["phase2"] = p2_left
    # Phase 3: its trials train on the grown set, so they are timed on their own once they start.
    if snap.phases["phase3"] == "in_progress":
        t3 = p3.trial_s(_phase3_trial_guess(rd, model, knobs, t_trial))
        remaining["phase3"] = p3.remaining_s(conc, t3)
    elif snap.phases["phase3"] == "pending" and (cfg.get("phase3") or {}).get("enabled", True):
        t3 = _phase3_trial_guess(rd, model, knobs, t_trial)
        remaining["phase3"] = TrialTimes(p3.planned, epochs).remaining_s(conc, t3)
    if snap.phase is not None:
        snap.phase_eta_s = remaining.get(snap.phase)
    values = list(remaining.values())
    snap.eta_s = None if any(v is None for v in values) else sum(v for v in values if v is not None)


def _phase3_trial_guess(rd: RunDir, model: Any, knobs: Any, t_trial1: float | None) -> float | None:
    """A Phase 3 trial: Phase 1's measured trial time scaled to the rows Phase 3 trains on."""
    if model is None:
        return t_trial1
    rows = model.rows_after(knobs.max_iterations)
    guess = model.trial_s(knobs.epochs, rows)
    if t_trial1 is None:
        return guess
    return t_trial1 * guess / model.trial_s(knobs.epochs)


def _deft_remaining(rd: RunDir, model: Any, knobs: Any, cfg: Mapping[str, Any],
                    now: float) -> tuple[Stage | None, float | None]:
    """The stage running now, and the seconds left in Phase 2 (every remaining iteration counted)."""
    from raypipe.deft.stages import REGISTRY
    from raypipe.deft.state import DONE, HALT, next_stage

    state = _json(rd.deft_state)
    max_iter = int((cfg.get("phase2") or {}).get("max_iterations", 1) or 1)
    if not state:
        return None, model.estimate(knobs).phase2_s if model else None
    events = list(state.get("events", []))
    measured: dict[str, list[float]] = {}
    for e in events:
        if e.get("status") == "ok" and not (e.get("iter") == BASELINE and e.get("stage") == "train"):
            measured.setdefault(str(e["stage"]), []).append(float(e.get("duration_sec", 0)))
    loop_epochs = knobs.loop_epochs if knobs else 1

    def est(stage: str, iteration: int) -> float | None:
        if measured.get(stage):
            return sum(measured[stage]) / len(measured[stage])
        return model.stage_s(stage, iteration=iteration, epochs=loop_epochs) if model else None

    try:
        step = next_stage(state)
    except ValueError:
        return None, None
    if step.stage in (DONE, HALT) or step.label is None:
        return None, 0.0
    label = step.label
    n = iteration_number(label) if label != FINAL_AUTOML else max_iter
    names = _iteration_stages(label)
    index = names.index(step.stage) + 1 if step.stage in names else len(names)
    started = max([_ts(e.get("ts")) or 0.0 for e in events] or [0.0]) or now
    current = est(step.stage, max(n, 1))
    stage = Stage(label, step.stage, index, len(names), started, current)
    left: list[float | None] = [None if current is None else max(0.0, current - (now - started))]
    left += [est(s, max(n, 1)) for s in names[index:]]
    for i in range(n + 1, max_iter + 1):
        left += [est(s, i) for s in _iteration_stages(f"iter{i}")]
    left.append(est(REGISTRY.stop.name, n))
    if any(v is None for v in left):
        return stage, None
    return stage, sum(v for v in left if v is not None) + _TAIL_S


def _iteration_stages(label: str) -> list[str]:
    """The stages an iteration runs, in order (the baseline enters at train; iter<N> at routing)."""
    from raypipe.deft.stages import REGISTRY

    names = [s for s in REGISTRY.names if s != REGISTRY.stop.name]
    start = names.index(REGISTRY.entry(label))
    return names[start:]


# -- best so far -----------------------------------------------------------------------------------------


def best_so_far(rd: RunDir, snap: Snapshot) -> list[str]:
    """One line per thing worth knowing: Phase 1's best, the loop's best on the KPI set, Phase 3's, the delivered model."""
    lines = []
    rec = _json(rd.sweep("phase1").best_rec)
    if rec:
        lines.append(f"Phase 1 best: validation FAR {float(rec['best']['score']):.2f}% (trial {rec['best']['rec_id']})")
    elif snap.phases.get("phase1") == "in_progress":
        p1 = trial_times(rd.sweep("phase1"), 0, 10**6, snap.now)
        if p1.best is not None:
            lines.append(f"Phase 1 best so far: validation FAR {p1.best:.2f}% (running)")
    state = _json(rd.deft_state)
    if state:
        kpi = _kpi_best(state)
        if kpi:
            lines.append(kpi)
    if snap.phases.get("phase3") == "in_progress":
        p3 = trial_times(rd.sweep("phase3"), 0, 10**6, snap.now)
        if p3.best is not None:
            lines.append(f"Phase 3 best so far: validation FAR {p3.best:.2f}% (running)")
    bm = _json(rd.best_model)
    if bm and snap.status in ("complete", "failed", "interrupted"):
        lines.append(delivered_line(bm))
    return lines


def _kpi_best(state: Mapping[str, Any]) -> str | None:
    from raypipe.metrics import MetricContract, pick_best
    from raypipe.rundir import ordered_labels

    try:
        contract = MetricContract.from_dict(state["metric_contract"])
    except (KeyError, TypeError, ValueError):
        return None
    its = state.get("iterations", {})
    pick = pick_best(contract, [(lb, its[lb]) for lb in ordered_labels(its, include_final=False)])
    if pick is None:
        return None
    value = float(pick.entry["metric_result"]["value"])
    met = "met" if pick.passed else "not met"
    return (f"Phase 2 best on the KPI set: {pick.label} {contract.display_name or contract.name} {value:.2f}{contract.unit} "
            f"(target {contract.operator} {contract.target:g}{contract.unit}, {met})")


def delivered_line(best_model: Mapping[str, Any]) -> str:
    """``Delivered: iter2, KPI FAR 7.50% (KPI met), sealed test FAR 9.10%``; verdict and test only when recorded."""
    label = best_model.get("iteration", "?")
    text = f"Delivered: {'Phase 3 winner (final_automl)' if label == FINAL_AUTOML else label}, " \
           f"KPI FAR {float(best_model.get('far_pct', math.nan)):.2f}%"
    verdict = best_model.get("verdict")
    if verdict:
        text += f" ({str(verdict).replace('kpi_', 'KPI ').replace('_', ' ')})"
    if best_model.get("test_far_pct") is not None:
        text += f", sealed test FAR {float(best_model['test_far_pct']):.2f}%"
    return text


# -- output ---------------------------------------------------------------------------------------------


def render(snap: Snapshot) -> str:
    """Plain lines for a terminal or a log."""
    from raypipe.console import fmt_duration, fmt_eta, phase_heading

    rows: list[tuple[str, str]] = [("run dir", snap.run_dir)]
    status = snap.status + (f" ({snap.holder})" if snap.holder else "")
    rows.append(("status", status))
    if snap.phase:
        where = phase_heading(snap.phase)
        if snap.stage is not None:
            s = snap.stage
            where += f": {s.label} / {s.name} (stage {s.index} of {s.count}, {fmt_duration(snap.now - s.started)})"
        rows.append(("phase", where))
    rows.append(("phases", "  ".join(f"{p}: {snap.phases[p]}" for p in PHASES)))
    if snap.started is not None:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(snap.started))
        rows.append(("elapsed", f"{fmt_duration(snap.elapsed_s)} (started {since})"))
    if snap.status in ("running", "in progress"):
        eta = f"run {fmt_eta(snap.eta_s)}"
        if snap.phase:
            eta = f"{phase_heading(snap.phase).split(' —')[0]} {fmt_eta(snap.phase_eta_s)}; " + eta
        rows.append(("ETA", eta + ("  (Phase 2 stops early when the KPI is met)" if snap.phases["phase2"] != "complete"
                                   else "")))
    for i, line in enumerate(snap.best):
        rows.append(("best" if i == 0 else "", line))
    for note in snap.notes:
        rows.append(("note", note))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m raypipe.status", description=(__doc__ or "").splitlines()[0])
    p.add_argument("run_dir", help="a run dir: <workspace>/results/run_<YYYYMMDD_HHMMSS>")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    a = p.parse_args(argv)
    rd = RunDir(a.run_dir)
    if not rd.pipeline_state.is_file() and not rd.deft_state.is_file():
        print(f"error: {rd.root}: not a raypipe run dir (no pipeline_state.json)", file=sys.stderr)
        return 1
    snap = snapshot(rd)
    print(json.dumps(snap.to_json(), indent=2) if a.json else render(snap))
    return 0


if __name__ == "__main__":
    sys.exit(main())
