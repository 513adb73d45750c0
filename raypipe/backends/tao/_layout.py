"""Where host paths appear inside the TAO container.

TAO reads every path from its spec, so each file it needs must be bind-mounted and every path
we write into the spec must be the *container* path. One :class:`ContainerLayout` per container
run holds the mounts and translates host → container paths; a path that no mount covers is an
error (or gets its own mount via :meth:`ContainerLayout.expose`), never a silently broken spec.

The backbone weights are staged as TAO stages them: the host file lives in
``<workspace>/augmentation/backbone/`` (or wherever the spec's host path points), it is mounted
read-only at ``/data/pretrained_models/<file name>``, and the spec's
``model.backbone.pretrained_backbone_path`` is that container path. TAO's handoff later finds the
host file again as ``config.backbone_weight_dir/<file name>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from raypipe.tao_interop import BACKBONE_SUFFIXES, WORKSPACE_BACKBONE_DIR, BackboneError

# Fixed container-side roots. TAO's own docs mount data under /data and results under /results;
# keeping those names lets a TAO user read our generated specs like their own.
CONTAINER_WORKSPACE = PurePosixPath("/data/workspace")
CONTAINER_RESULTS = PurePosixPath("/results")
CONTAINER_IMAGES = PurePosixPath("/data/images")
CONTAINER_BASE_CSVS = PurePosixPath("/data/train_base")
CONTAINER_KPI = PurePosixPath("/data/kpi")
CONTAINER_BACKBONE = PurePosixPath("/data/pretrained_models")  # TAO's mount point for staged backbones
CONTAINER_EXTRA = PurePosixPath("/data/extra")


# The file name TAO stages each backbone profile under (a hint for the pre-flight message).
BACKBONE_STAGE_NAMES = {
    "c_radio_v2_vit_base_patch16_224": "c_radio_v2_b.safetensors",
    **{f"vit_{size}_dinov3": f"vit_{size}_dinov3.safetensors"
       for size in ("small", "small_plus", "base", "large", "huge_plus", "7b")},
}


class ContainerPathError(ValueError):
    """A host path the container needs is not covered by any mount."""


@dataclass(frozen=True)
class StagedBackbone:
    """A backbone weights file on the host and where the TAO container sees it."""

    host: Path
    container: PurePosixPath

    @property
    def weight_dir(self) -> Path:
        """``config.backbone_weight_dir`` of the run: where TAO's handoff looks the file up again."""
        return self.host.parent


def find_staged_backbone(spec: Mapping[str, Any], workspace_root: str | Path | None) -> StagedBackbone | None:
    """The staged file of ``model.backbone.pretrained_backbone_path``; None when the spec names none.

    The value may be a host file, or a container path / bare file name whose file is staged in
    ``<workspace>/augmentation/backbone/`` (TAO's own specs say ``/data/pretrained_models/<file>``).
    Raises :class:`BackboneError` when the named file is not staged, is not a local weights file
    (TAO's container hands the value to ``torch.load``: URLs and hub ids fail inside it), or when a
    DINOv3 backbone is not frozen (TAO's DEFT profile trains those frozen only).
    """
    backbone = (spec.get("model") or {}).get("backbone") or {}
    value = backbone.get("pretrained_backbone_path")
    btype = str(backbone.get("type") or "")
    if not isinstance(value, str) or not value.strip():
        return None
    if "dinov3" in btype and not backbone.get("freeze_backbone"):
        raise BackboneError(f"model.backbone.type {btype}: a DINOv3 backbone is trained frozen; set "
                            "model.backbone.freeze_backbone: true")
    named = Path(value).expanduser()
    if named.suffix not in BACKBONE_SUFFIXES or "://" in value:
        raise BackboneError(f"model.backbone.pretrained_backbone_path {value!r} is not a local "
                            f"{'/'.join(BACKBONE_SUFFIXES)} file; the TAO container loads it with torch.load "
                            "(no URL, no hub id): download it on a connected machine and stage it in "
                            f"<workspace>/{WORKSPACE_BACKBONE_DIR}/")
    candidates = [named] if named.is_absolute() else []
    if workspace_root is not None:
        candidates.append(Path(workspace_root).expanduser().resolve() / WORKSPACE_BACKBONE_DIR / named.name)
    for cand in candidates:
        if cand.is_file() and cand.stat().st_size > 0:
            host = cand.resolve()
            return StagedBackbone(host=host, container=CONTAINER_BACKBONE / host.name)
    raise BackboneError(f"model.backbone.pretrained_backbone_path {value}: the weights file is not staged "
                        f"(looked for {' and '.join(str(c) for c in candidates) or 'a host file'}); raypipe "
                        "never downloads weights: put the file there first")


def backbone_blocker(spec: Mapping[str, Any], workspace_root: str | Path | None) -> str | None:
    """Pre-flight for ``backend: tao``: the text of a BLOCKER (``pf.blocker``) when the spec's backbone
    weights are not usable, None when they are staged.

    A TAO spec without backbone weights trains from a random backbone: no error, just a model
    whose held-out quality silently collapses. So no weights is a blocker, not a warning.
    """
    try:
        staged = find_staged_backbone(spec, workspace_root)
    except BackboneError as exc:
        return str(exc)
    if staged is not None:
        return None
    backbone = (spec.get("model") or {}).get("backbone") or {}
    btype = str(backbone.get("type") or "?")
    name = BACKBONE_STAGE_NAMES.get(btype, "<weights file>")
    where = (Path(workspace_root).expanduser().resolve() / WORKSPACE_BACKBONE_DIR / name if workspace_root
             else f"<workspace>/{WORKSPACE_BACKBONE_DIR}/{name}")
    return (f"the spec names no backbone weights for {btype} (model.backbone.pretrained_backbone_path "
            f"is empty): TAO would train it from a random init. Stage the pretrained file at {where} and set "
            f"model.backbone.pretrained_backbone_path: {CONTAINER_BACKBONE / name}")


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
                      image_root: str | Path | None = None) -> ContainerLayout:
        """The standard mounts: workspace (ro), run dir (rw), image root, base CSVs and KPI dir (ro).

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
            for cand in (ws / "images", ws / "kpi" / "images"):  # the legacy image root of older workspaces
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

    @property
    def workspace_root(self) -> Path | None:
        """Host directory mounted at :data:`CONTAINER_WORKSPACE`, if any."""
        return next((m.source for m in self._mounts if m.target == CONTAINER_WORKSPACE), None)

    def stage_backbone(self, spec: Mapping[str, Any]) -> str | None:
        """Mount the spec's staged backbone file read-only at ``/data/pretrained_models/<name>``;
        return that container path for the spec (None when the spec names no weights — pre-flight
        has blocked that already). Raises :class:`BackboneError` when the file is not staged."""
        staged = find_staged_backbone(spec, self.workspace_root)
        if staged is None:
            return None
        return str(self.add(staged.host, staged.container, read_only=True).target)

    def copy(self) -> ContainerLayout:
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
