"""Test helpers that ship with the package: a tiny synthetic workspace and the trainer conformance suite.

Importing :mod:`raypipe.testing.trainer_conformance` needs pytest (a dev dependency).
"""

from raypipe.testing._tiny import DEFECTS, TinyWorkspace, make_tiny_workspace, tiny_spec

__all__ = ["DEFECTS", "TinyWorkspace", "make_tiny_workspace", "tiny_spec"]
