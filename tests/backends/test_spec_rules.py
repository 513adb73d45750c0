"""Spec value rules: every bad value of a spec at once, with its dotted key, for each backend."""

from __future__ import annotations

import pytest

from raypipe.backends import spec_problems, spec_value_problem
from raypipe.backends.builtin import SpecValueError
from raypipe.backends.builtin._config import train_from_spec
from raypipe.spec import nest_dotted
from raypipe.testing import tiny_spec

SPEC = tiny_spec(("a", "b"), 32)
AUG = "dataset.classify.augmentation_config"


def _keys(spec: dict, backend: str = "builtin") -> dict[str, str]:
    return {p.key: p.problem for p in spec_problems(backend, spec)}


def test_a_valid_spec_has_no_problem_and_yaml_strings_are_numbers() -> None:
    assert spec_problems("builtin", SPEC) == []
    # PyYAML reads 1e-4 as a string; TAO reads it as a float: both are a learning rate.
    assert spec_problems("builtin", nest_dotted({"train.optim.lr": "1e-4"}, SPEC)) == []


def test_every_bad_value_is_reported_with_its_key() -> None:
    bad = nest_dotted({"train.optim.lr": "fast", "train.classify.cls_weight": "heavy",
                       f"{AUG}.rgb_input_std": [0, 0, 0], "train.num_epochs": -1, "dataset.classify.batch_size": 0,
                       "train.optim.momentum": 1.0, "dataset.classify.fpratio_sampling": -0.5,
                       "model.backbone.freeze_backbone": "yes", "train.num_epochs_extra": 3}, SPEC)
    problems = _keys(bad)
    assert set(problems) == {"train.optim.lr", "train.classify.cls_weight", f"{AUG}.rgb_input_std",
                             "train.num_epochs", "dataset.classify.batch_size", "train.optim.momentum",
                             "dataset.classify.fpratio_sampling", "model.backbone.freeze_backbone"}
    assert "'fast'" in problems["train.optim.lr"]
    assert "> 0" in problems[f"{AUG}.rgb_input_std"]
    assert "got -1" in problems["train.num_epochs"]


@pytest.mark.parametrize(("key", "value"), [("train.num_epochs", 2.5), ("train.num_epochs", True),
                                            ("train.optim.lr", float("nan")), ("train.optim.lr", 0),
                                            ("train.classify.cls_weight", [1.0]), (f"{AUG}.rgb_input_mean", [0, 1])])
def test_values_no_training_can_use(key: str, value: object) -> None:
    assert key in _keys(nest_dotted({key: value}, SPEC))


def test_builtin_only_rules_do_not_bind_tao() -> None:
    spec = nest_dotted({"train.classify.loss": "focal", "train.optim.optim": "lamb",
                        f"{AUG}.random_rotate.angle_list": [45]}, SPEC)
    assert set(_keys(spec, "builtin")) == {"train.classify.loss", "train.optim.optim", f"{AUG}.random_rotate.angle_list"}
    assert _keys(spec, "tao") == {}


def test_readers_checks_are_reported_when_the_rules_pass() -> None:
    spec = nest_dotted({"dataset.classify.num_input": 3}, SPEC)
    problems = spec_problems("builtin", spec)
    assert [p.key for p in problems] == ["dataset.classify.num_input"]
    assert "input_map" in problems[0].problem


def test_one_value_of_a_swept_key() -> None:
    assert spec_value_problem("builtin", "train.optim.momentum", 1.5)
    assert spec_value_problem("tao", "train.classify.cls_weight[1]", 0.0)
    assert spec_value_problem("builtin", "train.optim.lr", 1e-3) is None
    assert spec_value_problem("builtin", "no.rule.here", "anything") is None


def test_the_training_task_refuses_what_the_gate_would() -> None:
    with pytest.raises(SpecValueError, match="train.optim.lr"):
        train_from_spec(nest_dotted({"train.optim.lr": "fast"}, SPEC))
