"""The four stage interfaces, the registry of built-in stages, and plug-in stages from user files.

A stage section in YAML names a built-in stage or a class in the user's own file::

    filter:
      name: balanced              # built-in
      low: 0.25
    curriculum:
      name: my_stages.py:EasyFirst   # plug-in: a class with a ``config_class`` dataclass
      warmup_steps: 10

The other keys of the section are validated against the stage's config dataclass, with the
same messages as every other config key. Every stage is built as ``cls(config, context)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from rlengine.batch import Group
from rlengine.errors import ConfigError, did_you_mean
from rlengine.plugins import PluginError, is_plugin_spec, load_object
from rlengine.schema import from_dict

STAGE_KINDS = ("curriculum", "filter", "reward_weighting", "replay")
DEFAULT_STAGE = {"curriculum": "uniform", "filter": "none", "reward_weighting": "static", "replay": "none"}

Refill = Callable[[int], list[Group]]
"""``refill(num_prompts)``: select more prompts from the curriculum, roll them out and score them."""


# --------------------------------------------------------------------------- interfaces


@runtime_checkable
class Curriculum(Protocol):
    """Which prompts are rolled out next."""

    def select(self, num_prompts: int) -> list[dict]:
        """The next ``num_prompts`` prompt rows (``id``, ``problem``, ``answer``, ``prompt_ids`` ...)."""

    def observe(self, prompts: list[dict], pass_rates: list[float]) -> dict[str, float]:
        """Feedback after the step: every prompt rolled out this step (refill rounds included) and
        its group's pass rate. Returns metrics to log."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


@runtime_checkable
class Filter(Protocol):
    """Which rolled-out groups the learner trains on."""

    def keep(self, groups: list[Group], target: int, refill: Refill) -> tuple[list[Group], dict[str, float]]:
        """Up to ``target`` groups to train on, and metrics. May call ``refill`` for more groups."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


@runtime_checkable
class RewardWeighting(Protocol):
    """How the reward objectives become one scalar per response."""

    def combine(self, scores: dict[str, list[float]]) -> list[float]:
        """Per-response scalar rewards from ``{objective: one score per response}``."""

    def observe(self, scores: dict[str, list[float]]) -> dict[str, float]:
        """Feedback after the step (scores of the trained responses); returns metrics."""

    # Optional: ``before_update(groups, samples) -> metrics``, called after the learner samples are
    # built (each has its ``advantage``) and before the update; it may rescale the advantages or
    # measure per-objective gradients through ``context.learner``. Timed as ``time/reward_weighting``.

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


@runtime_checkable
class Replay(Protocol):
    """Whether past groups are mixed into the batch."""

    def mix(self, groups: list[Group], step: int) -> list[Group]:
        """The groups to train on this step: ``groups`` plus any replayed ones."""

    def observe(self, groups: list[Group], step: int) -> dict[str, float]:
        """Feedback after the update with the trained groups; returns metrics."""

    # Optional: ``reserve(batch_size, step) -> int``, called before the rollout: how many of the
    # step's groups ``mix`` will take from the buffer (that many fewer fresh prompts are rolled
    # out); and ``before_update(groups, samples) -> metrics`` as for reward weighting (RECAP sets
    # the advantages there; it runs before the reward-weighting hook).

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


INTERFACES: dict[str, type] = {
    "curriculum": Curriculum,
    "filter": Filter,
    "reward_weighting": RewardWeighting,
    "replay": Replay,
}


# --------------------------------------------------------------------------- handles


class RolloutHandle(Protocol):
    """What a stage may do with the rollout pool: roll out and score prompts under the current
    policy (e.g. a validation slice for hypervolume weighting). Same engines, same rewards."""

    def generate(self, prompts: list[dict], n: int) -> list[Group]:
        """``n`` scored responses for each prompt row (rows need ``prompt_ids`` and ``answer``)."""


class LearnerHandle(Protocol):
    """What a stage may ask of the learner: logprobs of token sequences under the current policy
    (``which="policy"``) or the reference model (``"ref"``, when ``algorithm.kl_coef > 0``), and a
    place for the stage's own model in rank 0's process (``host`` / ``call_hosted``)."""

    num_ranks: int

    def compute_logprobs(self, samples: list[dict], which: str = "policy") -> list[list[float]]:
        """Per-sample response-token logprobs; a sample has ``prompt_ids`` and ``response_ids``."""

    def host(self, name: str, cls: type, *args: Any) -> str:
        """Build ``cls(*args)`` inside the learner's rank-0 process (sharing its GPU); returns ``name``."""

    def call_hosted(self, name: str, method: str, *args: Any) -> Any:
        """Call ``method(*args)`` on the hosted object ``name`` and wait for the result."""

    def unhost(self, name: str) -> None:
        """Drop the hosted object ``name``."""

    def objective_gradients(self, samples: list[dict], advantages: list[list[float]], layers: int) -> dict:
        """Per objective k, the gradient g_k of the policy loss with ``advantages[k]`` (one per sample)
        on the last ``layers`` blocks (0 = all), over all ranks; returns ``{"gram": G, "lr": η}`` with
        G_kj = ⟨g_k, g_j⟩ and η the current learning rate. No optimizer state changes."""


@dataclass
class StageContext:
    """What a stage gets when it is built. ``rollout`` and ``learner`` are narrow handles to the
    running actors (None in unit tests that build a stage alone)."""

    rows: Sequence[dict | None]
    """The prompt rows (rendered, tokenised). With ``data.lazy`` a lazy sequence: index it (a row
    is read when indexed; None for a prompt too long to roll out), do not copy it whole."""
    seed: int
    objectives: list[str]
    """Reward objective names, in ``reward.functions`` order."""
    reward_weights: list[float]
    """The ``weight`` of each objective in ``reward.functions``."""
    validation_rows: list[dict] = field(default_factory=list)
    """The held-out validation prompts (``data.validation_size``), rendered and tokenised."""
    algorithm: Any = None
    """The run's :class:`rlengine.config.AlgorithmConfig` (advantage estimator, loss)."""
    objective_weights: Callable[[], dict[str, float]] | None = None
    """The reward-weighting stage's current weight w_k of every objective."""
    rollout: RolloutHandle | None = None
    learner: LearnerHandle | None = None
    policy_path: str | None = None
    """Directory of the policy's initial weights (PCL's ``backbone: policy_init``)."""
    model: Any = None
    """The run's :class:`rlengine.config.ModelConfig` (dtype, cache_dir, trust_remote_code)."""
    gpu: bool = False
    """Whether the run uses CUDA."""


# --------------------------------------------------------------------------- registry

REGISTRY: dict[str, dict[str, tuple[type, type]]] = {kind: {} for kind in STAGE_KINDS}


def register(kind: str, name: str, config_cls: type):
    """Class decorator adding a built-in stage to the registry under ``kind`` / ``name``."""

    def wrap(cls: type) -> type:
        REGISTRY[kind][name] = (cls, config_cls)
        cls.stage_name = name
        cls.config_class = config_cls
        return cls

    return wrap


def stage_class(kind: str, name: str, base_dir: str | None = None) -> tuple[type, type]:
    """``(stage class, config dataclass)`` for a built-in name or a ``file.py:Class`` plug-in."""
    if kind not in REGISTRY:
        raise ConfigError(f"unknown stage kind {kind!r}; valid: {', '.join(STAGE_KINDS)}")
    if not isinstance(name, str):
        raise ConfigError(f"{kind}.name: expected a string, got {name!r}")
    if name in REGISTRY[kind]:
        return REGISTRY[kind][name]
    if not is_plugin_spec(name):
        choices = REGISTRY[kind]
        raise ConfigError(
            f"{kind}.name: unknown {kind} '{name}'{did_you_mean(name, choices)}; valid: "
            f"{', '.join(choices)}, or 'my_file.py:MyClass' for your own"
        )
    try:
        cls = load_object(name, base_dir, what=f"{kind} class")
    except PluginError as e:
        raise ConfigError(f"{kind}.name: {e}") from None
    if not isinstance(cls, type):
        raise ConfigError(f"{kind}.name: {name!r} is not a class (it is a {type(cls).__name__})")
    missing = [m for m in _methods(INTERFACES[kind]) if not callable(getattr(cls, m, None))]
    if missing:
        raise ConfigError(
            f"{kind}.name: {name!r} lacks {', '.join(missing)}; a {kind} implements "
            f"{', '.join(_methods(INTERFACES[kind]))} (see rlengine/stages/registry.py)"
        )
    config_cls = getattr(cls, "config_class", None)
    if config_cls is None or not dataclasses.is_dataclass(config_cls):
        raise ConfigError(
            f"{kind}.name: {name!r} needs a class attribute config_class = <a dataclass of its options>"
        )
    return cls, config_cls


def _methods(protocol: type) -> list[str]:
    return [m for m in vars(protocol) if not m.startswith("_") and callable(getattr(protocol, m))]


def build_stage_config(kind: str, raw: Any, base_dir: str | None = None) -> Any:
    """Validate a stage section into its config dataclass (``name`` defaults per kind).

    The returned object carries ``name`` as an attribute even when its dataclass has no such field.
    """
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{kind}: expected a mapping with 'name' and the stage's options, got {raw!r}")
    raw = dict(raw or {})
    name = raw.pop("name", DEFAULT_STAGE[kind])
    _, config_cls = stage_class(kind, name, base_dir)
    config = from_dict(config_cls, raw, kind)
    config.name = name
    return config


def build_stage(kind: str, config: Any, context: StageContext, base_dir: str | None = None) -> Any:
    """Instantiate the stage selected by ``config.name``."""
    cls, _ = stage_class(kind, config.name, base_dir)
    return cls(config, context)
