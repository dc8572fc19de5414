"""RECAP (arXiv 2510.21978, "Beyond Reasoning Gains: Mitigating General Capabilities Forgetting in
Large Reasoning Models"): replay of **other domains** next to the task's RL data, so the model does
not forget what it could do, with each domain's loss term reweighted online.

Every step the batch gets, besides the task's groups, a share of each ``replay.sources`` entry:

- an **RL source** (``kind: rl``): prompts of another verifiable task (e.g. GSM8K word problems
  while training on arithmetic), rolled out by the same engines, scored by the run's reward
  functions (``rewards`` picks and weighs them) and given GRPO advantages within their groups;
- a **supervised source** (``kind: supervised``): prompts with a reference completion, whose loss
  is the NLL of the completion (general instruction data).

The objectives are the task (``task``) and one per source. Each objective's loss L_k is measured
on **its own fresh data of the step**, before the update: 1 − mean reward for RL objectives (the
task's over every group rolled out, before the filter: the trained batch's pass rates are pushed
toward ½ by the filter), the NLL per token for supervised ones. From the last 2W steps of each,
λ = K · softmax((c + i) / T) (:func:`rlengine.algorithms.multi_objective.recap_weights`), and the
learner minimises Σ_k λ_k · L_k with every L_k aggregated over its own samples
(``Sample.source``, ``Sample.source_weight``; rlengine/learner/batching.py: ``source_scales``).
The advantages are not touched: with every λ = 1 and no source, the update is the plain one.

Self-replay composes with it (``ratio`` > 0: past task groups, ``self_replay: uniform | recent``).
Every ``eval_every`` steps, before the update, each source's held-out rows (``heldout``) are
scored: accuracy of the RL sources, the NLL of the supervised ones; this is what forgetting is
measured on. See docs/replay.md.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Annotated, Literal

import torch

from rlengine.algorithms.multi_objective import recap_weights
from rlengine.data import PromptDataset
from rlengine.episode import Group
from rlengine.samples import Sample, advantages, build_samples, with_advantages
from rlengine.schema import Count, NonNegativeInt, Positive, Range
from rlengine.stages.registry import StageContext, register
from rlengine.stages.replay import UniformReplay, UniformReplayConfig

TASK = "task"
"""The objective (and ``Sample.source``) of the run's own data."""


@dataclass
class ReplaySourceConfig:
    """One of RECAP's other domains."""

    name: str = ""
    """Label of the source: its λ and metrics are ``replay/<name>/...``. Required; unique, not ``task``."""
    kind: Literal["rl", "supervised"] = "rl"
    """``rl``: prompts rolled out and scored by the reward functions. ``supervised``: prompts with
    a reference completion (``answer_field``), trained on by its NLL."""
    data: str = ""
    """The rows, as ``data.source``: a shipped set name, a ``.jsonl``/``.json``/``.parquet`` file
    (relative to the config), or a ``datasets`` name. Required."""
    share: Positive = 0.25
    """Prompts of this source per step, as a share of ``trainer.batch_size``: max(1, round(share ·
    batch_size)), in addition to the task's batch (RL: groups of ``rollout.n``; supervised: one
    reference completion each). Each loss term is a mean over its own samples, so the share sets
    the term's noise, λ its weight."""
    problem_field: str = "problem"
    """Field holding the prompt text."""
    answer_field: str = "answer"
    """RL: the gold answer the reward functions grade against. Supervised: the reference completion."""
    split: str | None = None
    """Split for ``datasets`` sources and benchmark names."""
    offset: NonNegativeInt = 0
    """Skip the first N rows (two sources can then take disjoint rows of one set)."""
    limit: Count | None = None
    """Use only the first N rows (after ``offset``)."""
    template: str | None = None
    """Prompt template (``{problem}`` and any row field); default ``data.template`` for RL sources
    and ``{problem}`` for supervised ones. The chat template and system prompt are the run's."""
    rewards: dict[str, float] | None = None
    """RL: the weight of each objective of ``reward.functions`` in this source's reward (normalised
    to sum 1; objectives not named weigh 0). Default: the reward-weighting stage's current weights."""
    heldout: NonNegativeInt = 0
    """Rows held out of training (the last N of the source), scored every ``eval_every`` steps:
    ``replay/<name>/heldout_accuracy`` (RL, mean over ``rollout.n`` samples each) or
    ``replay/<name>/heldout_nll`` (supervised, per token)."""


@dataclass
class RecapReplayConfig(UniformReplayConfig):
    name: str = "recap"
    """Stage name."""
    sources: list[ReplaySourceConfig] = field(default_factory=list)
    """The other domains mixed into every step (see :class:`ReplaySourceConfig`)."""
    ratio: Annotated[float, Range(0, 1, high_open=True)] = 0.0
    """Self-replay: share of the task's groups drawn from the buffer of past task groups, in [0, 1)
    (0: none). As ``replay.name: uniform``."""
    self_replay: Literal["uniform", "recent"] = "uniform"
    """How self-replay draws from its buffer: uniformly, or the most recent groups."""
    window: Count = 10
    """RECAP's window W: convergence compares the mean loss of the last W steps with the W before.
    The paper gives no value."""
    temperature: Positive = 5.0
    """RECAP's softmax temperature T (the paper's 5)."""
    eval_every: Count = 5
    """Steps between held-out scores of the sources (step 0, before any update, included)."""


@register("replay", "recap", RecapReplayConfig)
class RecapReplay(UniformReplay):
    """Other domains in every batch, and λ_k on every objective's loss term."""

    def __init__(self, config: RecapReplayConfig, context: StageContext) -> None:
        super().__init__(config, context)
        self.specs = list(config.sources)
        rows = context.source_rows or {}
        missing = [s.name for s in self.specs if s.name not in rows]
        if missing:
            raise ValueError(f"replay.sources: no rows were loaded for {missing} (StageContext.source_rows)")
        self.train_rows = {s.name: rows[s.name][0] for s in self.specs}
        self.heldout_rows = {s.name: rows[s.name][1] for s in self.specs}
        self.datasets = {
            s.name: PromptDataset(self.train_rows[s.name], seed=context.seed * 7919 + i + 1)
            for i, s in enumerate(self.specs)
        }
        self.losses: dict[str, deque[float]] = {
            k: deque(maxlen=2 * config.window) for k in [TASK, *(s.name for s in self.specs)]
        }
        """Each objective's loss L_k per step, oldest first (the last 2W steps)."""
        self.batch_size = 1

    def sample_buffer(self, count: int, step: int) -> list[Group]:
        """Self-replay's draw: uniform, or the newest ``count`` groups (``self_replay: recent``)."""
        return (
            self.buffer.newest(count)
            if self.config.self_replay == "recent"
            else super().sample_buffer(count, step)
        )

    # ------------------------------------------------------------------ the step

    def weights(self) -> dict[str, float]:
        """λ_k of every objective from its losses so far (all 1 until 2W steps of history)."""
        names = list(self.losses)
        values = recap_weights(
            [list(self.losses[k]) for k in names], self.config.window, self.config.temperature
        )
        return dict(zip(names, values))

    def sources(
        self, generated: list[Group], samples: list[Sample], step: int
    ) -> tuple[list[Sample], dict[str, float]]:
        """This step's samples of every source, each objective's fresh loss, and λ on every sample."""
        start = time.perf_counter()
        metrics: dict[str, float] = {}
        if step % self.config.eval_every == 0:
            metrics.update(self.heldout_scores(step))
        extra: list[Sample] = []
        fresh_losses = {TASK: self.task_loss(generated)} if generated else {}
        for spec in self.specs:
            count = max(1, round(spec.share * self.batch_size))
            rows = self.datasets[spec.name].next_batch(count)
            if spec.kind == "rl":
                source_samples, loss = self.rl_samples(spec, rows, step)
            else:
                source_samples, loss = self.supervised_samples(spec, rows)
            fresh_losses[spec.name] = loss
            extra += source_samples
        for name, loss in fresh_losses.items():
            self.losses[name].append(loss)
        lambdas = self.weights()
        trained = [_with_source(s, s.source, lambdas.get(s.source, 1.0)) for s in samples + extra]
        tokens = sum(s.loss_tokens for s in trained) or 1
        for name in self.losses:
            metrics[f"replay/{name}/lambda"] = lambdas[name]
            if name in fresh_losses:
                metrics[f"replay/{name}/loss"] = fresh_losses[name]
            metrics[f"replay/{name}/share"] = sum(s.loss_tokens for s in trained if s.source == name) / tokens
        metrics["time/replay_sources"] = time.perf_counter() - start
        return trained, metrics

    def reserve(self, batch_size: int, step: int) -> int:
        """As uniform self-replay; also notes ``trainer.batch_size``, which the shares refer to."""
        self.batch_size = batch_size
        return super().reserve(batch_size, step)

    def task_loss(self, generated: list[Group]) -> float:
        """1 − the mean reward of every task response rolled out this step (refills included),
        with the reward-weighting stage's current weights."""
        weights = self.objective_weights(None)
        episodes = [e for g in generated for e in g.episodes]
        return 1.0 - statistics.fmean(sum(w * e.scores[k] for k, w in weights.items()) for e in episodes)

    def objective_weights(self, spec: ReplaySourceConfig | None) -> dict[str, float]:
        """The objective weights of a source's reward (the run's current ones by default), summing to 1."""
        chosen = spec.rewards if spec is not None and spec.rewards is not None else None
        if chosen is None:
            chosen = self.context.objective_weights() if self.context.objective_weights else {}
        total = sum(chosen.values())
        return {k: v / total for k, v in chosen.items()} if total > 0 else chosen

    def rl_samples(self, spec: ReplaySourceConfig, rows: list[dict], step: int) -> tuple[list[Sample], float]:
        """Roll out and score ``rows``; the samples with their group advantages, and L = 1 − mean reward."""
        groups = self.context.rollout.generate(rows, None)
        weights = self.objective_weights(spec)
        for episode in (e for g in groups for e in g.episodes):
            episode.reward = sum(w * episode.scores[k] for k, w in weights.items())
        algorithm = self.context.algorithm
        samples = build_samples(groups, step, algorithm.mask_truncated)
        rewards = torch.tensor([e.reward for g in groups for e in g.episodes], dtype=torch.float32)
        samples = with_advantages(samples, advantages(algorithm, rewards, groups, samples))
        loss = 1.0 - float(rewards.mean()) if len(rewards) else 0.0
        return [_with_source(s, spec.name, 1.0) for s in samples], loss

    def supervised_samples(self, spec: ReplaySourceConfig, rows: list[dict]) -> tuple[list[Sample], float]:
        """Reference completions as supervised samples, and L = their NLL per token under the current policy."""
        samples = [
            Sample(row["prompt_ids"], row["response_ids"], source=spec.name, supervised=True) for row in rows
        ]
        return samples, self.nll(samples)

    def nll(self, samples: list[Sample]) -> float:
        """Mean −log π(y_t | x, y_<t) over every response token of ``samples`` (the learner's policy)."""
        logprobs = self.context.learner.compute_logprobs(samples, "policy")
        values = [-x for lp in logprobs for x in lp]
        return statistics.fmean(values) if values else 0.0

    def heldout_scores(self, step: int) -> dict[str, float]:
        """Every source's held-out score under the current policy: what forgetting is measured on."""
        metrics = {}
        for spec in self.specs:
            rows = self.heldout_rows[spec.name]
            if not rows:
                continue
            if spec.kind == "rl":
                groups = self.context.rollout.generate(rows, None)
                correct = [e.correct for g in groups for e in g.episodes]
                metrics[f"replay/{spec.name}/heldout_accuracy"] = statistics.fmean(correct)
            else:
                samples = [Sample(r["prompt_ids"], r["response_ids"], supervised=True) for r in rows]
                metrics[f"replay/{spec.name}/heldout_nll"] = self.nll(samples)
        return metrics

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict:
        return {
            **super().state_dict(),
            "losses": {k: list(v) for k, v in self.losses.items()},
            "sources": {name: dataset.state_dict() for name, dataset in self.datasets.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        for k, values in state["losses"].items():
            if k in self.losses:
                self.losses[k] = deque(values, maxlen=2 * self.config.window)
        for name, dataset_state in state.get("sources", {}).items():
            if name in self.datasets:
                self.datasets[name].load_state_dict(dataset_state)


def _with_source(sample: Sample, source: str, weight: float) -> Sample:
    """``sample`` labelled with its source and that source's λ (a new object when they change)."""
    if sample.source == source and sample.source_weight == weight:
        return sample
    return dataclasses.replace(sample, source=source, source_weight=weight)
