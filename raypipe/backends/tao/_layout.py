"""Where host paths appear inside the TAO container (SPEC §10).

TAO reads every path from its spec, so each file it needs must be bind-mounted and every path
we write into the spec must be the *container* path. One :class:`ContainerLayout` per container
run holds the mounts and translates host → container paths; a path that no mount covers is an
error (or gets its own mount via :meth:`ContainerLayout.expose`), never a silently broken spec.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

# Fixed container-side roots. TAO's own docs mount data under /data and results under /results;
# keeping those names lets a TAO user read our generated specs like their own.
CONTAINER_WORKSPACE = PurePosixPath("/data/workspace")
CONTAINER_RESULTS = PurePosixPath("/results")
CONTAINER_IMAGES = PurePosixPath("/data/images")
CONTAINER_BASE_CSVS = PurePosixPath("/data/train_base")
CONTAINER_KPI = PurePosixPath("/data/kpi")
CONTAINER_BACKBONE = PurePosixPath("/data/backbone")
CONTAINER_EXTRA = PurePosixPath("/data/extra")


class ContainerPathError(ValueError):
    """A host path the container needs is not covered by any mount."""


@dataclass(frozen=True)
class MountPoint:
    source: Path  # absolute, resolved host path (file or directory)
    target: PurePosixPath  # container path
    read_only: bool

    def to_docker(self) -> Any:
        """The ``docker.types.Mount`` for ``containers.run(mounts=[...])`` (a bind mount)."""
        from docker.types import Mount

        return Mount(target=str(self.target), source=str(self.source), type="bind",
                     read_only=self.read_only)

    def describe(self) -> str:
        return f"{self.source} -> {self.target} ({'ro' if self.read_only else 'rw'})"


def _resolve(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


class ContainerLayout:
    """The mounts of one container run and the host → container path translation."""

    def __init__(self, mounts: list[MountPoint] | None = None) -> None:
        self._mounts: list[MountPoint] = list(mounts or [])

    @classmethod
    def for_workspace(cls, workspace_root: str | Path | None, run_dir: str | Path | None,
                      image_root: str | Path | None = None) -> "ContainerLayout":
        """The SPEC §10 mounts: workspace (ro), run dir (rw), image root, base CSVs and KPI dir (ro).

        Only directories that exist are mounted (Docker refuses a bind mount of a missing source).
        The image root, base CSVs and KPI dir usually lie inside the workspace too; mounting them
        at their own fixed paths keeps generated specs readable and matches TAO's examples.
        """
        layout = cls()
        ws = _resolve(workspace_root) if workspace_root is not None else None
        if ws is not None:
            if not ws.is_dir():
                raise ContainerPathError(f"{ws}: workspace directory not found")
            layout.add(ws, CONTAINER_WORKSPACE, read_only=True)
        if run_dir is not None:
            rd = _resolve(run_dir)
            rd.mkdir(parents=True, exist_ok=True)
            layout.add(rd, CONTAINER_RESULTS, read_only=False)
        if image_root is None and ws is not None:
            for cand in (ws / "images", ws / "kpi" / "images"):  # SPEC §2: legacy fallback
                if cand.is_dir():
                    image_root = cand
                    break
        if image_root is not None:
            img = _resolve(image_root)
            if not img.is_dir():
                raise ContainerPathError(f"{img}: image root directory not found")
            layout.add(img, CONTAINER_IMAGES, read_only=True)
        if ws is not None:
            for host, target in ((ws / "train" / "base", CONTAINER_BASE_CSVS), (ws / "kpi", CONTAINER_KPI)):
                if host.is_dir():
                    layout.add(host, target, read_only=True)
        return layout

    @property
    def mounts(self) -> list[MountPoint]:
        return list(self._mounts)

    def copy(self) -> "ContainerLayout":
        return ContainerLayout(self._mounts)

    def add(self, source: str | Path, target: str | PurePosixPath, *, read_only: bool) -> MountPoint:
        mount = MountPoint(_resolve(source), PurePosixPath(target), read_only)
        for existing in self._mounts:
            if existing.target == mount.target:
                if existing == mount:
                    return existing
                raise ContainerPathError(f"two mounts at container path {mount.target}: "
                                         f"{existing.source} and {mount.source}")
        self._mounts.append(mount)
        return mount

    def container_path(self, host: str | Path, *, writable: bool = False) -> str:
        """Container path of ``host`` through the most specific mount covering it.

        ``writable`` restricts the choice to read-write mounts (outputs must never be resolved
        through the read-only workspace mount even though the run dir lies inside the workspace).
        """
        path = _resolve(host)
        best: MountPoint | None = None
        for mount in self._mounts:
            if writable and mount.read_only:
                continue
            if path == mount.source or mount.source in path.parents:
                if best is None or len(mount.source.parts) > len(best.source.parts):
                    best = mount
        if best is None:
            kind = "read-write " if writable else ""
            raise ContainerPathError(
                f"{path} is outside every {kind}directory mounted into the TAO container "
                f"({', '.join(m.describe() for m in self._mounts) or 'no mounts'})")
        rel = path.relative_to(best.source)
        return str(best.target / PurePosixPath(*rel.parts)) if rel.parts else str(best.target)

    def expose(self, host: str | Path, *, writable: bool = False, target: str | PurePosixPath | None = None) -> str:
        """Container path of ``host``, adding a bind mount of it when no mount covers it yet."""
        path = _resolve(host)
        try:
            return self.container_path(path, writable=writable)
        except ContainerPathError:
            pass
        if writable:
            path.mkdir(parents=True, exist_ok=True)
        elif not path.exists():
            raise ContainerPathError(f"{path}: not found (needed inside the TAO container)")
        if target is None:
            n = sum(1 for m in self._mounts if CONTAINER_EXTRA in m.target.parents)
            target = CONTAINER_EXTRA / f"{n}_{path.name}"
        self.add(path, target, read_only=not writable)
        return str(PurePosixPath(target))

    def docker_mounts(self) -> list[Any]:
        return [m.to_docker() for m in self._mounts]

    def describe(self) -> list[str]:
        return [m.describe() for m in self._mounts]
