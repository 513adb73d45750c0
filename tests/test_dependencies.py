"""The installed packages satisfy the bounds ``pyproject.toml`` declares (ray's upper bound included)."""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _requirements() -> list[Requirement]:
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    return [Requirement(r) for r in [*project["dependencies"], *project["optional-dependencies"]["dev"]]]


def test_ray_has_an_upper_bound() -> None:
    ray = next(r for r in _requirements() if r.name == "ray")
    assert any(spec.operator in ("<", "<=", "~=", "==") for spec in ray.specifier), str(ray)


@pytest.mark.parametrize("req", _requirements(), ids=lambda r: r.name)
def test_installed_version_satisfies_the_declared_bound(req: Requirement) -> None:
    if req.marker is not None and not req.marker.evaluate():
        return  # not for this interpreter (e.g. tomli below Python 3.11)
    try:
        installed = metadata.version(req.name)
    except metadata.PackageNotFoundError:
        pytest.fail(f"{req.name} is declared in pyproject.toml but not installed")
    assert req.specifier.contains(installed, prereleases=True), f"{req.name} {installed} does not satisfy '{req}'"
