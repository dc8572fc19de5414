"""The data that flows through a step: groups of sampled responses for one prompt each."""

from __future__ import annotations

from dataclasses import dataclass, field


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
