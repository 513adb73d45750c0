"""What the driver shows and watches while a sweep runs.

- :class:`SweepProgress`: a live trial table (rich) on a terminal, one plain line per event
  otherwise (CI logs, ``ray job submit``), with the elapsed time and an ETA from the trial times
  measured so far. Ray's own console output is silenced by the sweep.
- :class:`FailureWatch` + :class:`StopWhenAllFail`: when the first trials all fail with one shared
  root cause (a missing file, a broken backend option), stop launching more — the rest would only
  fail the same way — and let the driver report that cause.

These objects are pickled into Tune's experiment state (``tuner.pkl``) and come back on restore,
so they hold no open handles until ``setup``. Tune's public restore (``Tuner.restore``) brings back
the *pickled* callbacks and stopper, and offers no way to pass new ones; so the run config holds a
:class:`SweepCallbacks` relay and a :class:`StopWhenAllFail` that look up this process's live
objects by the experiment's path (:func:`live_sweep`) and fall back to their pickled copies only
where this process registered none (e.g. under Ray Client, where the tuner runs elsewhere).
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, TextIO

from ray import tune

from raypipe.console import Console, fmt_duration, fmt_eta, get_console, phase_title


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else "-"
    return str(v)


def _short_params(params: dict[str, Any]) -> str:
    return " ".join(f"{k.rsplit('.', 1)[-1]}={_fmt(v)}" for k, v in params.items())


def _metric(metric: str, value: Any) -> str:
    """``FAR 12.5%`` for the FAR objective, ``val_loss 0.41`` otherwise."""
    if metric == "far_pct":
        return f"FAR {value:.2f}%" if isinstance(value, (int, float)) and math.isfinite(value) else "FAR -"
    return f"{metric} {_fmt(value)}"


class SweepProgress(tune.Callback):
    """Trial table on a terminal, one line per event elsewhere; elapsed time and an ETA from the
    trial times measured so far. ``stream`` defaults to the process console's stdout."""

    def __init__(self, name: str, param_keys: tuple[str, ...], metric: str, total: int,
                 stream: TextIO | None = None, concurrency: int = 1) -> None:
        self.name = name
        self.param_keys = param_keys
        self.metric = metric
        self.total = total
        self.concurrency = max(1, concurrency)
        self._stream = stream
        self._rows: dict[str, dict[str, Any]] = {}
        self._live: Any = None
        self._t0 = time.time()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_live"] = None
        state["_stream"] = None  # streams do not pickle; a restored sweep prints to stdout
        return state

    @property
    def console(self) -> Console:
        return Console(out=self._stream) if self._stream is not None else get_console()

    @property
    def stream(self) -> TextIO:
        return self.console.out

    # -- Tune hooks ----------------------------------------------------------------------------
    def setup(self, stop: Any = None, num_samples: Any = None, total_num_samples: Any = None, **info: Any) -> None:
        self._t0 = time.time()
        console = self.console
        if console.tty:
            from rich.live import Live

            self._live = Live(self._table(), console=console.rich(), refresh_per_second=2, transient=False)
            self._live.start()
        else:
            self._line(f"sweep started: {self.total} trial(s), {self.concurrency} at a time, objective "
                       f"{'validation FAR at 100% recall' if self.metric == 'far_pct' else self.metric} (lower is better)")

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        params = {k: trial.config.get(k) for k in self.param_keys}
        row = self._rows.setdefault(trial.trial_id, {"best": math.inf})
        row.update(status="RUNNING", params=params, epoch=row.get("epoch", 0), started=time.time())
        self._event(f"trial {trial.trial_id} started: {_short_params(params)}")

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any],
                        **info: Any) -> None:
        row = self._rows.setdefault(trial.trial_id, {"best": math.inf, "params": {}, "started": time.time()})
        score = result.get("score", math.inf)
        row.update(status="RUNNING", epoch=result.get("epoch", 0), best=score)
        self._event(f"trial {trial.trial_id} epoch {result.get('epoch')}: validation FAR "
                    f"{_fmt(result.get('val_far'))}%, loss {_fmt(result.get('val_loss'))}; trial best "
                    f"{_metric(self.metric, score)}")

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        row = self._rows.setdefault(trial.trial_id, {"best": math.inf, "params": {}})
        row.update(status="DONE", seconds=time.time() - row.get("started", self._t0))
        self._event(f"trial {trial.trial_id} complete in {fmt_duration(row['seconds'])}: best "
                    f"{_metric(self.metric, row.get('best'))} · {self._progress()}")

    def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._rows.setdefault(trial.trial_id, {"best": math.inf, "params": {}})["status"] = "RETRYING"
        self._event(f"trial {trial.trial_id} crashed ({_last_error(trial)}); retrying")

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._rows.setdefault(trial.trial_id, {"best": math.inf, "params": {}})["status"] = "FAILED"
        self._event(f"trial {trial.trial_id} failed after retries: {_last_error(trial)}")

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        if self._live is not None:
            self._live.update(self._table())
            self._live.stop()
            self._live = None
        else:
            done = sum(1 for r in self._rows.values() if r.get("status") == "DONE")
            self._line(f"sweep ended: {done} trial(s) complete in {fmt_duration(time.time() - self._t0)}")

    # -- progress and ETA ----------------------------------------------------------------------
    def eta_s(self, now: float | None = None) -> float | None:
        """Seconds to the last trial's end: the mean finished trial time for every trial not yet
        finished, less what the running ones have done, in waves of ``concurrency``; None before
        any trial finished."""
        now = time.time() if now is None else now
        finished = [r["seconds"] for r in self._rows.values() if r.get("status") == "DONE" and "seconds" in r]
        if not finished:
            return None
        mean = sum(finished) / len(finished)
        ended = sum(1 for r in self._rows.values() if r.get("status") in ("DONE", "FAILED"))
        running = [now - r["started"] for r in self._rows.values() if r.get("status") == "RUNNING" and "started" in r]
        waiting = max(0, self.total - ended - len(running))
        work = waiting * mean + sum(max(0.0, mean - e) for e in running)
        return work / self.concurrency

    def _progress(self) -> str:
        done = sum(1 for r in self._rows.values() if r.get("status") == "DONE")
        return (f"{done}/{self.total} done, {fmt_duration(time.time() - self._t0)} elapsed, "
                f"ETA {fmt_eta(self.eta_s())}")

    # -- output --------------------------------------------------------------------------------
    def _event(self, text: str) -> None:
        if self._live is not None:
            self._live.update(self._table())
        else:
            self._line(text)

    def _line(self, text: str) -> None:
        self.console.line(text, phase=self.name)

    def _table(self) -> Any:
        from rich.table import Table

        best = min((r.get("best", math.inf) for r in self._rows.values()), default=math.inf)
        table = Table(title=f"{phase_title(self.name)}: {self._progress()}, best {_metric(self.metric, best)}")
        for col in ("trial", "status", "epoch", *[k.rsplit(".", 1)[-1] for k in self.param_keys],
                    f"best {'FAR %' if self.metric == 'far_pct' else self.metric}"):
            table.add_column(col)
        for tid, r in self._rows.items():
            params = r.get("params") or {}
            table.add_row(tid, r.get("status", ""), str(r.get("epoch", "")),
                          *[_fmt(params.get(k, "")) for k in self.param_keys], _fmt(r.get("best", math.inf)))
        return table


def _last_error(trial: Any) -> str:
    try:
        text = trial.get_error() or ""
    except Exception:  # a boundary: the display never fails over an unreadable error file
        return "error unavailable"
    return root_cause(text)


UNKNOWN_ERROR = "unknown error"  # a failure whose error text was not readable when Tune reported it


def root_cause(text: str) -> str:
    """The final ``Type: message`` line of a traceback (the exception that ended the trial)."""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    for ln in reversed(lines):
        if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b", ln):
            return ln[:500]
    return lines[-1][:500] if lines else UNKNOWN_ERROR


def error_signature(text: str) -> str:
    """A failure's root cause, comparable across trials: the final ``Type: message`` line, numbers masked."""
    cause = root_cause(text)
    return re.sub(r"\d+(\.\d+)?(e-?\d+)?", "#", cause)[:300]


class FailureWatch(tune.Callback):
    """Counts how trials end; shared with :class:`StopWhenAllFail` in one pickled run config."""

    def __init__(self, threshold: int = 2) -> None:
        self.threshold = threshold
        self.completed = 0
        self.failed: list[str] = []  # error signatures, in order

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.completed += 1

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        text = ""
        try:
            text = trial.get_error() or ""
        except Exception:  # a boundary: the error file may not be readable (remote storage hiccup)
            text = ""
        self.failed.append(error_signature(text))

    @property
    def all_failing(self) -> bool:
        """No success yet, ``threshold`` failures, one shared cause: more launches would only repeat it.

        A failure reported before its error text could be read (``unknown error``: seen on a loaded
        2-core machine, where the same trials' other attempts showed the real cause) contradicts no
        cause, so it counts as a failure without splitting the causes.
        """
        known = {sig for sig in self.failed if sig != UNKNOWN_ERROR}
        return self.completed == 0 and len(self.failed) >= self.threshold and len(known) <= 1


@dataclass
class _Live:
    callbacks: list[Any]
    watch: FailureWatch


_LIVE: dict[str, _Live] = {}


@contextlib.contextmanager
def live_sweep(key: str, callbacks: list[Any], watch: FailureWatch) -> Iterator[None]:
    """While ``fit`` runs: this process's callbacks and failure watch are the ones of experiment ``key``."""
    _LIVE[key] = _Live(list(callbacks), watch)
    try:
        yield
    finally:
        _LIVE.pop(key, None)


@dataclass(eq=False)
class SweepCallbacks(tune.Callback):
    """One stable, picklable callback that forwards every Tune hook to the sweep's live callbacks."""

    key: str  # the experiment's path: the same when the sweep is restored
    callbacks: list[Any] = field(default_factory=list)  # pickled copies: used when nothing is live here

    def targets(self) -> list[Any]:
        live = _LIVE.get(self.key)
        return live.callbacks if live is not None else self.callbacks


def _forward(name: str) -> Callable[..., None]:
    def hook(self: SweepCallbacks, **info: Any) -> None:
        for callback in self.targets():
            getattr(callback, name)(**info)

    hook.__name__ = name
    return hook


# Every hook of tune.Callback (``setup`` and ``on_*``), forwarded by name: Tune calls them by keyword.
for _name in [n for n in vars(tune.Callback) if n == "setup" or n.startswith("on_")]:
    setattr(SweepCallbacks, _name, _forward(_name))


class StopWhenAllFail(tune.Stopper):
    """Stops launching trials once the live :class:`FailureWatch` of the experiment sees a shared failure."""

    def __init__(self, key: str, watch: FailureWatch) -> None:
        self.key = key
        self.watch = watch  # the pickled copy: used when nothing is live in this process

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return False

    def stop_all(self) -> bool:
        live = _LIVE.get(self.key)
        return (live.watch if live is not None else self.watch).all_failing
