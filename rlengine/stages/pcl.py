"""Prompt Curriculum Learning (arXiv 2510.01135): ``curriculum.name: pcl``.

A value model V(x) predicts the current policy's pass rate on prompt x from the prompt alone (one
forward pass, no generation). Each :meth:`PCLCurriculum.select` of B prompts draws k·B candidates
from the data (k = ``candidates_factor``), scores them, and keeps the B whose |V(x) − τ| is
smallest: prompts of intermediate difficulty, where the GRPO gradient is largest. After the step,
:meth:`PCLCurriculum.observe` fits V by MSE to the pass rate each selected prompt's group really had
(refill rounds included), so the model needs no extra rollouts and lags the policy by one step.

Predictions belong to the step whose prompts they chose. Under ``rollout.mode: one_step_off_policy``
the next step's prompts are selected before this step is observed, so every :meth:`select` is kept
as a selection of its own (ids, predictions, candidates scored, seconds), and :meth:`observe` takes
the oldest pending selections that its prompts cover (:func:`take_selections`): exactly the ones
rolled out for the step observed. They are dropped once observed; the others wait (and are
checkpointed) for their own step.

Candidates come from the same seeded, epoch-shuffled walk over the data as ``uniform`` (each
prompt is a candidate once per epoch); the candidates not chosen are skipped for that epoch, as in
the paper's uniform candidate draw. Only the candidate rows are touched, never the whole set.

See docs/curriculum.md for every option and what it costs.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Annotated, Any

from rlengine.data import PromptDataset
from rlengine.errors import ConfigError
from rlengine.schema import Count, Range
from rlengine.stages.registry import Curriculum, StageContext, register
from rlengine.stages.value_model import (
    ValueModelConfig,
    ValueModelHandle,
    ValueModelSpec,
    build_value_model,
    resolve_placement,
)


@dataclass
class PCLConfig:
    name: str = "pcl"
    """Stage name."""
    tau: Annotated[float, Range(0, 1, low_open=True, high_open=True)] = 0.5
    """Target pass rate τ: the prompts whose predicted pass rate is nearest it are rolled out."""
    candidates_factor: Count = 4
    """k: candidates scored per prompt selected (k·B per step; the paper uses 4)."""
    fit_history: Count = 1
    """Steps of (prompt, pass rate) pairs each fit uses: 1 = only the step just made, as in the paper
    (B = 512 there); a few steps steady the fit when B is small. Older pairs are one more policy
    version stale each step."""
    value_model: ValueModelConfig = field(default_factory=ValueModelConfig)
    """The value model: backbone, head, what is trained, optimiser and placement."""


def select_nearest(predictions: list[float], num: int, tau: float) -> list[int]:
    """Indices of the ``num`` predictions nearest ``tau``, in candidate order. Ties in
    |prediction − τ| go to the earlier candidate, so the choice is deterministic."""
    ranked = sorted(range(len(predictions)), key=lambda i: (abs(predictions[i] - tau), i))
    return sorted(ranked[:num])


def explained_variance(predicted: list[float], realised: list[float]) -> float:
    """1 − Var(realised − predicted) / Var(realised); NaN when the realised values do not vary."""
    if len(realised) < 2:
        return math.nan
    variance = statistics.pvariance(realised)
    if variance == 0:
        return math.nan
    return 1.0 - statistics.pvariance([r - p for p, r in zip(predicted, realised)]) / variance


def within_step_explained_variance(steps: list[list[tuple[float, float]]]) -> float:
    """Explained variance of (predicted, realised) pairs pooled over several steps, each step's mean
    taken out first: 1 − Σ (residual − its step mean)² / Σ (realised − its step mean)².

    A shift common to a step's prompts (V lagging a policy that improved) does not change which
    prompts are selected, so it is not counted against V. NaN when the realised values do not vary.
    """
    residual_ss = realised_ss = 0.0
    for pairs in steps:
        if len(pairs) < 2:
            continue
        residuals = [r - p for p, r in pairs]
        mean_residual, mean_realised = statistics.fmean(residuals), statistics.fmean(r for _, r in pairs)
        residual_ss += sum((x - mean_residual) ** 2 for x in residuals)
        realised_ss += sum((r - mean_realised) ** 2 for _, r in pairs)
    return 1.0 - residual_ss / realised_ss if realised_ss > 0 else math.nan


@dataclass
class Selection:
    """One :meth:`PCLCurriculum.select`: the prompt ids it returned (repeats included, in order),
    the prediction each was chosen by, and what choosing them cost."""

    ids: list[str]
    predictions: list[float]
    candidates: int
    seconds: float

    def state_dict(self) -> dict[str, Any]:
        return {
            "ids": list(self.ids),
            "predictions": list(self.predictions),
            "candidates": self.candidates,
            "seconds": self.seconds,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Selection:
        return cls(
            list(state["ids"]), list(state["predictions"]), int(state["candidates"]), float(state["seconds"])
        )


def take_selections(
    pending: list[Selection], observed_ids: list[str]
) -> tuple[list[Selection], list[Selection]]:
    """Split ``pending`` (oldest first) into the selections an observe of ``observed_ids`` covers
    and those still waiting for their step.

    A selection is taken when every id it returned is among the observed ids not yet claimed by an
    older taken selection (a multiset: a prompt drawn twice must be observed twice). So a step's
    first selection and its refills are taken, and the next step's selection (one-step-off) stays,
    even when it drew some of the same prompts. Selections older than the newest taken one that
    were not taken were never rolled out (nothing will observe them): they are dropped.
    """
    left: dict[str, int] = {}
    for prompt_id in observed_ids:
        left[prompt_id] = left.get(prompt_id, 0) + 1
    taken_at: list[int] = []
    for index, selection in enumerate(pending):
        wanted: dict[str, int] = {}
        for prompt_id in selection.ids:
            wanted[prompt_id] = wanted.get(prompt_id, 0) + 1
        if all(left.get(k, 0) >= v for k, v in wanted.items()):
            for k, v in wanted.items():
                left[k] -= v
            taken_at.append(index)
    if not taken_at:
        return [], list(pending)
    taken = [pending[i] for i in taken_at]
    waiting = [s for i, s in enumerate(pending) if i > taken_at[-1]]
    return taken, waiting


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else math.nan


def prompt_key(row: dict[str, Any]) -> tuple[str, str, list[int]]:
    """What the value model reads of a prompt row: id (the feature-cache key), text and token ids."""
    return str(row["id"]), row.get("prompt", row["problem"]), list(row.get("prompt_ids", []))


@register("curriculum", "pcl", PCLConfig)
class PCLCurriculum(Curriculum):
    """Rolls out the prompts whose predicted pass rate is nearest ``tau``. Its state is the data
    cursor, the value model (weights and optimiser) and the fit history."""

    def __init__(
        self, config: PCLConfig, context: StageContext, model: ValueModelHandle | None = None
    ) -> None:
        self.config = config
        self.dataset = PromptDataset(context.rows, seed=context.seed)
        self.model = model or build_value_model(
            value_model_spec(config.value_model, context),
            resolve_placement(config.value_model.placement, context.gpu, context.learner is not None),
            context.learner,
            init_pass_rate=config.tau,
        )
        self.pending: list[Selection] = []
        """Selections not observed yet, oldest first: this step's (refills included) and, under
        one-step-off rollouts, the next step's."""
        self.history: list[list[tuple[tuple[str, str, list[int]], float, float | None]]] = []
        """The last ``fit_history`` steps' (prompt key, realised pass rate, prediction) triples."""

    def candidates_for(self, num_prompts: int) -> list[dict]:
        """k·B distinct candidate rows (all rows when the data has fewer)."""
        wanted = min(num_prompts * self.config.candidates_factor, len(self.dataset))
        rows: dict[str, dict] = {}
        drawn = 0
        while len(rows) < wanted and drawn < 2 * len(self.dataset):  # duplicates only across an epoch end
            batch = self.dataset.next_batch(wanted - len(rows))
            drawn += len(batch)
            for row in batch:
                rows.setdefault(str(row["id"]), row)
        return list(rows.values())

    def select(self, num_prompts: int) -> list[dict]:
        """Score k·B candidates with the value model and return the B nearest τ."""
        start = time.perf_counter()
        candidates = self.candidates_for(num_prompts)
        predictions = self.model.predict([prompt_key(row) for row in candidates])
        chosen = select_nearest(predictions, num_prompts, self.config.tau)
        # repeats only when the data has fewer than B rows
        picked = [chosen[i % len(chosen)] for i in range(num_prompts)] if chosen else []
        self.pending.append(
            Selection(
                [str(candidates[i]["id"]) for i in picked],
                [predictions[i] for i in picked],
                len(candidates),
                time.perf_counter() - start,
            )
        )
        return [candidates[i] for i in picked]

    def observe(self, prompts: list[dict], pass_rates: list[float]) -> dict[str, float]:
        """Report how well the predictions matched, then fit the value model to the observed pass rates.

        The predictions compared are those of the selections that chose these prompts
        (:func:`take_selections`), never a later step's selection of the same prompt ids."""
        start = time.perf_counter()
        taken, self.pending = take_selections(self.pending, [str(p["id"]) for p in prompts])
        queued: dict[str, list[float]] = {}
        for selection in taken:
            for prompt_id, prediction in zip(selection.ids, selection.predictions):
                queued.setdefault(prompt_id, []).append(prediction)
        chosen_by = [queued[str(p["id"])].pop(0) if queued.get(str(p["id"])) else None for p in prompts]
        predicted = [v for v in chosen_by if v is not None]
        realised = [float(r) for r, v in zip(pass_rates, chosen_by) if v is not None]
        tau = self.config.tau
        metrics = {
            "curriculum/value_mse": _mean([(p - r) ** 2 for p, r in zip(predicted, realised)]),
            "curriculum/explained_variance": explained_variance(predicted, realised),
            "curriculum/predicted_pass_rate": _mean(predicted),
            "curriculum/realised_pass_rate": _mean(realised),
            "curriculum/distance_to_tau": _mean([abs(r - tau) for r in realised]),
            "curriculum/candidates": float(sum(s.candidates for s in taken)),
        }
        step = [(prompt_key(p), float(r), v) for p, r, v in zip(prompts, pass_rates, chosen_by)]
        self.history = [*self.history, step][-self.config.fit_history :]
        metrics["curriculum/explained_variance_window"] = within_step_explained_variance(
            [[(e[2], e[1]) for e in step if e[2] is not None] for step in self.history]
        )
        pairs = [entry for step in self.history for entry in step]
        fit = self.model.fit([e[0] for e in pairs], [e[1] for e in pairs]) if prompts else {}
        metrics["curriculum/fit_loss"] = fit.get("loss", math.nan)
        metrics["time/curriculum"] = sum(s.seconds for s in taken) + time.perf_counter() - start
        return metrics

    def state_dict(self) -> dict:
        return {
            "dataset": self.dataset.state_dict(),
            "value_model": self.model.state_dict(),
            "history": self.history,
            "pending": [s.state_dict() for s in self.pending],
        }

    def load_state_dict(self, state: dict) -> None:
        self.dataset.load_state_dict(state["dataset"])
        self.history = state["history"]
        # older checkpoints hold no pending selection: the step observed next reports no prediction metrics
        self.pending = [Selection.from_state_dict(s) for s in state.get("pending", [])]
        self.model.load_state_dict(state["value_model"])

    def close(self) -> None:
        """Stop the value model's actor (or drop it from the learner's process)."""
        self.model.close()


def value_model_spec(config: ValueModelConfig, context: StageContext) -> ValueModelSpec:
    """Resolve ``backbone`` (``policy_init`` or a model name) into a spec the model can be built from."""
    model = context.model
    dtype = getattr(model, "dtype", "float32")
    trust = bool(getattr(model, "trust_remote_code", False))
    if config.backbone == "policy_init":
        if context.policy_path is None:
            raise ConfigError(
                "curriculum.value_model.backbone: policy_init needs the policy's path (none given)"
            )
        path, shared = context.policy_path, True
    else:
        from rlengine.models import resolve_model

        path = resolve_model(
            config.backbone, cache_dir=getattr(model, "cache_dir", None), trust_remote_code=trust
        )
        shared = False
    return ValueModelSpec(
        config,
        path,
        shares_policy_tokenizer=shared,
        dtype=dtype,
        trust_remote_code=trust,
        seed=context.seed,
        gpu=context.gpu,
    )
