"""The built-in backend passes the shared trainer conformance suite."""

from __future__ import annotations

from raypipe.backends.builtin import BuiltinTrainer
from raypipe.testing.trainer_conformance import TrainerConformance


class TestBuiltinConformance(TrainerConformance):
    def make_trainer(self) -> BuiltinTrainer:
        return BuiltinTrainer(device="cpu", num_threads=1)
