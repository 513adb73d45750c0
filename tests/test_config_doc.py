"""``docs/config.md`` is generated from ``raypipe/defaults.yaml``: it must be in sync and complete."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

import yaml

from tests.conftest import REPO


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("config_doc", REPO / "tools" / "config_doc.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_committed_config_doc_is_in_sync() -> None:
    # When this fails: run `python tools/config_doc.py` and commit docs/config.md.
    assert _tool().main(["--check"]) == 0


def test_every_key_and_its_comment_is_documented() -> None:
    tool = _tool()
    text = (REPO / "raypipe" / "defaults.yaml").read_text(encoding="utf-8")
    doc = tool.render(text)
    defaults = yaml.safe_load(text)
    for key, value in defaults.items():
        assert f"`{key}`" in doc, key
        for sub in value if isinstance(value, dict) else ():
            assert f"| `{key}.{sub}` |" in doc, f"{key}.{sub}"
    _, entries = tool.parse(text)
    by_path = {e.path: e for e in entries}
    # a continuation comment line belongs to the key above it
    assert "fine-tune at this fraction" in " ".join(by_path["phase2.finetune_lr_scale"].comment)
    assert "(unless train_overrides sets train.optim.lr)" in " ".join(by_path["phase2.finetune_lr_scale"].comment)
    assert by_path["automl.resources_per_trial"].default == "{cpu: 1, gpu: 0}"
    assert by_path["phase2.metric_contract.constraints"].default.startswith("[{name: recall_pct")
    # a changed comment changes the page (the sync test would catch an edit of defaults.yaml)
    assert tool.render(text.replace("retries of a crashing trial", "retries per trial")) != doc
