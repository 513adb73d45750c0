from __future__ import annotations

import pytest

from raypipe.testing import TinyWorkspace, make_tiny_workspace


@pytest.fixture(scope="module")
def tiny_ws(tmp_path_factory: pytest.TempPathFactory) -> TinyWorkspace:
    """32×32, 2 lights, 24 train / 12 validation rows: enough to train 1–2 epochs in about a second."""
    return make_tiny_workspace(tmp_path_factory.mktemp("tiny") / "ws", n_train=24, n_val=12, size=32)
