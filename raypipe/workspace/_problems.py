"""What a workspace check reports: problems that name the file, the 1-based row and the column."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One finding. ``row`` is the 1-based *data* row (the header is not counted, so a text editor
    shows it on line ``row + 1``); None for a file-level finding. ``severity``: error | warning."""

    file: str
    row: int | None
    column: str | None
    message: str
    severity: str = "error"

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def __str__(self) -> str:
        where = []
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column is not None:
            # in a spec the "column" is a dotted key (dataset.classify.input_map)
            kind = "key" if self.file.endswith((".yaml", ".yml")) else "column"
            where.append(f"{kind} '{self.column}'")
        prefix = f"{self.file}: " + (", ".join(where) + ": " if where else "")
        return prefix + self.message


class WorkspaceError(ValueError):
    """The workspace is not usable; ``problems`` lists every error found (not only the first)."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        lines = [str(p) for p in self.problems]
        head = f"{len(lines)} problem{'s' if len(lines) != 1 else ''} in the workspace:"
        super().__init__("\n".join([head, *("  " + ln for ln in lines)]))


class Collector:
    """Collects problems, listing at most ``limit`` per (file, check, column) and counting the rest.

    A wrong image root on a 100k-row pool is one mistake, not 400k lines of output: the first few
    rows are named, then one line says how many more rows share the problem.
    """

    def __init__(self, limit: int = 20) -> None:
        self.limit = limit
        self.problems: list[Problem] = []
        self._seen: Counter[tuple[str, str, str | None, str]] = Counter()

    def add(self, problem: Problem, check: str = "") -> None:
        key = (problem.file, check, problem.column, problem.severity)
        self._seen[key] += 1
        if self._seen[key] <= self.limit:
            self.problems.append(problem)

    def extend(self, problems: list[Problem]) -> None:
        self.problems.extend(problems)

    def finish(self) -> list[Problem]:
        """The problems grouped by file (in order of first report), file-level first, then by row;
        each capped check's 'N more' line closes its file's group."""
        files: dict[str, int] = {}
        for p in self.problems:
            files.setdefault(p.file, len(files))
        more: dict[str, list[Problem]] = {}
        for (file, check, column, severity), n in self._seen.items():
            if n > self.limit:
                files.setdefault(file, len(files))
                more.setdefault(file, []).append(Problem(
                    file, None, column, f"... and {n - self.limit:,} more rows with the same problem ({check})",
                    severity))
        ordered = sorted(self.problems, key=lambda p: (files[p.file], p.row if p.row is not None else 0))
        out: list[Problem] = []
        for file in files:
            out.extend(p for p in ordered if p.file == file)
            out.extend(more.get(file, []))
        return out
