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
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from rlengine.episode import Group
from rlengine.errors import ConfigError, did_you_mean
from rlengine.plugins import PluginError, is_plugin_spec, load_object
from rlengine.samples import Sample
from rlengine.schema import from_dict

STAGE_KINDS = ("curriculum", "filter", "reward_weighting", "replay")
DEFAULT_STAGE = {"curriculum": "uniform", "filter": "none", "reward_weighting": "static", "replay": "none"}

Refill = Callable[[int], list[Group]]
"""``refill(num_prompts)``: select more prompts from the curriculum, roll them out and score them."""


# --------------------------------------------------------------------------- interfaces
#
# One base class per stage kind. A stage implements its kind's core method (``select``, ``keep``,
# ``combine``, ``mix``); everything else has a no-op default here, so the step calls every hook
# directly. A plug-in class that does not derive from its base class gets the defaults too
# (``stage_class`` mixes the base in), so plug-ins keep working either way.


class Stage:
    """What every stage has: its state (checkpointed with the run) and a ``close`` hook."""

    def state_dict(self) -> dict:
        """Everything needed to continue exactly after a resume (default: nothing)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""

    def close(self) -> None:
        """Release what the stage started (actors, processes) at the end of the run."""


class Curriculum(Stage):
    """Which prompts are rolled out next."""

    def select(self, num_prompts: int) -> list[dict]:
        """The next ``num_prompts`` prompt rows (``id``, ``problem``, ``answer``, ``prompt_ids`` ...)."""
        raise NotImplementedError

    def observe(self, prompts: list[dict], pass_rates: list[float]) -> dict[str, float]:
        """Feedback after the step: every prompt rolled out this step (refill rounds included) and
        its group's pass rate. Returns metrics to log."""
        return {}


class Filter(Stage):
    """Which rolled-out groups the learner trains on."""

    def keep(self, groups: list[Group], target: int, refill: Refill) -> tuple[list[Group], dict[str, float]]:
        """Up to ``target`` groups to train on, and metrics. May call ``refill`` for more groups."""
        raise NotImplementedError


def unchanged_advantages(samples: list[Sample]) -> list[float]:
    """Every sample's current advantage (what a ``before_update`` hook returns to change nothing)."""
    return [s.advantage for s in samples]


class RewardWeighting(Stage):
    """How the reward objectives become one scalar per response."""

    def combine(self, scores: dict[str, list[float]]) -> list[float]:
        """Per-response scalar rewards from ``{objective: one score per response}``."""
        raise NotImplementedError

    def observe(self, scores: dict[str, list[float]]) -> dict[str, float]:
        """Feedback after the step (scores of the trained responses); returns metrics."""
        return {}

    def before_update(
        self, groups: list[Group], samples: list[Sample]
    ) -> tuple[list[float], dict[str, float]]:
        """Called after the learner samples are built (each with its ``advantage``, in the order of
        ``groups``' episodes) and before the update: the advantages to train with, one per sample,
        and metrics. It may rescale them or measure per-objective gradients through
        ``context.learner``; it must not change the samples. Timed as ``time/reward_weighting``."""
        return unchanged_advantages(samples), {}


class Replay(Stage):
    """Whether past groups are mixed into the batch."""

    def reserve(self, batch_size: int, step: int) -> int:
        """Called before the rollout: how many of the step's groups ``mix`` will take from the
        buffer (that many fewer fresh prompts are rolled out)."""
        return 0

    def mix(self, groups: list[Group], step: int) -> list[Group]:
        """The groups to train on this step: ``groups`` plus any replayed ones."""
        raise NotImplementedError

    def observe(self, groups: list[Group], step: int) -> dict[str, float]:
        """Feedback after the update with the trained groups; returns metrics."""
        return {}

    def before_update(
        self, groups: list[Group], samples: list[Sample]
    ) -> tuple[list[float], dict[str, float]]:
        """As :meth:`RewardWeighting.before_update` (it runs first)."""
        return unchanged_advantages(samples), {}

    def sources(
        self, generated: list[Group], samples: list[Sample], step: int
    ) -> tuple[list[Sample], dict[str, float]]:
        """Called after both ``before_update`` hooks, before the update: the samples to train on
        and metrics. ``samples`` (the batch's, final advantages) must be returned in order,
        unchanged but for ``source_weight``; samples of the stage's own data sources (RECAP's
        other domains, with ``Sample.source`` set) may follow. ``generated``: every task group
        rolled out this step (refills included, before the filter). Timed as ``time/stages``."""
        return samples, {}


BASES: dict[str, type[Stage]] = {
    "curriculum": Curriculum,
    "filter": Filter,
    "reward_weighting": RewardWeighting,
    "replay": Replay,
}
"""The base class of each stage kind."""

REQUIRED: dict[str, tuple[str, ...]] = {
    "curriculum": ("select",),
    "filter": ("keep",),
    "reward_weighting": ("combine",),
    "replay": ("mix",),
}
"""The method each kind must implement; the other methods of its base class are optional."""


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

    def objective_gradients(
        self, samples: list[dict], advantages: list[list[float]], layers: int | list[int]
    ) -> dict:
        """Per objective k, the gradient g_k of the policy loss with ``advantages[k]`` (one per sample)
        on the last ``layers`` blocks (an int N: the last N, 0 = all; a list: those block ids), over all ranks; returns ``{"gram": G, "lr": η}`` with
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
    source_rows: dict[str, tuple[list[dict], list[dict]]] = field(default_factory=dict)
    """``replay.sources`` rows by source name: (training rows, held-out rows), rendered and
    tokenised (rlengine/data/prompts.py: ``load_replay_sources``)."""


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
    problems = interface_problems(cls, BASES[kind], REQUIRED[kind])
    if problems:
        raise ConfigError(
            f"{kind}.name: {name!r} {'; '.join(problems)} (a {kind} implements {', '.join(REQUIRED[kind])}, and may "
            f"override {', '.join(m for m in _methods(BASES[kind]) if m not in REQUIRED[kind])}; see "
            "rlengine/stages/registry.py)"
        )
    config_cls = getattr(cls, "config_class", None)
    if config_cls is None or not dataclasses.is_dataclass(config_cls):
        raise ConfigError(
            f"{kind}.name: {name!r} needs a class attribute config_class = <a dataclass of its options>"
        )
    if not issubclass(cls, BASES[kind]):  # the base's no-op hooks, under the plug-in's own methods
        cls = type(cls.__name__, (cls, BASES[kind]), {"__module__": cls.__module__, "__doc__": cls.__doc__})
    return cls, config_cls


def _methods(base: type) -> list[str]:
    """The public methods ``base`` and its stage bases define."""
    names = {m for klass in base.__mro__ if klass is not object for m in vars(klass)}
    return sorted(m for m in names if not m.startswith("_") and callable(getattr(base, m)))


def interface_problems(cls: type, base: type, required: tuple[str, ...]) -> list[str]:
    """What keeps ``cls`` from serving as a ``base`` stage: a required method it lacks, or a method
    of the interface it defines with parameters the step's call would not bind to."""
    problems = []
    for name in _methods(base):
        method = getattr(cls, name, None)
        if method is None or (
            name in required and getattr(method, "__qualname__", "").startswith(f"{base.__name__}.")
        ):
            if name in required:
                problems.append(f"lacks {name}()")
            continue
        if not callable(method):
            problems.append(f"has {name} but it is not a method")
            continue
        expected = [p for p in inspect.signature(getattr(base, name)).parameters.values()]
        try:
            inspect.signature(method).bind(*[p.name for p in expected])
        except TypeError as e:
            wanted = ", ".join(p.name for p in expected)
            problems.append(f"defines {name} with a signature the step cannot call as {name}({wanted}): {e}")
        except ValueError:
            continue  # no signature to check (a builtin)
    return problems


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
