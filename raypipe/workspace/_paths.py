"""Path rules: every image path (directory and file) resolves inside its root; one coordinate system for keys."""

from __future__ import annotations

import os
from pathlib import Path


class PathEscapeError(ValueError):
    """A path resolves outside the root it must stay in (``..`` escape, absolute path elsewhere, symlink)."""


def real(path: str | os.PathLike[str]) -> str:
    """Absolute, symlink-resolved path (``os.path.realpath``; missing parts are kept lexically)."""
    return os.path.realpath(os.fspath(path))


def is_within(resolved: str, resolved_root: str) -> bool:
    return resolved == resolved_root or resolved.startswith(resolved_root.rstrip(os.sep) + os.sep)


def confine(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> Path:
    """Resolve ``path`` (relative paths are taken relative to ``root``) and return it; raise
    :class:`PathEscapeError` if it lands outside ``root``.

    Resolving (not string checks) is what catches ``a/../../x``, absolute paths elsewhere and
    symlinks pointing out of the root alike.

    >>> confine("b1/cap", "/ws/images")            # doctest: +SKIP
    PosixPath('/ws/images/b1/cap')
    """
    root_real = real(root)
    p = Path(path)
    resolved = real(p if p.is_absolute() else Path(root) / p)
    if not is_within(resolved, root_real):
        raise PathEscapeError(f"'{os.fspath(path)}' resolves to {resolved}, outside {root_real}")
    return Path(resolved)


def display(path: str | os.PathLike[str], workspace_root: str | os.PathLike[str]) -> str:
    """A path as the user wrote the workspace: relative to the workspace root when inside it."""
    norm = os.path.normpath(os.path.abspath(os.fspath(path)))
    root = os.path.normpath(os.path.abspath(os.fspath(workspace_root)))
    if is_within(norm, root):
        return os.path.relpath(norm, root)
    return norm


class DirIndex:
    """File names per directory, listed once: existence checks for 100k-row CSVs without a stat storm.

    The same listing says which names are symlinks (``scandir`` knows without a ``stat``), so only
    those few need resolving to confine them to the image root.
    """

    def __init__(self) -> None:
        self._files: dict[str, frozenset[str] | None] = {}
        self._links: dict[str, frozenset[str]] = {}

    def _list(self, directory: str) -> None:
        try:
            with os.scandir(directory) as it:
                entries = list(it)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            self._files[directory], self._links[directory] = None, frozenset()
            return
        self._files[directory] = frozenset(e.name for e in entries if e.is_file())
        self._links[directory] = frozenset(e.name for e in entries if e.is_symlink())

    def files(self, directory: str) -> frozenset[str] | None:
        """Names of the regular files in ``directory`` (symlinks to files included); None if it is
        not a readable directory."""
        if directory not in self._files:
            self._list(directory)
        return self._files[directory]

    def links(self, directory: str) -> frozenset[str]:
        """Names in ``directory`` that are symlinks (to anything, dangling ones included)."""
        if directory not in self._links:
            self._list(directory)
        return self._links[directory]
