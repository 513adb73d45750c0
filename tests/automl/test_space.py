"""Search-space parsing and validation: bad spaces are refused before Ray, with the key named."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from raypipe.automl import SearchSpaceError, parse_search_space, validate_search_space
from raypipe.automl._space import centre_point, grid_values, tune_param_space
from raypipe.config import package_defaults
from raypipe.spec import flatten

BASE: dict[str, Any] = {
    "train": {"num_epochs": 4, "classify": {"cls_weight": [1.0, 10.0]},
              "optim": {"lr": 5e-4, "weight_decay": 0.01, "momentum": 0.9}},
    "model": {"classify": {"learnable_difference_modules": 4, "embed_dec": 30}},
    "dataset": {"classify": {"batch_size": 32, "fpratio_sampling": 0.2,
                             "input_map": {"LowAngleLight": 0, "SolderLight": 1}}},
}
DEFAULT_SPACE = package_defaults()["automl"]["search_space"]
# The parsing tests pin their own lr range, so they don't move when the package default does.
SPACE = {**DEFAULT_SPACE, "train.optim.lr": {"valid_min": 5e-6, "valid_max": 5e-4, "log": True}}


def test_default_space_parses_with_spec_defaults() -> None:
    params = {p.key: p for p in parse_search_space(DEFAULT_SPACE, BASE)}
    assert list(params) == list(DEFAULT_SPACE)
    lr = params["train.optim.lr"]
    want = DEFAULT_SPACE["train.optim.lr"]
    assert (lr.kind, lr.low, lr.high, lr.log) == ("float", want["valid_min"], want["valid_max"], True)
    assert params["train.classify.cls_weight[1]"].log and params["train.classify.cls_weight[1]"].kind == "float"
    ldm = params["model.classify.learnable_difference_modules"]
    assert (ldm.kind, ldm.low, ldm.high) == ("int", 2, 8)
    assert params["train.optim.momentum"].log is False


@pytest.mark.parametrize("space, message", [
    ({"train.optim.lr": {"valid_min": 1e-3, "valid_max": 1e-4}}, r"'train\.optim\.lr'.*valid_min 0\.001 > valid_max"),
    ({"train.optim.lrr": {"valid_min": 1e-4, "valid_max": 1e-3}},
     r"'train\.optim\.lrr'.*unknown key.*did you mean 'train\.optim\.lr'"),
    ({"train.classify.cls_weight[2]": {"valid_min": 1.0, "valid_max": 2.0}}, r"'train\.classify\.cls_weight\[2\]'.*unknown key"),
    ({"train.optim.weight_decay": {"valid_min": 0.0, "valid_max": 0.1, "log": True}},
     r"'train\.optim\.weight_decay'.*log scale needs valid_min > 0"),
    ({"train.optim.lr": {"valid_min": 1e-4}}, r"'train\.optim\.lr'.*missing valid_max"),
    ({"train.optim.lr": {"valid_min": "a", "valid_max": 1.0}}, r"'train\.optim\.lr'.*valid_min must be a finite number"),
    ({"train.optim.lr": {"valid_min": 1e-4, "valid_max": 1e-3, "step": 2}}, r"'train\.optim\.lr'.*unknown field"),
    ({"train.optim.lr": [1e-4, 1e-3]}, r"'train\.optim\.lr'.*expected a mapping"),
    ({"train.optim.lr": {"valid_options": []}}, r"'train\.optim\.lr'.*non-empty list"),
    ({"model.classify.learnable_difference_modules": {"valid_min": 2.5, "valid_max": 8, "type": "int"}},
     r"'model\.classify\.learnable_difference_modules'.*whole-number"),
    ({"train..lr": {"valid_min": 1e-4, "valid_max": 1e-3}}, r"'train\.\.lr'.*malformed"),
])
def test_invalid_spaces_are_refused_with_the_key_named(space: dict[str, Any], message: str) -> None:
    with pytest.raises(SearchSpaceError, match=message):
        validate_search_space(space, BASE, pinned_arch=None)


def test_architecture_keys_are_refused_when_warm_starting() -> None:
    arch = {"model.classify.learnable_difference_modules": 3}
    space = {"model.classify.learnable_difference_modules": {"valid_min": 2, "valid_max": 8}}
    validate_search_space(space, BASE, pinned_arch=None)  # a fresh sweep may vary the architecture
    with pytest.raises(SearchSpaceError, match=r"learnable_difference_modules.*pinned.*= 3"):
        validate_search_space(space, BASE, pinned_arch=arch)
    with pytest.raises(SearchSpaceError, match=r"input_map\.SolderLight.*dataset\.classify\.input_map"):
        validate_search_space({"dataset.classify.input_map.SolderLight": {"valid_options": [1, 2]}}, BASE,
                              pinned_arch=arch)


def test_keys_pinned_by_spec_overrides_are_refused() -> None:
    with pytest.raises(SearchSpaceError, match=r"'train\.num_epochs'.*pinned by spec_overrides"):
        validate_search_space({"train.num_epochs": {"valid_min": 1, "valid_max": 9}}, BASE, pinned_arch=None,
                              pinned={"train.num_epochs": 4})


def test_int_type_is_inferred_from_bounds_and_spec_value() -> None:
    (p,) = parse_search_space({"model.classify.embed_dec": {"valid_min": 8, "valid_max": 32}}, BASE)
    assert p.kind == "int"
    (q,) = parse_search_space({"train.classify.cls_weight[1]": {"valid_min": 2, "valid_max": 60}}, BASE)
    assert q.kind == "float"  # the spec holds a float there
    (r,) = parse_search_space({"train.optim.lr": {"valid_options": [1e-4, 3e-4]}}, BASE)
    assert r.kind == "choice" and r.options == (1e-4, 3e-4)


def test_tune_space_keeps_tao_bounds_inclusive_for_optuna() -> None:
    from ray.tune.search.optuna import OptunaSearch

    params = parse_search_space(SPACE, BASE)
    dists = OptunaSearch.convert_search_space(tune_param_space(params))
    ldm = dists["model.classify.learnable_difference_modules"]
    assert (ldm.low, ldm.high, ldm.log) == (2, 8, False)
    lr = dists["train.optim.lr"]
    assert (lr.low, lr.high, lr.log) == (5e-6, 5e-4, True)
    assert dists["train.classify.cls_weight[1]"].log


def test_centre_point_reads_phase1_best_rec_specs() -> None:
    params = parse_search_space(SPACE, BASE)
    best_specs = {"train": {"optim": {"lr": 2e-4, "weight_decay": 5.0}, "classify": {"cls_weight": [1.0, 17.5]}},
                  "model": {"classify": {"learnable_difference_modules": 6}}}
    point = centre_point(params, flatten(best_specs), BASE)
    assert point["train.optim.lr"] == 2e-4
    assert point["train.classify.cls_weight[1]"] == 17.5  # read out of the list form
    assert point["train.optim.weight_decay"] == 0.1  # clipped into the range
    assert point["train.optim.momentum"] == 0.9  # absent from the centre: the base spec's value
    assert point["model.classify.learnable_difference_modules"] == 6
    assert centre_point(params, {"train.classify.cls_weight[1]": 30.0}, BASE)["train.classify.cls_weight[1]"] == 30.0


@pytest.mark.parametrize("algorithm", ["bayesian", "random"])
def test_a_centred_sweep_does_not_draw_its_centre_again(algorithm: str, tmp_path) -> None:
    """Phase 3 shares Phase 1's seed and starts at Phase 1's winner: its sampler must not replay
    Phase 1's draws, or its next trial repeats the centre (seen: two identical Phase 3 trials)."""
    from raypipe.automl import SweepConfig
    from raypipe.automl._sweep import _search
    from raypipe.config import load_config

    run = load_config(None, [f"automl.algorithm={algorithm}", "phase1.automl_max_recommendations=3",
                             "phase3.automl_max_recommendations=4"])

    def suggestions(phase: str, points: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
        cfg = SweepConfig.from_config(run, phase)
        params = parse_search_space(cfg.search_space, BASE)
        centred = [centre_point(params, p, BASE) for p in points]
        space, searcher, _, _ = _search(cfg, params, centred, 1, tmp_path / f"{phase}.jsonl")
        searcher.set_search_properties("score", "min", space)
        drawn = []
        for i in range(n):  # one at a time, each told before the next (suggestions come in batches)
            drawn.append(searcher.suggest(f"{phase}_{i}"))
            searcher.on_trial_complete(f"{phase}_{i}", {"score": float(i)})
        return drawn

    for winner in suggestions("phase1", [], 3):  # whichever Phase 1 trial wins
        first, *rest = suggestions("phase3", [winner], 4)
        assert first == {k: v for k, v in winner.items() if k in first}  # the centre comes first ...
        assert all(p != first for p in rest)  # ... and only once


def test_grid_values() -> None:
    params = {p.key: p for p in parse_search_space(SPACE, copy.deepcopy(BASE))}
    assert grid_values(params["model.classify.learnable_difference_modules"]) == list(range(2, 9))
    assert grid_values(params["train.optim.lr"]) == [5e-6, 5e-4]
