"""Reward weighting: static / hypervolume / gradient stages, the math objectives, and the learner's
per-objective gradients (checked against a plain autograd computation)."""

from __future__ import annotations

import math
import random

import pytest
import torch

from reward import BUILTIN_REWARDS
from rlengine.algorithms import compute_advantages
from rlengine.config import AlgorithmConfig, load_config
from rlengine.episode import Episode, Group
from rlengine.errors import ConfigError
from rlengine.samples import Sample, advantages, episode_rewards, objective_advantages, set_scalar_rewards
from rlengine.stages import StageContext, build_stage, build_stage_config

OBJECTIVES = ["token_a", "short"]
TARGET = 1234
PROMPT = [1, 523, 88, 2]


def context(**kwargs) -> StageContext:
    defaults = dict(
        rows=[], seed=0, objectives=list(OBJECTIVES), reward_weights=[1.0, 1.0], algorithm=AlgorithmConfig()
    )
    return StageContext(**{**defaults, **kwargs})


def stage(raw: dict, ctx: StageContext):
    return build_stage("reward_weighting", build_stage_config("reward_weighting", raw), ctx)


def group(scores: list[dict[str, float]], tokens: list[list[int]] | None = None) -> Group:
    tokens = tokens or [[5, 6]] * len(scores)
    episodes = [Episode.single("x", t, [0.0] * len(t), "stop", scores=s) for t, s in zip(tokens, scores)]
    return Group(prompt={"prompt_ids": PROMPT}, prompt_ids=PROMPT, episodes=episodes)


def per_objective(groups: list[Group], samples: list[Sample]) -> list[list[float]]:
    return [a.tolist() for a in objective_advantages(AlgorithmConfig(), groups, samples, OBJECTIVES)]


# ---------------------------------------------------------------- objectives


def test_format_gives_half_for_steps_and_half_for_the_box() -> None:
    fmt = BUILTIN_REWARDS["format"]
    assert fmt("p", "3 + 4 = 7\nSo the answer is \\boxed{7}", "7", {}) == 1.0
    assert fmt("p", "So the answer is \\boxed{7}", "7", {}) == 0.5  # no step before the answer
    assert fmt("p", "3 + 4 = 7\nSo the answer is 7", "7", {}) == 0.5  # no box
    assert fmt("p", "3 + 4 = 7\nSo \\boxed{7", "7", {}) == 0.5  # truncated box
    assert fmt("p", "the answer is 7", "7", {}) == 0.0
    assert fmt("p", "\\boxed{7}", "7", {}, min_steps=0) == 1.0
    assert fmt("p", "a\n\n\\boxed{7}", "7", {}, min_steps=2) == 0.5  # blank lines are not steps
    assert fmt("p", "a\nb\nthus \\boxed{7}", "7", {}, min_steps=2) == 1.0


def test_format_binary_mode_is_the_official_all_or_nothing_form() -> None:
    """``mode: binary``: 1.0 only for a complete box and at least two step markers (enumerated or
    bulleted lines, or ordering words), as the official code of arXiv 2509.11452."""
    fmt = BUILTIN_REWARDS["format"]
    assert fmt("p", "1. 3 + 4 = 7\n2. check it\nSo \\boxed{7}", "7", {}, mode="binary") == 1.0
    assert fmt("p", "Step 1: add\nStep 2) check\n\\boxed{7}", "7", {}, mode="binary") == 1.0
    assert fmt("p", "- add\n- check\n\\boxed{7}", "7", {}, mode="binary") == 1.0
    assert fmt("p", "First add 3 and 4, then check. \\boxed{7}", "7", {}, mode="binary") == 1.0
    assert fmt("p", "3 + 4 = 7\nSo the answer is \\boxed{7}", "7", {}, mode="binary") == 0.0  # no markers
    assert fmt("p", "3 + 4 = 7\nSo the answer is \\boxed{7}", "7", {}) == 1.0  # partial: the lines count
    assert fmt("p", "1. add\n2. check\nthe answer is 7", "7", {}, mode="binary") == 0.0  # no box
    assert fmt("p", "1. add\n2. check\n\\boxed{}", "7", {}, mode="binary") == 0.0  # an empty box
    assert fmt("p", "1. add\n\\boxed{7}", "7", {}, mode="binary") == 0.0
    assert fmt("p", "1. add\n\\boxed{7}", "7", {}, mode="binary", min_steps=1) == 1.0
    with pytest.raises(ValueError, match="mode must be one of partial, binary"):
        fmt("p", "x", "7", {}, mode="strict")
    two = "reward.functions=[math_verify,{function: format, kwargs: {mode: binary}}]"
    assert load_config(None, [two]).reward.functions[1]["kwargs"] == {"mode": "binary"}


def test_conciseness_against_the_mean_length_of_all_responses() -> None:
    """``reference: all``: shorter than the cumulative mean length of all responses (the official
    form), read from ``metadata["mean_length"]``; a missing key is an error, not a silent 0."""
    concise = BUILTIN_REWARDS["conciseness"]
    seen = {"mean_correct_length": None, "mean_length": 10.0, "response_tokens": 9}
    assert concise("p", "x", "", seen, reference="all") == 1.0
    assert concise("p", "x", "", seen) == 0.0  # the default: no correct response yet
    assert concise("p", "x", "", {**seen, "response_tokens": 10}, reference="all") == 0.0
    assert concise("p", "x", "", {**seen, "mean_length": None}, reference="all") == 0.0
    with pytest.raises(ValueError, match=r"needs metadata\['mean_length'\]"):
        concise("p", "x", "", {"mean_correct_length": 4.0, "response_tokens": 3}, reference="all")
    with pytest.raises(ValueError, match="reference must be one of correct, all"):
        concise("p", "x", "", seen, reference="median")


def test_conciseness_compares_with_the_running_mean_of_correct_lengths() -> None:
    concise = BUILTIN_REWARDS["conciseness"]
    assert concise("p", "x", "", {"mean_correct_length": None, "response_tokens": 1}) == 0.0
    assert concise("p", "x", "", {"mean_correct_length": 10.0, "response_tokens": 9}) == 1.0
    assert concise("p", "x", "", {"mean_correct_length": 10.0, "response_tokens": 10}) == 0.0
    assert concise("p", "x" * 5, "", {"mean_correct_length": 6.0}) == 1.0  # characters outside training


def test_running_correct_length_is_a_momentum_mean_and_checkpointed() -> None:
    from rlengine.producer import Rollouts
    from tests.stubs import StubPool, StubRewards

    cfg = load_config(None, ["reward.length_momentum=0.5"])
    rollouts = Rollouts(cfg, StubPool(), StubRewards(lambda pid: 0), ["math_verify"])
    correct = [Episode.single("x", [1] * n, [], "stop", correct=True) for n in (4, 8)]
    wrong = Episode.single("x", [1] * 100, [], "stop", correct=False)
    assert rollouts.observe([Group({}, PROMPT, [wrong])]) == {}  # nothing correct yet
    assert rollouts.mean_correct_length is None
    rollouts.observe([Group({}, PROMPT, [*correct, wrong])])
    assert rollouts.mean_correct_length == 6.0  # the first step sets it; wrong answers do not count
    tens = [Episode.single("x", [1] * 10, [], "stop", correct=True)] * 2
    metrics = rollouts.observe([Group({}, PROMPT, tens)])
    assert rollouts.mean_correct_length == 0.5 * 6.0 + 0.5 * 10.0
    assert metrics == {"reward/mean_correct_length": 8.0}
    item = rollouts.reward_item({"prompt": "p", "answer": 3, "prompt_ids": [1], "id": "a"}, "t", 5)
    assert item.metadata == {
        "prompt": "p",
        "answer": 3,
        "id": "a",
        "response_tokens": 5,
        "mean_correct_length": 8.0,
        "mean_length": None,
    }


# ---------------------------------------------------------------- static and hypervolume


def test_static_weights_are_normalised_to_sum_to_one() -> None:
    weighting = stage({"name": "static", "weights": {"short": 0.25}}, context())  # (1, 0.25) -> (0.8, 0.2)
    assert weighting.combine({"token_a": [1.0, 0.0], "short": [1.0, 1.0]}) == pytest.approx([1.0, 0.2])
    assert weighting.observe({}) == pytest.approx({"weights/token_a": 0.8, "weights/short": 0.2})
    for name in ("hypervolume", "gdpo", "gradient"):
        assert sum(
            stage({"name": name, "weights": {"short": 3.0}}, context()).weights.values()
        ) == pytest.approx(1)
    with pytest.raises(
        ConfigError, match=r"reward_weighting.weights: unknown objective 'shrt'.*\['math_verify'\]"
    ):
        load_config(None, ["reward_weighting.weights={shrt: 1.0}"])
    with pytest.raises(ConfigError, match="normalised to sum to 1, so their sum must be > 0"):
        load_config(None, ["reward_weighting.weights={math_verify: 0.0}"])
    with pytest.raises(ConfigError, match="sum must be > 0"):
        stage({"name": "static", "weights": {"token_a": -1.0}}, context())


# ---------------------------------------------------------------- gdpo


def gdpo_batch(
    scores: list[list[tuple[float, float]]], rewards: list[list[float]] | None = None
) -> tuple[list[Group], list[Sample]]:
    """Groups of (token_a, short) score pairs, and their samples (advantage 9.0: to be replaced)."""
    groups = [group([{"token_a": a, "short": b} for a, b in g]) for g in scores]
    for g, values in zip(groups, rewards or []):
        for e, r in zip(g.episodes, values):
            e.reward = r
    return groups, [Sample(PROMPT, e.token_ids, advantage=9.0) for g in groups for e in g.episodes]


def test_gdpo_normalises_each_objective_in_its_group_then_the_sum_over_the_batch() -> None:
    """Hand-computed: token_a = (1, 0, 0, 0), short = (0, 1, 1, 0), weights (1/2, 1/2).
    A_token_a = (1.5, -0.5, -0.5, -0.5) (mean 1/4, unbiased std 1/2);
    A_short = (-s, s, s, -s) with s = 0.5 / sqrt(1/3) = sqrt(3)/2;
    S = (A_token_a + A_short) / 2; batch-normalised: S / std(S) (S has mean 0)."""
    groups, samples = gdpo_batch([[(1, 0), (0, 1), (0, 1), (0, 0)]])
    s = math.sqrt(3) / 2
    raw = [(1.5 - s) / 2, (-0.5 + s) / 2, (-0.5 + s) / 2, (-0.5 - s) / 2]
    std = math.sqrt(sum(x * x for x in raw) / 3)
    plain = stage({"name": "gdpo", "batch_normalize": False}, context())
    values, metrics = plain.before_update(groups, samples)
    assert values == pytest.approx(raw, rel=1e-5)
    assert metrics == {"reward_weighting/informative/token_a": 1.0, "reward_weighting/informative/short": 1.0}
    normalised, _ = stage({"name": "gdpo"}, context()).before_update(groups, samples)
    assert normalised == pytest.approx([x / std for x in raw], rel=1e-5)
    assert [smp.advantage for smp in samples] == [9.0] * 4  # the samples are not changed


def test_gdpo_keeps_apart_what_grpo_on_the_weighted_sum_collapses() -> None:
    """GRPO on R = (r_a + r_b)/2 = (1/2, 1/2, 1/2, 0) gives the rare token_a success and the common
    short successes the same advantage; GDPO ranks the rare one higher. A group where every
    objective is constant gets 0 under both; a common weight scale changes nothing under GDPO."""
    groups, samples = gdpo_batch([[(1, 0), (0, 1), (0, 1), (0, 0)], [(1, 1), (1, 1), (1, 1), (1, 1)]])
    rewards = torch.tensor([(a + b) / 2 for a, b in [(1, 0), (0, 1), (0, 1), (0, 0)] + [(1, 1)] * 4])
    grpo = compute_advantages("grpo", rewards, torch.tensor([0] * 4 + [1] * 4)).tolist()
    assert grpo[0] == pytest.approx(grpo[1]) and grpo[4:] == [0.0] * 4
    gdpo, metrics = stage({"name": "gdpo"}, context()).before_update(groups, samples)
    assert (
        gdpo[0] > gdpo[1] > gdpo[3]
        and gdpo[1] == pytest.approx(gdpo[2])
        and gdpo[4:] == pytest.approx([0.0] * 4, abs=1e-6)
    )
    assert metrics["reward_weighting/informative/token_a"] == 0.5
    scaled, _ = stage({"name": "gdpo"}, context(reward_weights=[5.0, 5.0])).before_update(groups, samples)
    assert scaled == pytest.approx(gdpo)
    tilted, _ = stage({"name": "gdpo", "weights": {"short": 3.0}}, context()).before_update(groups, samples)
    assert tilted[1] > tilted[0]  # weight on short: its successes now lead
    assert stage({"name": "gdpo"}, context()).before_update([], []) == (
        [],
        {},
    )  # a step with nothing to train


def test_gdpo_config_rules() -> None:
    base = ["reward.functions=[math_verify,format]", "reward_weighting.name=gdpo"]
    assert load_config(None, base).reward_weighting.batch_normalize is True
    with pytest.raises(ConfigError, match="algorithm.advantage 'dr_grpo' would be ignored"):
        load_config(None, [*base, "algorithm.advantage=dr_grpo"])
    with pytest.raises(ConfigError, match="turn off algorithm.overlong_shaping"):
        load_config(None, [*base, "algorithm.overlong_shaping=true", "algorithm.overlong_cache=4"])
    with pytest.raises(ConfigError, match="kl_placement: loss"):
        load_config(None, [*base, "algorithm.kl_coef=0.1", "algorithm.kl_placement=reward"])
    assert load_config(None, [*base, "replay.name=recap"]).replay.name == "recap"  # RECAP weighs loss terms


class ScriptedRollout:
    """Validation rollouts whose objective means follow a script (one point per measurement)."""

    def __init__(self, points: list[tuple[float, float]]) -> None:
        self.points, self.calls = list(points), 0

    def generate(self, prompts: list[dict], n: int) -> list[Group]:
        a, b = self.points[self.calls]
        self.calls += 1
        return [group([{"token_a": a, "short": b}] * n) for _ in prompts]


def test_hypervolume_multiplier_rises_above_one_when_the_front_moves_and_state_round_trips() -> None:
    """Objectives in units of scale 0.1; the reference is the first point less one unit. A point
    one unit beyond the front in one objective (and level in the other) adds one unit box:
    m = 0.5 + 1.5·tanh(1) > 1. A dominated point adds nothing: m = 0.5 < 1. Steps with no samples
    count for the schedule, and m is logged every step."""
    rollout = ScriptedRollout([(0.2, 0.2), (0.3, 0.2), (0.25, 0.15), (0.3, 0.3)])
    ctx = context(rollout=rollout, validation_rows=[{"prompt_ids": PROMPT}] * 3)
    config = {"name": "hypervolume", "every_n_steps": 2, "responses": 2, "scale": 0.1}
    weighting = stage(config, ctx)
    samples = lambda: [Sample([1], [2], advantage=1.0), Sample([1], [2], advantage=-2.0)]  # noqa: E731

    first, metrics = weighting.before_update([], samples())  # step 0: the reference point, m = 1
    assert first == [1.0, -2.0] and metrics["reward_weighting/multiplier"] == 1.0
    assert metrics["reward_weighting/hypervolume"] == pytest.approx(1.0)  # the first point's unit box
    assert weighting.before_update([], []) == ([], metrics)  # step 1: nothing to train, still counted
    assert weighting.observe({})["reward_weighting/multiplier"] == 1.0
    second, metrics = weighting.before_update(
        [], samples()
    )  # step 2: (0.3, 0.2), one unit further in token_a
    m = 0.5 + 1.5 * math.tanh(1.0)
    assert rollout.calls == 2 and metrics["reward_weighting/contribution"] == pytest.approx(1.0)
    assert m > 1 and second == pytest.approx([m, -2 * m])
    assert metrics["reward_weighting/multiplier"] == pytest.approx(m)
    assert weighting.observe({})["reward_weighting/multiplier"] == pytest.approx(m)
    assert metrics["reward_weighting/hypervolume"] == pytest.approx(2.0)
    assert metrics["reward_weighting/validation/token_a"] == pytest.approx(0.3)

    saved = weighting.state_dict()
    resumed = stage(config, ctx)
    resumed.load_state_dict(saved)
    for w in (weighting, resumed):
        w.before_update([], samples())  # step 3: holds m
    values, dominated = weighting.before_update([], samples())  # step 4: (0.25, 0.15) is dominated: m = 0.5
    assert (
        dominated["reward_weighting/multiplier"] == 0.5 < 1 and dominated["reward_weighting/pareto_size"] == 1
    )
    assert values == [0.5, -1.0]
    rollout.calls = 2
    assert resumed.before_update([], samples()) == (values, dominated)
    assert rollout.calls == 3
    weighting.before_update([], samples())  # step 5: holds
    _, moved = weighting.before_update([], samples())  # step 6: (0.3, 0.3): one unit further in short
    assert moved["reward_weighting/contribution"] == pytest.approx(
        2.0
    )  # the box grows from 2 x 1 to 2 x 2 units
    assert moved["reward_weighting/multiplier"] == pytest.approx(0.5 + 1.5 * math.tanh(2.0))


class LengthRollout:
    """Validation rollouts with scripted response lengths (tokens) and conciseness rewards."""

    def __init__(self, lengths: list[list[int]]) -> None:
        self.lengths, self.calls = [list(x) for x in lengths], 0

    def generate(self, prompts: list[dict], n: int) -> list[Group]:
        lengths = self.lengths[self.calls]
        self.calls += 1
        # the reward's own conciseness (against a drifting running mean) is 1 for every response: ignored
        scores = [{"acc": 0.5, "conciseness": 1.0} for _ in lengths]
        return [group(scores, [[7] * k for k in lengths])]


def test_hypervolume_measures_conciseness_against_a_frozen_length_threshold() -> None:
    rollout = LengthRollout([[10, 20, 30, 40], [10, 20, 20, 40], [30, 30, 30, 5]])
    ctx = context(
        rollout=rollout, validation_rows=[{"prompt_ids": PROMPT}], objectives=["acc", "conciseness"]
    )
    weighting = stage({"name": "hypervolume", "every_n_steps": 1}, ctx)
    _, first = weighting.before_update([], [])
    assert first["reward_weighting/length_threshold"] == 25.0  # the first rollout's mean length, frozen
    assert first["reward_weighting/validation/conciseness"] == 0.5  # 10 and 20 are below 25
    assert first["reward_weighting/validation/acc"] == 0.5
    _, second = weighting.before_update([], [])
    assert (
        second["reward_weighting/length_threshold"] == 25.0
        and second["reward_weighting/validation/conciseness"] == 0.75
    )
    assert second["reward_weighting/multiplier"] > 1  # more responses under the same threshold
    resumed = stage({"name": "hypervolume", "every_n_steps": 1}, ctx)
    resumed.load_state_dict(weighting.state_dict())
    _, third = resumed.before_update([], [])
    assert (
        third["reward_weighting/validation/conciseness"] == 0.25
        and third["reward_weighting/multiplier"] == 0.5
    )
    fixed = stage(
        {"name": "hypervolume", "length_threshold": 35},
        context(
            rollout=LengthRollout([[10, 20, 30, 40]]),
            validation_rows=[{"prompt_ids": PROMPT}],
            objectives=["acc", "conciseness"],
        ),
    )
    assert fixed.before_update([], [])[1]["reward_weighting/validation/conciseness"] == 0.75
    raw = stage(
        {"name": "hypervolume", "length_objectives": []},
        context(
            rollout=LengthRollout([[10, 20, 30, 40]]),
            validation_rows=[{"prompt_ids": PROMPT}],
            objectives=["acc", "conciseness"],
        ),
    )
    assert (
        raw.before_update([], [])[1]["reward_weighting/validation/conciseness"] == 1.0
    )  # the reward's score
    with pytest.raises(ConfigError, match="reward_weighting.scales: unknown objective 'acc'"):
        load_config(
            None,
            [
                "reward_weighting.name=hypervolume",
                "data.validation_size=8",
                "reward_weighting.scales={acc: 0.1}",
            ],
        )


def test_hypervolume_needs_a_validation_slice() -> None:
    with pytest.raises(ConfigError, match="data.validation_size"):
        load_config(None, ["reward_weighting.name=hypervolume"])
    cfg = load_config(None, ["reward_weighting.name=hypervolume", "data.validation_size=8"])
    assert cfg.reward_weighting.every_n_steps == 5


# ---------------------------------------------------------------- gradient weighting


def test_gradient_weighting_mirror_descent_on_the_simplex() -> None:
    weighting = stage({"name": "gradient", "lambda": 1e-4, "weights": {"token_a": 3.0}}, context())
    assert weighting.weights == {"token_a": 0.75, "short": 0.25}  # normalised to the simplex
    gram = [[4.0, -1.0], [-1.0, 1.0]]  # influence s = (3, 0)
    weighting.update(gram, lr=1e-5)  # eta / lambda = 0.1: w ∝ (0.75 e^0.3, 0.25)
    expected = 0.75 * math.exp(0.3) / (0.75 * math.exp(0.3) + 0.25)
    assert weighting.weights["token_a"] == pytest.approx(expected)
    assert sum(weighting.weights.values()) == pytest.approx(1.0)
    metrics = weighting.observe({})
    assert metrics["weights/token_a"] == pytest.approx(expected)
    for _ in range(50):
        weighting.update(gram, lr=1e-3)
        assert all(w >= 0 for w in weighting.weights.values())
        assert sum(weighting.weights.values()) == pytest.approx(1.0)
    floored = stage({"name": "gradient", "min_weight": 0.1}, context())
    for _ in range(5):
        floored.update(gram, lr=1e-3)
    assert floored.weights["short"] == pytest.approx(0.1 / 1.1) and floored.weights["token_a"] > 0.9
    state = weighting.state_dict()
    resumed = stage({"name": "gradient"}, context())
    resumed.load_state_dict(state)
    assert resumed.weights == weighting.weights and resumed.steps == weighting.steps
    with pytest.raises(ConfigError, match=r"reward_weighting.lambda: expected float > 0, got 0.0"):
        stage({"name": "gradient", "lambda": 0.0}, context())
    two = "reward.functions=[math_verify,format]"
    with pytest.raises(
        ConfigError, match=r"reward_weighting.min_weight: expected a value in \[0, 1/2\) for 2 objectives"
    ):
        load_config(None, [two, "reward_weighting.name=gradient", "reward_weighting.min_weight=0.5"])
    assert load_config(None, [two, "reward_weighting.name=gradient", "reward_weighting.min_weight=0.49"])
    with pytest.raises(ConfigError, match=r"weights on the simplex, so they must be >= 0"):
        load_config(None, ["reward_weighting.name=gradient", "reward_weighting.weights={math_verify: -1.0}"])
    with pytest.raises(ConfigError, match="unknown key 'reward_weighting.lamda'.*did you mean 'lambda'"):
        stage({"name": "gradient", "lamda": 1e-4}, context())


def test_objective_advantages_use_each_objective_alone() -> None:
    groups = [
        group([{"token_a": 1.0, "short": 1.0}, {"token_a": 0.0, "short": 1.0}]),
        group([{"token_a": 0.0, "short": 0.0}, {"token_a": 0.0, "short": 1.0}]),
    ]
    samples = [Sample(PROMPT, e.token_ids) for g in groups for e in g.episodes]
    advantages = per_objective(groups, samples)
    index = torch.tensor([0, 0, 1, 1])
    for k, name in enumerate(OBJECTIVES):
        rewards = torch.tensor([e.scores[name] for g in groups for e in g.episodes])
        assert advantages[k] == pytest.approx(compute_advantages("grpo", rewards, index).tolist())
    assert advantages[0][2:] == [0.0, 0.0] and advantages[1][:2] == [0.0, 0.0]


class ScriptedLearner:
    """A learner handle whose per-objective Gram matrices follow a script; it records its calls."""

    def __init__(self, grams: list[list[list[float]]], reference: list[list[float]] | None = None) -> None:
        self.grams, self.calls, self.reference = list(grams), [], reference

    def objective_gradients(self, samples: list[Sample], advantages: list[list[float]], layers) -> dict:
        self.calls.append((len(samples), layers))
        return {"gram": self.grams.pop(0), "lr": 1e-5}

    def compute_logprobs(self, samples: list[Sample], which: str = "policy") -> list[list[float]]:
        assert which == "ref" and self.reference is not None
        return self.reference


def test_gradient_weighting_averages_the_window_and_reweights_the_same_batch() -> None:
    """every_n_steps = 3: gradients on every step with samples (none on the empty step 2, which
    still counts), one update at step 3 from the window's average Gram matrix, and step 3's own
    advantages recomputed with the new weights; DAPO's shaping in the scalar reward is kept."""
    learner = ScriptedLearner([[[2.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 4.0]], [[1.0, 0.0], [0.0, 1.0]]])
    weighting = stage(
        {"name": "gradient", "lambda": 1e-5, "every_n_steps": 3, "layers": [0, 1]}, context(learner=learner)
    )
    scores = [[(1, 0), (0, 1), (0, 1), (0, 0)], [(1, 1), (0, 1), (1, 0), (0, 0)]]
    shaping = [[0.0, -0.5, 0.0, 0.0], [0.0, 0.0, 0.0, -1.0]]  # the overlong penalty in the scalar reward
    rewards = [[(a + b) / 2 + p for (a, b), p in zip(g, q)] for g, q in zip(scores, shaping)]
    groups, samples = gdpo_batch(scores, rewards)

    values, metrics = weighting.before_update(groups, samples)  # step 1: into the window
    assert values == [9.0] * 8 and weighting.weights == {"token_a": 0.5, "short": 0.5} and metrics == {}
    assert weighting.before_update([], []) == ([], {})  # step 2: no samples, no gradients, counted
    assert learner.calls == [(8, [0, 1])]
    values, metrics = weighting.before_update(groups, samples)  # step 3: the window's average
    # mean Gram (over the 2 steps with gradients) [[1, 0], [0, 2]]: s = (1, 2), eta / lambda = 1
    expected = {"token_a": 1 / (1 + math.e), "short": math.e / (1 + math.e)}
    assert weighting.weights == pytest.approx(expected)
    assert metrics["reward_weighting/window_steps"] == 2.0
    assert metrics["reward_weighting/influence/short"] == pytest.approx(2.0)
    new = [
        [expected["token_a"] * a + expected["short"] * b + p for (a, b), p in zip(g, q)]
        for g, q in zip(scores, shaping)
    ]
    index = torch.tensor([0] * 4 + [1] * 4)
    assert values == pytest.approx(compute_advantages("grpo", torch.tensor(sum(new, [])), index).tolist())
    values, _ = weighting.before_update(groups, samples)  # step 4: a new window, nothing changes yet
    assert values == [9.0] * 8 and len(learner.calls) == 3

    resumed = stage({"name": "gradient", "every_n_steps": 3}, context())
    resumed.load_state_dict(weighting.state_dict())
    assert (
        resumed.window_steps == 1 and resumed.window_gram == [[1.0, 0.0], [0.0, 1.0]] and resumed.steps == 4
    )


def test_gradient_reweighting_keeps_the_kl_in_the_reward() -> None:
    """With ``kl_placement: reward`` the recomputed rewards subtract β·KL again (one reference pass)."""
    algorithm = load_config(
        None, ["algorithm.advantage=dr_grpo", "algorithm.kl_coef=0.5", "algorithm.kl_placement=reward"]
    ).algorithm
    # response 1's behaviour logprobs sit 0.2 above the reference on both tokens
    learner = ScriptedLearner([[[1.0, 0.0], [0.0, 0.0]]], reference=[[-1.0, -1.0], [-1.2, -1.2]])
    weighting = stage({"name": "gradient", "lambda": 1e-5}, context(learner=learner, algorithm=algorithm))
    groups, samples = gdpo_batch([[(1, 0), (0, 1)]], [[0.5, 0.5]])
    for smp in samples:
        smp.rollout_logprobs = [-1.0, -1.0]
    values, _ = weighting.before_update(groups, samples)
    w = weighting.weights["token_a"]
    k3 = math.exp(-0.2) + 0.2 - 1
    rewards = [w, (1 - w) - 0.5 * 2 * k3]
    assert values == pytest.approx([(rewards[0] - rewards[1]) / 2, (rewards[1] - rewards[0]) / 2], rel=1e-5)


def test_gradient_layers_take_a_count_of_last_blocks_or_block_ids() -> None:
    from rlengine.learner.gradients import chosen_parameters

    named = [("model.embed_tokens.weight", torch.nn.Parameter(torch.zeros(1)))]
    named += [
        (f"model.layers.{i}.mlp.weight", torch.nn.Parameter(torch.full((1,), float(i)))) for i in range(4)
    ]
    frozen = torch.nn.Parameter(torch.zeros(1), requires_grad=False)
    named.append(("model.layers.3.norm.weight", frozen))
    ids = lambda params: [float(p.detach()) for p in params]  # noqa: E731
    assert ids(chosen_parameters(named, 2)) == [2.0, 3.0]
    assert ids(chosen_parameters(named, 9)) == [0.0, 1.0, 2.0, 3.0]  # more than there are: every block
    assert ids(chosen_parameters(named, [0, 2])) == [0.0, 2.0]
    assert len(chosen_parameters(named, 0)) == 5  # every trainable parameter
    with pytest.raises(
        ValueError, match=r"block ids \[7\] are not blocks of this model, which has blocks 0..3"
    ):
        chosen_parameters(named, [2, 7])
    two = ["reward.functions=[math_verify,format]", "reward_weighting.name=gradient"]
    assert load_config(None, [*two, "reward_weighting.layers=[10, 11, 12]"]).reward_weighting.layers == [
        10,
        11,
        12,
    ]
    with pytest.raises(ConfigError, match="non-empty list of distinct block ids"):
        load_config(None, [*two, "reward_weighting.layers=[3, 3]"])
    with pytest.raises(ConfigError, match="reward_weighting.layers"):
        load_config(None, [*two, "reward_weighting.layers=-1"])
    assert (
        load_config(None, [*two, "replay.name=recap"]).replay.name == "recap"
    )  # advantages untouched by RECAP


def conflicting_batch(seed: int, groups: int = 6, size: int = 4) -> tuple[list[Group], list[Sample]]:
    """Objective ``token_a`` (emit the target token) is behind: half of every group has it.
    Objective ``short`` (at most 4 tokens) is ahead: it is met by every response but one per group,
    and the long responses are the ones with the target token."""
    rng = random.Random(seed)
    out, samples = [], []
    for _ in range(groups):
        scores, tokens = [], []
        for i in range(size):
            response = [rng.randint(3000, 9000) for _ in range(4)]
            if i % 2 == 0:
                response[rng.randrange(4)] = TARGET
            if i == 0:
                response += [rng.randint(3000, 9000) for _ in range(4)]
            tokens.append(response)
            scores.append({"token_a": float(TARGET in response), "short": float(len(response) <= 4)})
        out.append(group(scores, tokens))
    samples = [Sample(PROMPT, e.token_ids) for g in out for e in g.episodes]
    return out, samples


@pytest.fixture(scope="module")
def in_process_rank(tiny_model_dir):
    """One real DeepSpeed rank in this process with a LearnerGroup's calls (micro-batches of 64
    tokens, so accumulation over micro-batches is exercised)."""
    from tests.conftest import local_learner

    return local_learner(tiny_model_dir, "learner.lr=1.0e-5", "learner.micro_batch_tokens=64")


@pytest.mark.slow
def test_learner_objective_gradients_equal_plain_autograd(tiny_model_dir, in_process_rank) -> None:
    """The Gram matrix the learner returns equals one from plain per-objective gradients of
    -Σ A_k·logp / tokens over the last block (full-vocabulary logprobs, an independent model copy)."""
    from transformers import AutoModelForCausalLM

    from tests.test_learner_rank import full_logits_reference

    groups, samples = conflicting_batch(0)
    advantages = per_objective(groups, samples)
    result = in_process_rank.objective_gradients(samples, advantages, layers=1)

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    params = [p for n, p in model.named_parameters() if ".layers.1." in n]
    logprobs, _ = full_logits_reference(model, samples, in_process_rank.spec.temperature)
    tokens = torch.tensor([len(s.response_ids) for s in samples])
    flat = []
    for per_sample in advantages:
        per_token = torch.repeat_interleave(torch.tensor(per_sample), tokens)
        loss = -(per_token * logprobs).sum() / tokens.sum()
        grads = torch.autograd.grad(loss, params, retain_graph=True)
        flat.append(torch.cat([g.reshape(-1) for g in grads]))
    reference = torch.stack(flat) @ torch.stack(flat).T
    assert torch.tensor(result["gram"]) == pytest.approx(reference, rel=1e-4, abs=1e-10)
    assert reference[0, 0] > 0 and reference[1, 1] > 0
    assert result["lr"] == pytest.approx(1e-5)
    everything = in_process_rank.objective_gradients(samples, advantages, layers=0)
    assert everything["gram"][0][0] > result["gram"][0][0]  # more parameters, a larger norm
    by_id = in_process_rank.objective_gradients(samples, advantages, layers=[1])  # block 1 = the last one
    assert torch.tensor(by_id["gram"]) == pytest.approx(torch.tensor(result["gram"]), rel=1e-5, abs=1e-12)


@pytest.mark.slow
def test_gradient_weighting_moves_weight_toward_the_lagging_objective(in_process_rank) -> None:
    """On the real learner's gradients: the objective that is behind (token_a, half met) gains
    weight over the one that is ahead (short, met by 3 of 4), step after step."""
    weighting = stage(
        {"name": "gradient", "lambda": 1e-5, "layers": 1},
        context(learner=in_process_rank),
    )
    history = [weighting.weights["token_a"]]
    for seed in range(3):
        groups, samples = conflicting_batch(seed)
        set_scalar_rewards(groups, weighting.combine, OBJECTIVES, AlgorithmConfig(), 64)
        values, metrics = weighting.before_update(groups, samples)
        set_scalar_rewards(groups, weighting.combine, OBJECTIVES, AlgorithmConfig(), 64)  # the new weights
        assert values == pytest.approx(
            advantages(AlgorithmConfig(), episode_rewards(groups), groups, samples).tolist()
        )
        history.append(weighting.weights["token_a"])
        assert metrics["reward_weighting/influence/token_a"] > metrics["reward_weighting/influence/short"]
    assert history == sorted(history) and history[-1] > history[0] + 0.05, history
    assert sum(weighting.weights.values()) == pytest.approx(1.0)


@pytest.mark.slow
def test_objective_gradients_are_the_same_over_two_ranks(
    tiny_model_dir, ray_session, in_process_rank
) -> None:
    """Two learner ranks (Ray actors) under ZeRO-3, parameters partitioned between them, return the
    Gram matrix that one rank (ZeRO-2) computes over the whole batch. (The real-stack run below
    covers two ranks under ZeRO-2.)"""
    from tests.conftest import learner_group

    groups, samples = conflicting_batch(1)
    advantages = per_objective(groups, samples)
    single = in_process_rank.objective_gradients(samples, advantages, layers=1)
    learner = learner_group(tiny_model_dir, "learner.zero_stage=3", num_ranks=2)
    try:
        double = learner.objective_gradients(samples, advantages, layers=1)
    finally:
        learner.shutdown()
    assert torch.tensor(double["gram"]) == pytest.approx(torch.tensor(single["gram"]), rel=1e-4, abs=1e-10)


# ---------------------------------------------------------------- real stack


def real_run(tiny_model_dir: str, tmp_path, *overrides: str) -> tuple[list[dict], object]:
    import json

    from rlengine.trainer import train
    from tests.conftest import tiny_run_overrides

    run = tmp_path / "run"
    cfg = load_config(
        None,
        [
            *tiny_run_overrides(tiny_model_dir, run, "conciseness", "format"),
            "trainer.max_steps=2",
            "trainer.save_every=2",
            *overrides,
        ],
    )
    train(cfg)
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return metrics, run


@pytest.mark.slow
def test_gradient_weighting_real_stack_two_learner_ranks(tiny_model_dir, ray_session, tmp_path) -> None:
    """Gradient weighting on the real stack with 2 learner ranks under ZeRO-2: the weights move,
    stay on the simplex, are logged every step and checkpointed."""
    metrics, run = real_run(
        tiny_model_dir,
        tmp_path,
        "learner.num_ranks=2",
        "learner.zero_stage=2",
        "reward_weighting.name=gradient",
        "reward_weighting.lambda=1.0e-4",
        "reward_weighting.layers=1",
    )
    names = ["even_length", "conciseness", "format"]
    assert [m["step"] for m in metrics] == [1, 2]
    for m in metrics:
        weights = [m[f"weights/{k}"] for k in names]
        assert sum(weights) == pytest.approx(1.0) and min(weights) >= 0
        assert m["time/reward_weighting"] > 0 and m["learner/skipped_steps"] == 0
        assert m["reward_weighting/grad_norm/even_length"] > 0
    assert metrics[-1]["weights/even_length"] != pytest.approx(1 / 3, abs=1e-6)
    assert "reward/mean_correct_length" in metrics[-1] and "reward/conciseness/mean" in metrics[-1]
    state = torch.load(run / "checkpoints/step_2/trainer_state.pt", weights_only=False)
    saved = state["stages"]["reward_weighting"]["weights"]
    assert saved == pytest.approx({k: metrics[-1][f"weights/{k}"] for k in names})
    assert state["mean_correct_length"] == pytest.approx(metrics[-1]["reward/mean_correct_length"])


@pytest.mark.slow
def test_hypervolume_real_stack_with_per_objective_eval(tiny_model_dir, ray_session, tmp_path) -> None:
    """Hypervolume weighting measures a held-out slice through the rollout pool; evaluation
    reports each objective per benchmark (in the metrics and in eval/step_N.json)."""
    import json

    metrics, run = real_run(
        tiny_model_dir,
        tmp_path,
        "data.validation_size=4",
        "reward_weighting.name=hypervolume",
        "reward_weighting.every_n_steps=1",
        "reward_weighting.responses=2",
        "evaluation.benchmarks=[gsm8k]",
        "evaluation.limit=3",
        "evaluation.max_tokens=12",
        "evaluation.every_n_steps=2",
    )
    last = metrics[-1]
    for m in metrics:
        assert 0.5 <= m["reward_weighting/multiplier"] <= 2.0 and m["time/reward_weighting"] > 0
        assert 0 <= m["reward_weighting/validation/format"] <= 1
        assert m["weights/even_length"] == pytest.approx(1 / 3)  # three objectives of weight 1, normalised
    assert metrics[0]["reward_weighting/multiplier"] == 1.0  # the first point is the reference
    for name in ("even_length", "conciseness", "format"):
        assert 0 <= last[f"eval/gsm8k/objective/{name}"] <= 1
    saved = json.loads((run / "eval" / "step_2.json").read_text())
    assert set(saved["benchmarks"]["gsm8k"]["objectives"]) == {"even_length", "conciseness", "format"}


def test_validation_slice_is_held_out_of_training_rows(tmp_path) -> None:
    from rlengine.data import JsonlRows, PreparedRows
    from rlengine.data.prompts import split_validation

    rows = [{"id": str(i)} for i in range(10)]
    training, validation = split_validation(rows, 3)
    assert [r["id"] for r in training] == [str(i) for i in range(7)]
    assert [r["id"] for r in validation] == ["7", "8", "9"]
    assert split_validation(rows, 0) == (rows, [])
    with pytest.raises(ValueError, match="data.validation_size: 10 held-out prompts leave none"):
        split_validation(rows, 10)
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(f'{{"problem": "p{i}", "answer": "{i}"}}\n' for i in range(10)))
    source = JsonlRows(path, str(path), "r", ("problem", "answer", "id"))
    lazy = PreparedRows(source, lambda row: None if row["answer"] == "8" else row)
    training, validation = split_validation(lazy, 3)
    assert len(training) == 7 and training[6]["answer"] == "6"
    with pytest.raises(IndexError):
        training[7]
    assert [r["answer"] for r in validation] == ["7", "9"]  # a prompt too long to roll out is skipped
