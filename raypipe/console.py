"""Everything raypipe prints to a user, in one format.

Every line is ``HH:MM:SS  <who>     <text>``: ``who`` is the phase the line belongs to (``Phase 1``,
``Phase 2``, ``Phase 3``) or ``raypipe`` outside the phases; warnings and errors say so after it.
Python logging from raypipe's modules goes through the same format (:func:`install_logging`), so
a log line and a printed line look alike. On a terminal the tags are coloured and tables are drawn
with rich; anywhere else (CI logs, ``ray job submit``, a file) the same text comes out plain,
without escape codes and without wrapping.

The artifacts keep TAO's names (``phase1_automl/``, ``final_automl/``); the user reads phases:

    phase_title("final_automl")         # "Phase 3"
    phase_title("phase1_noise_guard")    # "Phase 1 (noise-guard re-run)"
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, TextIO

if TYPE_CHECKING:
    from rich.console import Console as RichConsole

    from raypipe.preflight import Preflight
    from raypipe.rundir import RunDir
    from raypipe.status import Snapshot

PHASE_TITLES = {"phase1": "Phase 1", "phase2": "Phase 2", "phase3": "Phase 3"}
PHASE_ROLES = {"phase1": "AutoML baseline", "phase2": "DEFT loop", "phase3": "AutoML refinement"}
# A sweep's Tune experiment name → its phase (the folders keep TAO's names).
_SWEEP_PHASES = {"phase1": "phase1", "final_automl": "phase3"}
_NOISE_GUARD = "_noise_guard"
_TAG_WIDTH = 8
_NO_WRAP_WIDTH = 240  # plain output is never wrapped: a CI log keeps one line per event
_STYLES = {"Phase 1": "cyan", "Phase 2": "magenta", "Phase 3": "blue", "raypipe": "bold"}


def phase_key(name: str) -> str | None:
    """``phase1`` | ``phase2`` | ``phase3`` for a phase or sweep name (``final_automl`` → ``phase3``)."""
    base = name[: -len(_NOISE_GUARD)] if name.endswith(_NOISE_GUARD) else name
    if base in PHASE_TITLES:
        return base
    return _SWEEP_PHASES.get(base)


def phase_title(name: str) -> str:
    """The user's name of a phase or sweep: ``Phase 1`` … ``Phase 3``; other names pass through."""
    key = phase_key(name)
    if key is None:
        return name
    return PHASE_TITLES[key] + (" (noise-guard re-run)" if name.endswith(_NOISE_GUARD) else "")


def phase_heading(phase: str) -> str:
    """``Phase 2 — DEFT loop``."""
    key = phase_key(phase) or phase
    return f"{PHASE_TITLES.get(key, key)} — {PHASE_ROLES.get(key, '')}".rstrip(" —")


def fmt_duration(seconds: float | None) -> str:
    """``42 s``, ``4:10``, ``1:02:03``; ``?`` when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def fmt_eta(seconds: float | None) -> str:
    """A remaining time as a user reads it: ``~40 s``, ``~6 min``, ``~1 h 05 min``; ``unknown`` if None."""
    if seconds is None or seconds != seconds:
        return "unknown"
    s = max(0.0, seconds)
    if s < 90:
        return f"~{max(10, int(round(s / 10.0)) * 10)} s"
    minutes = int(round(s / 60))
    if minutes < 90:
        return f"~{minutes} min"
    return f"~{minutes // 60} h {minutes % 60:02d} min"


def fmt_counts(counts: Mapping[str, Any]) -> str:
    """``{'PASS': 175, 'NO_PASS': 25}`` → ``PASS 175, NO_PASS 25`` (no Python dicts in user output)."""
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"


class Console:
    """Where user output goes: stdout for the run's story, stderr for errors only.

    ``tty`` decides the rendering (rich with colours and live lines, or plain lines); the text is
    the same either way.
    """

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self._out = out
        self._err = err
        self.phase: str | None = None  # the phase lines are tagged with (``phase1`` | ``phase2`` | ``phase3``)
        self._lock = threading.Lock()

    @property
    def out(self) -> TextIO:
        return self._out or sys.stdout

    @property
    def err(self) -> TextIO:
        return self._err or sys.stderr

    @property
    def tty(self) -> bool:
        try:
            return bool(self.out.isatty())
        except (AttributeError, ValueError):
            return False

    def rich(self, *, stderr: bool = False) -> RichConsole:
        """A rich console on this console's stream (plain, unwrapped text when it is not a terminal)."""
        from rich.console import Console as RichConsole

        stream = self.err if stderr else self.out
        if self.tty:
            return RichConsole(file=stream, highlight=False)
        return RichConsole(file=stream, highlight=False, width=_NO_WRAP_WIDTH, no_color=True, emoji=False)

    # -- lines ------------------------------------------------------------------------------------
    def tag(self, phase: str | None = None) -> str:
        key = phase or self.phase
        return phase_title(key) if key else "raypipe"

    def format(self, text: str, *, phase: str | None = None, level: str = "") -> str:
        """One line in raypipe's format (no colour): ``10:15:28  Phase 1   text``."""
        marker = f"{level}: " if level else ""
        return f"{time.strftime('%H:%M:%S')}  {self.tag(phase):<{_TAG_WIDTH}}  {marker}{text}"

    def line(self, text: str, *, phase: str | None = None, level: str = "") -> None:
        """Print one line; ``level`` is ``""`` (information), ``warning`` or ``error`` (to stderr)."""
        stream = self.err if level == "error" else self.out
        with self._lock:
            if self.tty:
                self._styled(text, phase=phase, level=level, stderr=level == "error")
            else:
                print(self.format(text, phase=phase, level=level), file=stream, flush=True)

    def _styled(self, text: str, *, phase: str | None, level: str, stderr: bool) -> None:
        from rich.text import Text

        tag = self.tag(phase)
        out = Text(time.strftime("%H:%M:%S") + "  ", style="dim")
        out.append(f"{tag:<{_TAG_WIDTH}}", style=_STYLES.get(tag.split(" (")[0], "bold"))
        out.append("  ")
        if level:
            out.append(f"{level}: ", style="bold red" if level == "error" else "bold yellow")
        out.append(text)
        self.rich(stderr=stderr).print(out, soft_wrap=True)

    def rule(self, title: str) -> None:
        """A section heading between phases (a drawn rule on a terminal, a plain line elsewhere)."""
        with self._lock:
            if self.tty:
                self.rich().rule(f"[bold]{title}")
            else:
                print(f"\n== {title} ==", file=self.out, flush=True)

    @contextlib.contextmanager
    def in_phase(self, phase: str) -> Iterator[None]:
        """Tag every line printed or logged inside the block with ``phase``."""
        before, self.phase = self.phase, phase_key(phase) or phase
        try:
            yield
        finally:
            self.phase = before

    # -- the pre-flight summary ---------------------------------------------------------------------
    def preflight(self, pf: Preflight) -> None:
        """The pre-flight summary for a reader at a terminal (``RD/preflight.md`` keeps the Markdown)."""
        from rich.text import Text

        con = self.rich()
        con.print(Text("raypipe pre-flight summary", style="bold underline"))
        from raypipe.preflight import SECTION_TITLES

        for title, lines in zip(SECTION_TITLES, pf.sections):
            con.print()
            con.print(Text(title, style="bold"))
            for line in lines or ["(nothing to report)"]:
                con.print(_preflight_line(line), soft_wrap=not self.tty)
        self.out.flush()


    # -- the closing summary -------------------------------------------------------------------------
    def closing_summary(self, run_dir: str | Path | RunDir, status: str, elapsed_s: float, tracking: Any = None) -> None:
        """The verdict first, then the trajectory, the delivered model, the time taken, and where to
        look next (report, MLflow, scoring and export commands)."""
        from rich import box
        from rich.table import Table
        from rich.text import Text

        from raypipe._io import read_json
        from raypipe.rundir import RunDir

        rd = RunDir(run_dir)
        bm = read_json(rd.best_model) if rd.best_model.is_file() else None
        traj = read_json(rd.trajectory) if rd.trajectory.is_file() else {"rows": []}
        con = self.rich()
        verdict = _verdict(bm) if bm is not None else None
        title = "Run complete" if status == "complete" else "Run failed"
        if verdict is not None:
            title += f" — {'KPI met' if verdict == 'kpi_met' else 'KPI not met'}"
        con.print()
        self.rule(title)
        if bm is not None:  # the verdict first: the one sentence a reader needs
            con.print(Text(verdict_text(bm, traj), style="bold green" if verdict == "kpi_met" else "bold yellow"),
                      soft_wrap=True)
        rows = trajectory_rows(traj)
        if rows:
            table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
            for col in rows[0]:
                table.add_column(col, justify="left" if col in ("step", "split", "") else "right")
            for r in rows[1:]:
                table.add_row(*r, style="bold" if r[-1] else None)
            con.print(table)
        facts: list[tuple[str, str]] = []
        if bm is not None:
            facts.append(("delivered", f"{iteration_title(str(bm.get('iteration')))}: {bm.get('checkpoint')} "
                                       f"(threshold {float(bm.get('threshold', math.nan)):.4g})"))
        facts.append(("total time", fmt_duration(elapsed_s)))
        facts.append(("run dir", str(rd.root)))
        if rd.report.is_file():
            facts.append(("report", str(rd.report)))
        facts.extend(_mlflow_facts(tracking))
        if bm is not None:
            facts.append(("score data", f"python -m raypipe.infer --best-model {rd.best_model} --csv NEW.csv "
                                        f"--images-dir IMAGES_DIR --output-dir OUT_DIR"))
            facts.append(("export", f"python -m raypipe.export --best-model {rd.best_model} --format onnx"))
        width = max(len(k) for k, _ in facts)
        for key, value in facts:
            line = Text(f"  {key:<{width}}  ", style="bold")
            line.append(value)
            con.print(line, soft_wrap=True)
        self.out.flush()


def _verdict(best_model: Mapping[str, Any]) -> str:
    """``kpi_met`` | ``kpi_not_met``: the recorded verdict, else the KPI result's ``passed``."""
    recorded = best_model.get("verdict")
    if recorded:
        return str(recorded)
    return "kpi_met" if (best_model.get("metric_result") or {}).get("passed") else "kpi_not_met"


def verdict_text(best_model: Mapping[str, Any], trajectory: Mapping[str, Any]) -> str:
    """The headline sentence: the KPI verdict and, when the workspace has one, the sealed test split's FAR."""
    from raypipe import trajectory as traj_module

    line = getattr(traj_module, "verdict_line", None)  # the outcome's own wording, where this version has it
    if line is not None:
        try:
            return str(line(best_model, trajectory))
        except TypeError:  # a helper with another signature than this console knows: use the wording below
            pass
    c = best_model.get("metric_contract") or {}
    unit = c.get("unit", "%")
    name = c.get("display_name") or c.get("name", "metric")
    met = "KPI met" if _verdict(best_model) == "kpi_met" else "KPI not met"
    text = (f"{met}: {name} {float(best_model.get('far_pct', math.nan)):.2f}{unit} on the KPI set "
            f"(target {c.get('operator', '')} {c.get('target', '?')}{unit})")
    if best_model.get("test_far_pct") is not None:
        text += f"; sealed test split {float(best_model['test_far_pct']):.2f}{unit}"
        if best_model.get("test_auroc") is not None:
            text += f", AUROC {float(best_model['test_auroc']):.3f}"
    return text


def iteration_title(label: str) -> str:
    """``baseline`` → ``Phase 2 baseline``, ``iter2`` → ``Phase 2 iteration 2``, ``final_automl`` → ``Phase 3 winner``."""
    if label == "final_automl":
        return "Phase 3 winner"
    if label == "baseline":
        return "Phase 2 baseline"
    if label.startswith("iter") and label[4:].isdigit():
        return f"Phase 2 iteration {label[4:]}"
    return label


_STEP_TITLES = {"phase1_best": "Phase 1 best", "phase3_best": "Phase 3 best"}


def trajectory_rows(trajectory: Mapping[str, Any]) -> list[list[str]]:
    """The trajectory as text cells, header first (test columns only when some step was scored on it)."""
    rows = list(trajectory.get("rows") or [])
    if not rows:
        return []
    test = any(r.get("test_far_pct") is not None for r in rows)
    head = ["step", "split", "FAR@100%R"] + (["test FAR", "test AUROC"] if test else []) + \
        ["threshold", "AUROC", "train rows", ""]
    out = [head]
    for r in rows:
        cells = [_STEP_TITLES.get(str(r.get("step")), str(r.get("step"))), str(r.get("split", "")),
                 _pct(r.get("far_pct"))]
        if test:
            cells += [_pct(r.get("test_far_pct")), _num(r.get("test_auroc"), ".3f")]
        cells += [_num(r.get("threshold"), ".4g"), _num(r.get("auroc"), ".3f"),
                  "" if r.get("training_rows") is None else str(r["training_rows"]),
                  "◀ delivered" if r.get("delivered") else ""]
        out.append(cells)
    return out


def _pct(x: Any) -> str:
    return "" if x is None else f"{float(x):.2f}%"


def _num(x: Any, spec: str) -> str:
    return "" if x is None else format(float(x), spec)


def _mlflow_facts(tracking: Any) -> list[tuple[str, str]]:
    if tracking is None or not getattr(tracking, "active", False):
        return [("MLflow", "tracking off (tracking.enabled=false)")]
    from raypipe.tracking import ui_command, ui_url

    out = []
    cmd = ui_command(tracking.tracking_uri)
    if cmd:
        out.append(("MLflow UI", cmd))
    url = ui_url(tracking)
    if url:
        out.append(("open", url))
    return out


_MARKS = {"OK": ("ok", "green"), "WARN": ("warn", "yellow"), "BLOCKER": ("BLOCKER", "bold red")}


def _preflight_line(line: str) -> Any:
    """``OK       text`` → a coloured marker and the text; other lines are indented as they are."""
    from rich.text import Text

    head, _, rest = line.partition(" ")
    if head in _MARKS:
        word, style = _MARKS[head]
        out = Text("  ")
        out.append(f"{word:<8}", style=style)
        out.append(rest.strip())
        return out
    return Text("  " + line)


# -- logging --------------------------------------------------------------------------------------

_CHATTY = ("ray", "ray.tune", "ray.train", "ray.data", "optuna", "filelock", "urllib3", "PIL", "matplotlib",
           "mlflow", "alembic", "torch", "fsspec")


class ConsoleHandler(logging.Handler):
    """Log records as console lines: raypipe's INFO plainly, anything at WARNING and above marked."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info and record.levelno >= logging.ERROR and logging.getLogger().level <= logging.DEBUG:
                text += "\n" + self.format(record).split("\n", 1)[-1]
            level = "error" if record.levelno >= logging.ERROR else "warning" if record.levelno >= logging.WARNING \
                else ""
            self.console.line(text, level=level)
        except Exception:  # logging's own contract: a handler never raises into the caller
            self.handleError(record)


def install_logging(console: Console, *, verbose: bool = False) -> None:
    """Route every log record through ``console``: raypipe at INFO; the libraries' chatter
    (Ray, Optuna, MLflow, …) only from WARNING, or everything with ``verbose``."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if isinstance(h, ConsoleHandler):
            root.removeHandler(h)
    root.addHandler(ConsoleHandler(console))
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("raypipe").setLevel(logging.DEBUG if verbose else logging.INFO)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.ERROR)


# -- the process-wide console ------------------------------------------------------------------------

_CONSOLE = Console()


def get_console() -> Console:
    """The console of this process (what the sweep display, the pipeline and run.py print to)."""
    return _CONSOLE


# -- Phase 2: following the loop's files from the driver -------------------------------------------


@contextlib.contextmanager
def follow_deft(run_dir: str | Path | RunDir, console: Console | None = None, *, poll_s: float = 1.0) -> Iterator[None]:
    """While the block runs (the DEFT loop, in a Ray actor), print from this process what the loop
    commits: one line per stage with its duration and summary, and the stage now running with its
    elapsed time and an ETA from the stage and trial times measured so far.

    The loop's actor never prints; everything comes from ``deft_state.json`` (read without
    touching it), so the lines are the same whether the loop runs here or on another node.
    """
    console = console or get_console()
    follower = _DeftFollower(Path(run_dir), console, poll_s)
    follower.start()
    try:
        yield
    finally:
        follower.stop()


class _DeftFollower:
    def __init__(self, run_dir: Path, console: Console, poll_s: float) -> None:
        self.run_dir, self.console, self.poll_s = run_dir, console, poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="raypipe-deft-follow", daemon=True)
        self._seen: int | None = None  # the last event shown (those committed before the start are skipped)
        self._running: tuple[str, str] | None = None
        self._live: Any = None

    def start(self) -> None:
        from raypipe.status import deft_events

        # What is committed now was shown before (or by an earlier run of the loop): fixed here, not
        # in the thread, so a commit that lands right after the start is always printed.
        self._seen = max((int(e.get("seq", 0)) for e in deft_events(self.run_dir)), default=0)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._poll()  # the last commits (loop_stop) land just before the loop returns
        self._stop_live()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._poll()
            except Exception as exc:  # a boundary: the display never stops the loop; say it once
                self.console.line(f"progress display stopped: {exc}", phase="phase2", level="warning")
                return
            self._stop.wait(self.poll_s)

    def _poll(self) -> None:
        from raypipe.status import deft_events, snapshot

        for e in deft_events(self.run_dir):
            if int(e.get("seq", 0)) > (self._seen or 0):
                self._seen = int(e["seq"])
                self._event(e)
        snap = snapshot(self.run_dir)
        self._show_running(snap)

    def _event(self, e: Mapping[str, Any]) -> None:
        from raypipe.status import stage_line

        self._clear_live()
        level = "error" if e.get("status") == "error" else ""
        self.console.line(stage_line(e), phase="phase2", level=level)

    def _show_running(self, snap: Snapshot) -> None:
        stage = snap.stage
        if stage is None or snap.phase != "phase2":
            self._clear_live()
            return
        text = snap.stage_text()
        if self.console.tty:
            self._update_live(text)
        elif self._running != (stage.label, stage.name):
            self.console.line(text, phase="phase2")
        self._running = (stage.label, stage.name)

    # -- the live line on a terminal ---------------------------------------------------------------
    def _update_live(self, text: str) -> None:
        from rich.live import Live
        from rich.text import Text

        line = Text(f"          {self.console.tag('phase2'):<{_TAG_WIDTH}}  ⏳ {text}", style="dim")
        if self._live is None:
            self._live = Live(line, console=self.console.rich(), refresh_per_second=2, transient=True)
            self._live.start()
        else:
            self._live.update(line)

    def _clear_live(self) -> None:
        self._stop_live()

    def _stop_live(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


__all__ = [
    "PHASE_ROLES", "PHASE_TITLES", "Console", "ConsoleHandler", "fmt_counts", "fmt_duration", "fmt_eta",
    "follow_deft", "get_console", "install_logging", "phase_heading", "phase_key", "phase_title",
]
