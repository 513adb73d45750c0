"""Errors that stop the DEFT loop.

A :class:`HardStop` is an expected, explainable stop (leakage, unreachable KPI, nothing new to
train on, ...): the driver commits it as an ``error`` event, marks the run failed and prints the
resume command with ``fix`` as the first thing to do. :class:`EvidenceError` means a stage claimed
results that are not on disk; the commit refuses it and the state file is left untouched.
"""

from __future__ import annotations


class HardStop(RuntimeError):
    """A stage cannot go on; the message says why and what to fix before ``--resume``."""

    def __init__(self, stage: str, reason: str, fix: str = "") -> None:
        self.stage = stage
        self.reason = reason
        self.fix = fix
        msg = f"[{stage}] {reason}"
        if fix:
            msg += f" -- fix: {fix}"
        super().__init__(msg)

    def __reduce__(self):  # keep (stage, reason, fix) across Ray's pickling of task errors
        return (type(self), (self.stage, self.reason, self.fix))


class EvidenceError(ValueError):
    """The evidence a stage handed to ``commit`` does not hold up; nothing was written."""

    def __init__(self, stage: str, label: str, problem: str) -> None:
        self.stage = stage
        self.label = label
        self.problem = problem
        super().__init__(f"{label}/{stage}: {problem}")

    def __reduce__(self):
        return (type(self), (self.stage, self.label, self.problem))


__all__ = ["EvidenceError", "HardStop"]
