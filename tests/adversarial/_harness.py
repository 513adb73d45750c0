"""The harness: a case is one line (tool, setup, expected exit code, what the message must name);
running it checks the exit code, the message, the absence of a traceback, and that every file of
the case directory is byte-identical afterwards.

Layout of a case directory (a fresh copy per case):
    ws/        the tool's input (a demo workspace, one with a finished run's deliverable, or an
               inference CSV for the metrics tool)
    outside/   a place outside the input, for symlink targets
    out/       where a tool may write outputs (only on success, only if the tool declares it)

To add a tool, add a :class:`Tool` to ``TOOLS`` in ``_tools.py``; every case is then one
:class:`Case` entry in a test module. The kill-and-resume tests (real runs stopped at named
moments) use ``_runner.py`` instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import stat
import subprocess
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

Setup = Callable[[Path], None]  # mutates a case directory before the tool runs
TRACEBACK = "Traceback (most recent call last)"


@dataclass(frozen=True)
class Outcome:
    exit_code: int | None  # None: an exception escaped the in-process entry point
    stdout: str
    stderr: str


@dataclass(frozen=True)
class Tool:
    """An entry point under test. ``argv(case_dir)`` gives its arguments; ``call(argv)`` runs it in
    this process (None: subprocess only); ``diagnosis`` picks the lines a user reads to learn what
    went wrong; ``writes`` lists the case-dir prefixes it may change when it succeeds."""

    name: str
    module: str
    template: str
    argv: Callable[[Path], list[str]]
    diagnosis: Callable[[Outcome], list[str]]
    call: Callable[[list[str]], int] | None = None
    writes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Case:
    """One bad (or control) input. ``names``: what one diagnosis line must contain (file, ``row N``,
    ``column 'x'``, the reason). ``args`` are appended to the tool's argv; ``argv`` replaces it
    (``{dir}`` is the case directory). ``subprocess``: run ``python -m`` (faithful exit code and
    stderr) instead of the in-process entry point."""

    id: str
    tool: str
    setup: Setup | None
    exit_code: int
    names: tuple[str, ...]
    args: tuple[str, ...] = ()
    argv: tuple[str, ...] | None = None
    subprocess: bool = False


def snapshot(root: Path) -> dict[str, str]:
    """Every entry under ``root`` (links not followed): a file's sha256 and mode, a link's target."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath, name)
            rel = str(p.relative_to(root))
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = "link " + os.readlink(p)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = f"dir {stat.S_IMODE(st.st_mode):o}"
            else:
                out[rel] = f"file {stat.S_IMODE(st.st_mode):o} {hashlib.sha256(p.read_bytes()).hexdigest()}"
    return out


def argv_for(tool: Tool, case: Case, case_dir: Path) -> list[str]:
    if case.argv is not None:
        return [a.replace("{dir}", str(case_dir)) for a in case.argv]
    return tool.argv(case_dir) + [a.replace("{dir}", str(case_dir)) for a in case.args]


def run(tool: Tool, argv: list[str], case_dir: Path, in_subprocess: bool) -> Outcome:
    """Run the tool with the case directory as the working directory (stray relative writes land in
    the snapshot)."""
    if in_subprocess or tool.call is None:
        proc = subprocess.run([sys.executable, "-m", tool.module, *argv], capture_output=True, text=True,
                              cwd=case_dir, timeout=300, check=False)
        return Outcome(proc.returncode, proc.stdout, proc.stderr)
    out, err = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(case_dir)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code: int | None = tool.call(argv)
            except SystemExit as exc:  # argparse usage errors
                code = exc.code if isinstance(exc.code, int) else 1
            except Exception:
                traceback.print_exc()
                code = None
    finally:
        os.chdir(cwd)
    return Outcome(code, out.getvalue(), err.getvalue())


def verify(tool: Tool, case: Case, outcome: Outcome, before: dict[str, str], after: dict[str, str]) -> str:
    """Assert the case's contract; return the diagnosis line (for the adversarial table)."""
    text = outcome.stdout + outcome.stderr
    assert TRACEBACK not in text, f"{case.id}: traceback\n{text}"
    assert outcome.exit_code == case.exit_code, f"{case.id}: exit {outcome.exit_code}, expected {case.exit_code}\n{text}"
    lines = tool.diagnosis(outcome)
    hits = [ln for ln in lines if all(n in ln for n in case.names)]
    assert hits, f"{case.id}: no diagnosis line names all of {case.names}; lines:\n" + "\n".join(lines)
    if outcome.exit_code == 0:
        before = {k: v for k, v in before.items() if not k.startswith(tool.writes or ("\0",))}
        after = {k: v for k, v in after.items() if not k.startswith(tool.writes or ("\0",))}
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"{case.id}: files changed on disk: {changed[:10]}"
    return hits[0]
