"""Test helpers that ship with the package: a tiny synthetic workspace and the conformance suites.

:mod:`raypipe.testing.trainer_conformance` holds every trainer backend to one contract;
:mod:`raypipe.testing.stage_conformance` every DEFT stage. Importing either needs pytest (a dev
dependency).
"""

from raypipe.testing._tiny import DEFECTS, TinyWorkspace, make_tiny_workspace, tiny_spec

__all__ = ["DEFECTS", "TinyWorkspace", "make_tiny_workspace", "tiny_spec"]
