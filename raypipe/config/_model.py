"""The typed run config: one frozen tree, validated once when it is loaded.

Pydantic v2 models rather than frozen dataclasses: the tree is built from untyped YAML layers, and
pydantic gives per-field type, range and enum checks with the *location* of each failure, which
the loader turns into "<source>: <dotted.key>: <problem>" messages. Dataclasses would need a
hand-written coercion and error-location layer for the same result. Every node is frozen and
refuses unknown keys (``extra="forbid"``); strict mode keeps YAML's types honest (``seed: "42"``
or ``max_iterations: 2.5`` are errors, not silent conversions).

The package defaults (``raypipe/defaults.yaml``) are the only source of default values: the
models declare no defaults of their own, so a key missing from the merged layers is an error
instead of a second, silently different default.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Mapping, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_Self = TypeVar("_Self", bound="Node")

PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
_SHM = re.compile(r"^\d+[bkmg]?$", re.IGNORECASE)
_UIDGID = re.compile(r"^\d+(:\d+)?$")

class KeyProblem(ValueError):
    """A rule of a node failed at ``key`` (dotted, relative to the node): the loader names that key.

    Raised by node-level validators (cross-key rules), whose failures pydantic would otherwise
    locate at the node itself.
    """

    def __init__(self, key: str, problem: str, *, related: tuple[str, ...] = ()) -> None:
        self.key = key
        self.problem = problem
        self.related = related  # the other keys of the rule (relative too): the error blames the latest layer
        super().__init__(problem)


class Node(BaseModel):
    """A config node: frozen, no unknown keys, strict types."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    def replace(self: _Self, **updates: Any) -> _Self:
        """A validated copy with ``updates`` applied (``model_copy`` would skip validation)."""
        data = self.model_dump()
        data.update({k: v.model_dump() if isinstance(v, BaseModel) else v for k, v in updates.items()})
        return type(self).model_validate(data)


def _check_dotted_keys(value: dict[str, Any]) -> dict[str, Any]:
    """Keys of a spec-override mapping must be TAO dotted keys (``train.classify.cls_weight[1]``)."""
    from raypipe.spec import SpecError, parse_dotted

    for key in value:
        try:
            parse_dotted(str(key))
        except SpecError as exc:
            raise ValueError(str(exc)) from None
    return value


class Resources(Node):
    """Ray resources of one task or trial (``gpu`` may be fractional: tasks then share a GPU)."""

    cpu: NonNegativeFloat
    gpu: NonNegativeFloat

    @model_validator(mode="after")
    def _usable(self) -> Resources:
        if self.cpu <= 0 and self.gpu <= 0:
            raise ValueError("needs some cpu or gpu")
        if self.gpu > 1 and self.gpu != int(self.gpu):
            raise KeyProblem("gpu", f"fractions are for sharing one GPU; above 1 use a whole number, got {self.gpu:g}")
        return self

    def as_dict(self) -> dict[str, float]:
        return {"cpu": float(self.cpu), "gpu": float(self.gpu)}


class AutoMLConfig(Node):
    """Shared by Phase 1 and Phase 3: *what* to try; placement is only the per-trial resource request."""

    algorithm: Literal["bayesian", "random", "asha", "grid"]
    metric: Literal["far_pct", "val_loss"]
    val_loss_top_k: PositiveInt
    n_startup_trials: NonNegativeInt | None
    noise_margin: NonNegativeFloat | None
    max_failures: NonNegativeInt
    max_concurrent_trials: PositiveInt
    reuse_actors: bool
    resources_per_trial: Resources
    search_space: dict[str, dict[str, Any]]

    @field_validator("search_space")
    @classmethod
    def _space(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        # Entry syntax only: whether a key exists in the spec is checked against the spec (pre-flight).
        from raypipe.automl._space import SearchSpaceError, parse_entry
        from raypipe.spec import SpecError, parse_dotted

        for key, entry in value.items():
            try:
                parse_dotted(key)
                parse_entry(key, entry)
            except (SearchSpaceError, SpecError) as exc:
                raise ValueError(str(exc)) from None
        return value


class Phase1Config(Node):
    enabled: bool
    automl_max_recommendations: PositiveInt
    pretrained_model_path: str | None


class Phase3Config(Node):
    enabled: bool
    automl_max_recommendations: PositiveInt


class Phase2Resources(Node):
    train: Resources  # training, KPI inference and mining embeddings
    cpu_stage: Resources  # rca, routing, sdg, merge


class RcaConfig(Node):
    min_recall: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
    top_k_per_label: PositiveInt


class SdgConfig(Node):
    kind: str
    num_SDG: NonNegativeInt  # TAO's key, spelled as TAO spells it
    supported_labels: list[str] | None
    synthesise_below_pool_rows: PositiveInt | None  # None: synthesise every supported label
    recipes: dict[str, str]

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        # The anomalygen stage (TAO's name) runs a pluggable SDG backend: these are the ones that exist.
        from raypipe.deft.stages.anomalygen import SDG_KINDS

        if value == "anomalygen":
            raise ValueError("'anomalygen' (NVIDIA's AnomalyGen container) is not wired into the loop in this "
                             f"version; the anomalygen stage runs one of {sorted(SDG_KINDS)}")
        if value not in SDG_KINDS:
            raise ValueError(f"'{value}' is not an SDG kind; expected one of {sorted(SDG_KINDS)}")
        return value

    @field_validator("recipes")
    @classmethod
    def _recipes(cls, value: dict[str, str]) -> dict[str, str]:
        from raypipe.deft._recipes import RECIPES

        bad = {label: name for label, name in value.items() if name not in RECIPES}
        if bad:
            raise ValueError(f"unknown recipe(s) {bad}; known: {', '.join(RECIPES)}")
        return value


class EmbeddingCacheConfig(Node):
    """Pool embeddings cached by image content and embedder version (never inside the workspace)."""

    enabled: bool
    dir: str | None  # None: the user cache dir (``~/.cache/raypipe/embeddings``)


class MiningFilterConfig(Node):
    top_k_per_target: PositiveInt
    min_similarity: Annotated[float, Field(ge=-1, le=1, allow_inf_nan=False)]  # centred cosine
    embedder: Literal["imagenet", "difference", "pixels", "model"]
    label_mode: Literal["label", "class", "none"]
    cache: EmbeddingCacheConfig
    workers: NonNegativeInt  # parallel Ray embedding tasks (0: in the loop's driver)


class Phase2Config(Node):
    """The DEFT loop."""

    max_iterations: PositiveInt
    metric_contract: dict[str, Any]
    train_overrides: dict[str, Any]
    finetune_lr_scale: PositiveFloat
    resources: Phase2Resources
    rca: RcaConfig
    sdg: SdgConfig
    mining_filter: MiningFilterConfig

    @field_validator("metric_contract")
    @classmethod
    def _contract(cls, value: dict[str, Any]) -> dict[str, Any]:
        from raypipe.metrics import MetricContract

        try:
            MetricContract.from_dict(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(str(exc)) from None
        return value

    _train_overrides = field_validator("train_overrides")(_check_dotted_keys)

    @property
    def contract(self) -> Any:
        """The :class:`raypipe.metrics.MetricContract` of the KPI."""
        from raypipe.metrics import MetricContract

        return MetricContract.from_dict(self.metric_contract)


class PreflightConfig(Node):
    probe: bool
    t_trial_s: PositiveFloat
    t_iter_s: PositiveFloat


class TrackingConfig(Node):
    enabled: bool
    tracking_uri: str | None
    experiment_name: Annotated[str, Field(min_length=1)]
    registered_model_name: Annotated[str, Field(min_length=1)]


class ExecutionPolicy(Node):
    """What the run may do on the network, in TAO's words (``network_mode``) plus raypipe's two switches.

    ``network_mode`` null means "not set by the user": the run is air-gapped and the state records
    the package default as the mode's source (TAO's ``activation_source``).
    """

    network_mode: Literal["airgap", "network-enabled"] | None
    allow_container_pull: bool
    allow_registry_login: bool

    @field_validator("network_mode", mode="before")
    @classmethod
    def _tao_word(cls, value: Any) -> Any:
        # TAO's tools read any other word (raypipe's old "offline") as network-enabled: refuse it,
        # naming the word that was meant.
        from raypipe.tao_interop import PolicyError, network_mode_of

        if value is None:
            return None
        try:
            return network_mode_of(value)
        except PolicyError as exc:
            raise ValueError(str(exc).removeprefix("execution_policy.network_mode: ")) from None

    @model_validator(mode="after")
    def _consistent(self) -> ExecutionPolicy:
        asked = [k for k in ("allow_container_pull", "allow_registry_login") if getattr(self, k)]
        if asked and self.network_mode != "network-enabled":
            raise KeyProblem(asked[0], "an air-gapped run pulls no image and logs into no registry; set it false, "
                             "or execution_policy.network_mode: network-enabled", related=("network_mode",))
        return self

    def tao_policy(self, *, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
        """``deft_state.json``'s ``execution_policy`` for a new run (TAO's nine keys).

        ``AIR_GAPPED=1`` in ``environ`` (default: this process's environment) forces ``airgap``;
        :class:`raypipe.tao_interop.PolicyError` when it contradicts ``network-enabled``.
        """
        from raypipe import tao_interop as ti

        mode, source = ti.resolve_network_mode(self.network_mode, source="config:execution_policy.network_mode",
                                               environ=environ)
        return ti.execution_policy(mode, activation_source=source, allow_container_pull=self.allow_container_pull,
                                   allow_registry_login=self.allow_registry_login)


class TaoConfig(Node):
    """The TAO container backend; the fields are :class:`raypipe.backends.tao.TaoTrainer`'s options."""

    image: Annotated[str, Field(min_length=1)]
    anomalygen_image: str | None
    shm_size: str
    gpus: str | int | list[str | int]
    user: str
    val_scoring: Literal["inference", "status"]
    env_allowlist: list[str]
    credentials: list[str]

    @field_validator("shm_size")
    @classmethod
    def _shm(cls, value: str) -> str:
        if not _SHM.match(value):
            raise ValueError(f"expected a size like 8g or 512m, got {value!r}")
        return value

    @field_validator("gpus")
    @classmethod
    def _gpus(cls, value: str | int | list[str | int]) -> str | int | list[str | int]:
        if isinstance(value, bool) or (isinstance(value, int) and value < 0):
            raise ValueError(f"expected auto, all, none, a GPU count or ids like \"0,1\", got {value!r}")
        if isinstance(value, str) and value not in ("auto", "all", "none") and \
                not all(p.strip().isdigit() for p in value.split(",")):
            raise ValueError(f"expected auto, all, none, a GPU count or ids like \"0,1\", got {value!r}")
        return value

    @field_validator("user")
    @classmethod
    def _user(cls, value: str) -> str:
        if value not in ("host", "root") and not _UIDGID.match(value):
            raise ValueError(f"expected host, root or uid[:gid], got {value!r}")
        return value

    @model_validator(mode="after")
    def _no_secret_forwarding(self) -> TaoConfig:
        from raypipe.backends.tao._docker import is_secret_name

        forbidden = [n for n in self.env_allowlist if n in self.credentials or is_secret_name(n)]
        if forbidden:
            raise KeyProblem("env_allowlist", f"refusing to forward {', '.join(forbidden)} into the container "
                             "(the docker SDK passes a variable with its value, readable by `docker inspect`)")
        return self


class RunConfig(Node):
    """The whole run: every phase, the DEFT driver, the backends and pre-flight read this object."""

    workspace: Annotated[str, Field(min_length=1)]
    label_map: dict[str, str]
    backend: Literal["builtin", "tao"]
    device: str
    seed: NonNegativeInt
    ray_address: str | None
    storage_path: str | None
    time_budget: str | int | float | None
    spec_overrides: dict[str, Any]
    automl: AutoMLConfig
    phase1: Phase1Config
    phase2: Phase2Config
    phase3: Phase3Config
    preflight: PreflightConfig
    tracking: TrackingConfig
    execution_policy: ExecutionPolicy
    tao: TaoConfig

    _spec_overrides = field_validator("spec_overrides")(_check_dotted_keys)

    @field_validator("label_map")
    @classmethod
    def _label_map(cls, value: dict[str, str]) -> dict[str, str]:
        # The workspace check's own rules (targets must be PASS or a defect name, no clashes).
        from raypipe.workspace import LabelMapError, normalise_label_map

        try:
            normalise_label_map(value)
        except LabelMapError as exc:
            raise ValueError(exc.detail) from None
        return value

    @field_validator("time_budget")
    @classmethod
    def _time_budget(cls, value: str | int | float | None) -> str | int | float | None:
        from raypipe.budget import BudgetError, parse_duration

        if value is not None:
            try:
                parse_duration(value)
            except BudgetError as exc:
                raise ValueError(str(exc)) from None
        return value

    @property
    def time_budget_s(self) -> float | None:
        """The time budget in seconds (None: run as configured)."""
        from raypipe.budget import parse_duration

        return None if self.time_budget is None else parse_duration(self.time_budget)

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not _DEVICE.match(value):
            raise ValueError(f"expected auto, cpu, cuda or cuda:<N>, got {value!r}")
        return value

    @model_validator(mode="after")
    def _cross_keys(self) -> RunConfig:
        if self.backend == "tao" and self.phase2.mining_filter.embedder == "model":
            raise KeyProblem("phase2.mining_filter.embedder",
                                 "'model' needs an embedding entry point the TAO container does not have; "
                                 "set phase2.mining_filter.embedder=imagenet (or difference, pixels) with backend: tao",
                             related=("backend",))
        return self

    def flat(self) -> dict[str, Any]:
        """Dotted keys → values (``automl.resources_per_trial.gpu``), e.g. for MLflow params."""
        from raypipe.spec import flatten

        return flatten(self.model_dump())


__all__ = [
    "AutoMLConfig", "EmbeddingCacheConfig", "ExecutionPolicy", "KeyProblem", "MiningFilterConfig", "Node", "Phase1Config", "Phase2Config",
    "Phase2Resources", "Phase3Config", "PreflightConfig", "RcaConfig", "Resources", "RunConfig",
    "SdgConfig", "TaoConfig", "TrackingConfig",
]
