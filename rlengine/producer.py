"""The rollout side of a step: scored groups from the engines, and the producer that keeps a
bounded buffer of them ahead of the learner.

:class:`Rollouts` turns prompt rows into scored :class:`~rlengine.episode.Group` s: the rollout
pool samples, the reward pool scores, every token is stamped with the policy version the engines
hold. It is also the handle stages get to roll out (hypervolume's validation slice).

:class:`Producer` fills a buffer of scored batches for the step to take, ``depth`` batches ahead:

* depth 0 (``rollout.mode: sync``): fill, then drain. The step's batch is generated when the
  step takes it; nothing is generated while the learner updates.
* depth 1 (``one_step_off_policy``): the next step's batch is submitted right before the update
  and generated with the weights of this step while the learner trains; it is collected before
  the weight sync (no generation runs during a sync), held in the buffer, and checkpointed.

Asynchronous training is depth k of the same buffer (a later issue). The filter's refill is the
producer's queue: :meth:`Producer.refill` rolls out more prompts for the step being built.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from reward import RewardItem
from rlengine.episode import Episode, Group, pack_groups, unpack_groups


@dataclass
class StepState:
    """What one step has produced so far; the filter's refill rounds add to it."""

    step: int
    generated: list[Group] = field(default_factory=list)
    """Every group rolled out for this step, refill rounds included."""
    rounds: int = 0
    """Rollout rounds so far (the first, then one per refill)."""
    times: Counter = field(default_factory=Counter)
    """Seconds per phase (``time/rollout``, ``time/reward``, ``time/update`` ...), exclusive: a
    phase timed inside another (a refill's rollout inside the filter) counts only once, in itself."""
    reward_faults: Counter = field(default_factory=Counter)
    """``reward/errors`` and ``reward/timeouts`` summed over every round."""
    reward_calls: int = 0
    """Reward function calls made (responses scored x objectives), every round."""
    reward_messages: list[str] = field(default_factory=list)
    """The first few reward errors and timeouts of the step."""
    training: bool = True
    """False for a stage's own rollouts (hypervolume's validation slice): their lengths do not
    enter the rewards' running mean length of all responses."""
    start: float = field(default_factory=time.perf_counter)
    _open: list[list[Any]] = field(default_factory=list, repr=False)
    """Timers running now, innermost last: [key, start, seconds spent in inner timers]."""

    @contextmanager
    def timer(self, key: str) -> Iterator[None]:
        """Add the seconds spent inside the block, less those of timers nested in it, to ``times[key]``."""
        entry = [key, time.perf_counter(), 0.0]
        self._open.append(entry)
        try:
            yield
        finally:
            self._open.pop()
            elapsed = time.perf_counter() - entry[1]
            self.times[key] += elapsed - entry[2]
            if self._open:
                self._open[-1][2] += elapsed

    def state_dict(self, objectives: list[str]) -> dict:
        """This step's rollouts so far (a prefetched batch) for a checkpoint."""
        return {
            "step": self.step,
            "groups": pack_groups(self.generated, objectives),
            "rounds": self.rounds,
            "times": dict(self.times),
            "reward_faults": dict(self.reward_faults),
            "reward_calls": self.reward_calls,
            "reward_messages": list(self.reward_messages),
        }

    @classmethod
    def from_state_dict(cls, packed: dict) -> StepState:
        """Inverse of :meth:`state_dict`."""
        return cls(
            packed["step"],
            generated=unpack_groups(packed["groups"]),
            rounds=packed["rounds"],
            times=Counter(packed["times"]),
            reward_faults=Counter(packed["reward_faults"]),
            reward_calls=packed["reward_calls"],
            reward_messages=list(packed["reward_messages"]),
        )


def rollout_sampling(cfg: Any, step: int, round_index: int, num_prompts: int, n: int) -> dict[str, Any]:
    """Sampling parameters of one generation round of a training step (``cfg`` a RunConfig).

    Each prompt gets its own seed from (``trainer.seed``, step, round, position), so a resumed run
    samples exactly what the uninterrupted run would have.
    """
    r = cfg.rollout
    base = (cfg.trainer.seed * 1_000_003 + step * 1009 + round_index * 101) % (2**31)
    return {
        "n": n,
        "temperature": r.temperature,
        "top_p": r.top_p,
        "max_tokens": r.max_tokens,
        "seeds": [(base + i * 7919) % (2**31) for i in range(num_prompts)],
    }


@dataclass
class Submitted:
    """A generation request on its way: the prompts, the engines' chunks, and the step it is for."""

    state: StepState
    prompts: list[dict]
    chunks: list[Any]
    version: int


@dataclass
class RolloutView:
    """The rollout handle stages get (:class:`rlengine.stages.RolloutHandle`): ``generate(prompts,
    n)`` gives scored groups under the current policy, from the same engines and rewards as
    training, outside any step's metrics."""

    generate: Callable[[list[dict], int], list[Group]]


class Rollouts:
    """Prompt rows in, scored groups out: the rollout pool and the reward pool of one run.

    ``version`` is the policy version the engines hold (the trainer sets it after every weight
    sync); every sampled token is stamped with it. ``mean_correct_length`` is the running mean
    token length of correct responses that rewards see (``reward.length_momentum``)."""

    def __init__(self, cfg: Any, pool: Any, rewards: Any, objectives: list[str]) -> None:
        self.cfg, self.pool, self.rewards, self.objectives = cfg, pool, rewards, objectives
        self.version = 0
        self.mean_correct_length: float | None = None
        self.length_sum, self.length_count = 0.0, 0
        """Token lengths of every training response so far: ``metadata["mean_length"]``."""
        self.reward_messages: list[str] = []
        """The first reward errors of the latest scoring (for the diagnosis when most rewards fail)."""

    def submit(self, prompts: list[dict], state: StepState, n: int | None = None) -> Submitted:
        """Send ``prompts`` to the engines (``n``, default ``rollout.n``, responses each); no wait."""
        sampling = rollout_sampling(self.cfg, state.step, state.rounds, len(prompts), n or self.cfg.rollout.n)
        chunks = self.pool.submit([p["prompt_ids"] for p in prompts], sampling)
        return Submitted(state, prompts, chunks, self.version)

    def finish(self, submitted: Submitted) -> list[Group]:
        """Wait for a submitted request, score it and record it in its step's state."""
        state = submitted.state
        with state.timer("time/rollout"):
            outputs = self.pool.collect(submitted.chunks)
        groups = [
            Group(
                prompt=p,
                prompt_ids=p["prompt_ids"],
                episodes=[
                    Episode.single(o["text"], o["token_ids"], o["logprobs"], o["finish_reason"], submitted.version)
                    for o in outs
                ],
            )
            for p, outs in zip(submitted.prompts, outputs)
        ]
        if state.training:  # the batch being scored counts, as in the official code of 2509.11452
            lengths = [len(e.token_ids) for g in groups for e in g.episodes]
            self.length_sum, self.length_count = self.length_sum + sum(lengths), self.length_count + len(lengths)
        with state.timer("time/reward"):
            self.score(groups, state)
        state.rounds += 1
        state.generated += groups
        return groups

    def generate(self, prompts: list[dict], state: StepState, n: int | None = None) -> list[Group]:
        """Roll out and score ``prompts`` now (the time counts as ``time/rollout``)."""
        if not prompts:
            return []
        with state.timer("time/rollout"):
            submitted = self.submit(prompts, state, n)
        return self.finish(submitted)

    def handle(self) -> RolloutView:
        """What stages may do with the rollouts (hypervolume's validation slice)."""
        return RolloutView(lambda prompts, n: self.generate(prompts, StepState(self.version, training=False), n))

    def score(self, groups: list[Group], state: StepState) -> None:
        """Fill ``Episode.scores`` and ``Episode.correct`` through the reward process pool."""
        items = [self.reward_item(g.prompt, e.text, len(e.token_ids)) for g in groups for e in g.episodes]
        result = self.rewards.score(items)
        first = self.objectives[0]
        for i, episode in enumerate(e for g in groups for e in g.episodes):
            episode.scores = {name: values[i] for name, values in result.scores.items()}
            episode.correct = episode.scores[first] >= self.cfg.reward.correct_threshold
        state.reward_faults.update({"reward/errors": result.errors, "reward/timeouts": result.timeouts})
        state.reward_calls += len(items) * len(self.objectives)
        state.reward_messages += result.error_messages[: max(0, 5 - len(state.reward_messages))]
        self.reward_messages = state.reward_messages

    def reward_item(self, row: dict, text: str, num_tokens: int) -> RewardItem:
        """What a reward function sees: the prompt row's fields as metadata, plus the response's
        length in tokens and the running mean length of correct responses."""
        metadata = {k: v for k, v in row.items() if k != "prompt_ids"}
        mean_length = self.length_sum / self.length_count if self.length_count else None
        metadata.update(
            response_tokens=num_tokens, mean_correct_length=self.mean_correct_length, mean_length=mean_length
        )
        return RewardItem(row["prompt"], text, str(row["answer"]), metadata)

    def eval_objectives(self, rows: list[dict], records: list[Any]) -> dict[str, float]:
        """Mean of every reward objective over one benchmark's evaluation completions."""
        items = [
            self.reward_item(row, c["text"], c.get("num_tokens") or 0)
            for row, record in zip(rows, records)
            for c in record.completions
        ]
        scores = self.rewards.score(items).scores if items else {}
        return {k: statistics.fmean(scores[k]) for k in self.objectives if scores.get(k)}

    def observe(self, groups: list[Group]) -> dict[str, float]:
        """Fold this step's mean length of correct responses into the running mean the rewards see."""
        lengths = [len(e.token_ids) for g in groups for e in g.episodes if e.correct]
        if lengths:
            mean, momentum = statistics.fmean(lengths), self.cfg.reward.length_momentum
            previous = self.mean_correct_length
            self.mean_correct_length = mean if previous is None else momentum * previous + (1 - momentum) * mean
        if self.mean_correct_length is None:
            return {}
        return {"reward/mean_correct_length": self.mean_correct_length}


class Producer:
    """A bounded buffer of scored batches, filled ``depth`` steps ahead of the learner (module
    docstring). ``select(num_prompts)`` is the curriculum's choice of prompts."""

    def __init__(
        self,
        rollouts: Rollouts,
        select: Callable[[int], list[dict]],
        *,
        depth: int,
        batch_size: int,
        max_steps: int,
    ) -> None:
        if depth not in (0, 1):
            raise ValueError(f"Producer: depth {depth} is not supported yet (0 = sync, 1 = one step off)")
        self.rollouts, self.select = rollouts, select
        self.depth, self.batch_size, self.max_steps = depth, batch_size, max_steps
        self.ready: deque[StepState] = deque()
        """Scored batches for the coming steps, oldest first (at most ``depth``)."""
        self.in_flight: list[Submitted] = []
        """Requests submitted ahead and not collected yet."""

    def take(self, step: int, num_prompts: int) -> StepState:
        """The batch of ``step``: the one generated ahead for it, or ``num_prompts`` prompts chosen
        and rolled out now."""
        if self.ready:
            if self.ready[0].step != step:
                raise RuntimeError(f"the producer holds the batch of step {self.ready[0].step}, not {step}")
            state = self.ready.popleft()
            state.start = time.perf_counter()
            return state
        state = StepState(step)
        with state.timer("time/stages"):
            prompts = self.select(num_prompts)
        self.rollouts.generate(prompts, state)
        return state

    def refill(self, state: StepState, num_prompts: int) -> list[Group]:
        """``num_prompts`` more prompts chosen and rolled out for the step being built (the filter)."""
        with state.timer("time/stages"):
            prompts = self.select(num_prompts)
        return self.rollouts.generate(prompts, state)

    def run_ahead(self, step: int) -> None:
        """Submit the batches of the steps after ``step``, up to ``depth`` ahead and not past
        ``trainer.max_steps``, with the weights the engines hold now (no wait)."""
        queued = {s.step for s in self.ready} | {s.state.step for s in self.in_flight}
        for ahead in range(step + 1, min(step + self.depth, self.max_steps - 1) + 1):
            if ahead not in queued:
                state = StepState(ahead)
                with state.timer("time/stages"):
                    prompts = self.select(self.batch_size)
                with state.timer("time/rollout"):
                    self.in_flight.append(self.rollouts.submit(prompts, state))

    def settle(self) -> None:
        """Collect and score every request submitted ahead, into the buffer."""
        for submitted in self.in_flight:
            self.rollouts.finish(submitted)
            self.ready.append(submitted.state)
        self.in_flight = []

    def state_dict(self) -> dict:
        """The buffered batches (collected first: nothing is in flight at a checkpoint)."""
        self.settle()
        return {"ready": [s.state_dict(self.rollouts.objectives) for s in self.ready]}

    def load_state_dict(self, state: dict) -> None:
        self.ready = deque(StepState.from_state_dict(s) for s in state["ready"])
        self.in_flight = []
