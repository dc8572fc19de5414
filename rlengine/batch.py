"""The data that flows through a step: groups of sampled responses for one prompt each, and the
step's running record (:class:`StepState`)."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Response:
    """One sampled response."""

    text: str
    token_ids: list[int]
    logprobs: list[float]
    """Behaviour logprob of every token, as vLLM sampled it (after temperature)."""
    finish_reason: str
    """``stop`` (EOS or stop string) or ``length`` (hit ``rollout.max_tokens``)."""
    scores: dict[str, float] = field(default_factory=dict)
    """One value per reward objective."""
    reward: float = 0.0
    """Scalar reward after weighting and shaping."""
    correct: bool = False
    """Whether the first objective passed ``reward.correct_threshold``."""

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


@dataclass
class Group:
    """All responses to one prompt (one GRPO group)."""

    prompt: dict
    """The prompt row: id, problem, answer, rendered ``prompt`` text and any metadata."""
    prompt_ids: list[int]
    responses: list[Response]
    policy_version: int = 0
    """Learner step whose weights generated the responses."""

    @property
    def pass_rate(self) -> float:
        return sum(r.correct for r in self.responses) / max(1, len(self.responses))

    @property
    def rewards(self) -> list[float]:
        return [r.reward for r in self.responses]

    @property
    def informative(self) -> bool:
        """True when the rewards are not all equal (the group has a learning signal)."""
        rewards = self.rewards
        return len(rewards) > 1 and max(rewards) - min(rewards) > 1e-9


@dataclass
class StepState:
    """What one step has produced so far; the filter's refill rounds add to it."""

    step: int
    generated: list[Group] = field(default_factory=list)
    """Every group rolled out this step, refill rounds included."""
    rounds: int = 0
    """Rollout rounds so far (the first, then one per refill)."""
    times: Counter = field(default_factory=Counter)
    """Seconds per phase (``time/rollout``, ``time/reward``, ``time/train`` ...)."""
    reward_faults: Counter = field(default_factory=Counter)
    """``reward/errors`` and ``reward/timeouts`` summed over every round."""
    reward_calls: int = 0
    """Reward function calls made (responses scored x objectives), every round."""
    reward_messages: list[str] = field(default_factory=list)
    """The first few reward errors and timeouts of the step."""
    start: float = field(default_factory=time.perf_counter)

    @contextmanager
    def timer(self, key: str) -> Iterator[None]:
        """Add the seconds spent inside the block to ``times[key]``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.times[key] += time.perf_counter() - start


@dataclass
class RolloutView:
    """The rollout handle stages get (:class:`rlengine.stages.RolloutHandle`): scored groups under
    the current policy, from the same engines and rewards as training."""

    generate: Callable[[list[dict], int], list[Group]]


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


def pack_groups(groups: list[Group], objectives: list[str]) -> dict:
    """Groups as a few flat numpy arrays (compact in a checkpoint): token ids int32, behaviour
    logprobs float32 (vLLM's own precision), reward vectors float64 in ``objectives`` order."""
    responses = [r for g in groups for r in g.responses]
    rows = [{k: v for k, v in g.prompt.items() if k != "prompt_ids"} for g in groups]
    return {
        "objectives": list(objectives),
        "rows": json.dumps(rows),
        "prompt_ids": np.array([t for g in groups for t in g.prompt_ids], dtype=np.int32),
        "prompt_lengths": np.array([len(g.prompt_ids) for g in groups], dtype=np.int64),
        "group_sizes": np.array([len(g.responses) for g in groups], dtype=np.int64),
        "versions": np.array([g.policy_version for g in groups], dtype=np.int64),
        "token_ids": np.array([t for r in responses for t in r.token_ids], dtype=np.int32),
        "logprobs": np.array([x for r in responses for x in r.logprobs], dtype=np.float32),
        "response_lengths": np.array([len(r.token_ids) for r in responses], dtype=np.int64),
        "texts": json.dumps([r.text for r in responses]),
        "finish_reasons": json.dumps([r.finish_reason for r in responses]),
        "scores": np.array([[r.scores[k] for k in objectives] for r in responses], dtype=np.float64).reshape(
            len(responses), len(objectives)
        ),
        "correct": np.array([r.correct for r in responses], dtype=bool),
    }


def unpack_groups(packed: dict) -> list[Group]:
    """Inverse of :func:`pack_groups`."""
    rows, texts = json.loads(packed["rows"]), json.loads(packed["texts"])
    finish, objectives = json.loads(packed["finish_reasons"]), packed["objectives"]
    prompt_ends = np.cumsum(packed["prompt_lengths"])
    response_ends = np.cumsum(packed["response_lengths"])
    groups, r = [], 0
    for i, row in enumerate(rows):
        prompt_ids = packed["prompt_ids"][
            prompt_ends[i] - packed["prompt_lengths"][i] : prompt_ends[i]
        ].tolist()
        responses = []
        for _ in range(int(packed["group_sizes"][i])):
            start, end = response_ends[r] - packed["response_lengths"][r], response_ends[r]
            responses.append(
                Response(
                    texts[r],
                    packed["token_ids"][start:end].tolist(),
                    packed["logprobs"][start:end].tolist(),
                    finish[r],
                    scores=dict(zip(objectives, packed["scores"][r].tolist())),
                    correct=bool(packed["correct"][r]),
                )
            )
            r += 1
        groups.append(
            Group({**row, "prompt_ids": prompt_ids}, prompt_ids, responses, int(packed["versions"][i]))
        )
    return groups


def pack_state(state: StepState, objectives: list[str]) -> dict:
    """A step's rollouts so far (``one_step_off_policy``'s prefetched next step) for a checkpoint."""
    return {
        "step": state.step,
        "groups": pack_groups(state.generated, objectives),
        "rounds": state.rounds,
        "times": dict(state.times),
        "reward_faults": dict(state.reward_faults),
        "reward_calls": state.reward_calls,
        "reward_messages": list(state.reward_messages),
    }


def unpack_state(packed: dict) -> StepState:
    """Inverse of :func:`pack_state`."""
    return StepState(
        packed["step"],
        generated=unpack_groups(packed["groups"]),
        rounds=packed["rounds"],
        times=Counter(packed["times"]),
        reward_faults=Counter(packed["reward_faults"]),
        reward_calls=packed["reward_calls"],
        reward_messages=list(packed["reward_messages"]),
    )
