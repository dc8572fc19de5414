"""What a rollout yields: :class:`Episode` s (segments of tokens, with the policy version that
produced each model token), grouped per prompt in a :class:`Group`.

Everything downstream of the engines reads these types, never raw engine outputs: the filter
(pass rates), replay (stored groups), the reward weighting (score vectors) and the sample
builder (:mod:`rlengine.samples`). Single-turn math is one model segment per episode; a
multi-turn episode alternates model segments with tool or environment segments, which are
masked out of the loss. A model segment cut by a weight update (partial rollouts) becomes two
segments with different versions.

:func:`pack_groups` / :func:`unpack_groups` are the one serialisation of groups (checkpoints of
the filter's carry buffer, the replay buffer and the producer's prefetched batch).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

SegmentKind = Literal["model", "tool"]


@dataclass
class Segment:
    """A run of consecutive response tokens from one source."""

    token_ids: list[int]
    logprobs: list[float]
    """Behaviour logprob of every token as vLLM sampled it (after temperature); 0.0 for tool tokens."""
    version: int
    """Policy version (learner step) whose weights produced the tokens; for a tool segment, the
    version of the model segment it answers."""
    kind: SegmentKind = "model"
    """``model``: sampled by the policy, trained on. ``tool``: tool or environment output, loss mask 0."""


@dataclass
class Episode:
    """One sampled response to a prompt: its segments, scores and scalar reward."""

    text: str
    segments: list[Segment]
    finish_reason: str
    """``stop`` (EOS or stop string) or ``length`` (hit ``rollout.max_tokens``)."""
    scores: dict[str, float] = field(default_factory=dict)
    """One value per reward objective."""
    reward: float = 0.0
    """Scalar reward after weighting and shaping."""
    correct: bool = False
    """Whether the first objective passed ``reward.correct_threshold``."""

    @classmethod
    def single(
        cls,
        text: str,
        token_ids: list[int],
        logprobs: list[float],
        finish_reason: str,
        version: int = 0,
        **fields: object,
    ) -> Episode:
        """A single-turn episode: one model segment sampled by policy ``version``."""
        return cls(text, [Segment(token_ids, logprobs, version)], finish_reason, **fields)  # type: ignore[arg-type]

    def _joined(self, name: str) -> list:
        if len(self.segments) == 1:
            return getattr(self.segments[0], name)
        return [x for s in self.segments for x in getattr(s, name)]

    @property
    def token_ids(self) -> list[int]:
        """All response tokens, segment after segment."""
        return self._joined("token_ids")

    @property
    def logprobs(self) -> list[float]:
        """Behaviour logprob of every response token (0.0 for tool tokens)."""
        return self._joined("logprobs")

    @property
    def loss_mask(self) -> list[int]:
        """1 for every model token, 0 for every tool token."""
        return [int(s.kind == "model") for s in self.segments for _ in s.token_ids]

    @property
    def versions(self) -> list[int]:
        """The policy version of every response token."""
        return [s.version for s in self.segments for _ in s.token_ids]

    @property
    def policy_version(self) -> int:
        """The oldest version among the model segments (what staleness is measured from)."""
        return min((s.version for s in self.segments if s.kind == "model"), default=0)

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


@dataclass
class Group:
    """All episodes of one prompt (one GRPO group)."""

    prompt: dict
    """The prompt row: id, problem, answer, rendered ``prompt`` text and any metadata."""
    prompt_ids: list[int]
    episodes: list[Episode]

    @property
    def policy_version(self) -> int:
        """The oldest policy version that produced any of the group's tokens."""
        return min((e.policy_version for e in self.episodes), default=0)

    @property
    def pass_rate(self) -> float:
        return sum(e.correct for e in self.episodes) / max(1, len(self.episodes))

    @property
    def rewards(self) -> list[float]:
        return [e.reward for e in self.episodes]

    @property
    def informative(self) -> bool:
        """True when the rewards are not all equal (the group has a learning signal)."""
        rewards = self.rewards
        return len(rewards) > 1 and max(rewards) - min(rewards) > 1e-9


def pack_groups(groups: list[Group], objectives: list[str]) -> dict:
    """Groups as a few flat numpy arrays (compact in a checkpoint): token ids int32, behaviour
    logprobs float32 (vLLM's own precision), versions int64, reward vectors float64 in
    ``objectives`` order, one row per segment for the segment structure."""
    episodes = [e for g in groups for e in g.episodes]
    segments = [s for e in episodes for s in e.segments]
    rows = [{k: v for k, v in g.prompt.items() if k != "prompt_ids"} for g in groups]
    return {
        "objectives": list(objectives),
        "rows": json.dumps(rows),
        "prompt_ids": np.array([t for g in groups for t in g.prompt_ids], dtype=np.int32),
        "prompt_lengths": np.array([len(g.prompt_ids) for g in groups], dtype=np.int64),
        "group_sizes": np.array([len(g.episodes) for g in groups], dtype=np.int64),
        "segment_counts": np.array([len(e.segments) for e in episodes], dtype=np.int64),
        "segment_lengths": np.array([len(s.token_ids) for s in segments], dtype=np.int64),
        "segment_versions": np.array([s.version for s in segments], dtype=np.int64),
        "segment_kinds": json.dumps([s.kind for s in segments]),
        "token_ids": np.array([t for s in segments for t in s.token_ids], dtype=np.int32),
        "logprobs": np.array([x for s in segments for x in s.logprobs], dtype=np.float32),
        "texts": json.dumps([e.text for e in episodes]),
        "finish_reasons": json.dumps([e.finish_reason for e in episodes]),
        "scores": np.array([[e.scores[k] for k in objectives] for e in episodes], dtype=np.float64).reshape(
            len(episodes), len(objectives)
        ),
        "rewards": np.array([e.reward for e in episodes], dtype=np.float64),
        "correct": np.array([e.correct for e in episodes], dtype=bool),
    }


def unpack_groups(packed: dict) -> list[Group]:
    """Inverse of :func:`pack_groups`."""
    rows, texts = json.loads(packed["rows"]), json.loads(packed["texts"])
    finish, kinds = json.loads(packed["finish_reasons"]), json.loads(packed["segment_kinds"])
    objectives = packed["objectives"]
    prompt_ends = np.cumsum(packed["prompt_lengths"]).tolist()
    token_ends = np.cumsum(packed["segment_lengths"]).tolist()
    lengths, versions = packed["segment_lengths"].tolist(), packed["segment_versions"].tolist()
    token_ids, logprobs = packed["token_ids"].tolist(), packed["logprobs"].tolist()
    counts, sizes = packed["segment_counts"].tolist(), packed["group_sizes"].tolist()
    scores, rewards = packed["scores"].tolist(), packed["rewards"].tolist()
    groups, e, s = [], 0, 0
    for i, row in enumerate(rows):
        prompt_ids = packed["prompt_ids"][prompt_ends[i] - int(packed["prompt_lengths"][i]) : prompt_ends[i]]
        episodes = []
        for _ in range(sizes[i]):
            segments = []
            for _ in range(counts[e]):
                start, end = token_ends[s] - lengths[s], token_ends[s]
                segments.append(Segment(token_ids[start:end], logprobs[start:end], versions[s], kinds[s]))
                s += 1
            episodes.append(
                Episode(
                    texts[e],
                    segments,
                    finish[e],
                    scores=dict(zip(objectives, scores[e])),
                    reward=rewards[e],
                    correct=bool(packed["correct"][e]),
                )
            )
            e += 1
        ids = prompt_ids.tolist()
        groups.append(Group({**row, "prompt_ids": ids}, ids, episodes))
    return groups
