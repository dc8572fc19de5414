"""The run's prompt rows: load ``data.source``, render and tokenise every prompt, and hold out the
validation slice (``data.validation_size``) that stages measure on and the curriculum never draws.
Local evaluation files (``evaluation.benchmarks``) are read once here too, so that a bad row in
any data file fails before Ray or vLLM start."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rlengine.data.rows import LazyRows, PreparedRows
from rlengine.data.sources import BENCHMARKS, FILE_SUFFIXES, load_prompt_source
from rlengine.data.templates import render_prompt
from rlengine.errors import DataError


class RowRange(LazyRows):
    """Rows ``start .. stop - 1`` of a (lazy) sequence, read when indexed."""

    def __init__(self, rows: Sequence[Any], start: int, stop: int) -> None:
        self.rows, self.start, self.stop = rows, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def row(self, i: int) -> Any:
        return self.rows[self.start + i]


def check_evaluation_files(cfg: Any) -> None:
    """Read the rows that evaluation will use from every local file in ``evaluation.benchmarks``
    (when the run evaluates), so a bad row is reported now, not at the first evaluation.

    Raises:
        DataError: ``evaluation.benchmarks[i]: <file>:<line>: ...``.
    """
    ev = cfg.evaluation
    if ev.every_n_steps <= 0 and not ev.before_training:
        return
    for i, name in enumerate(ev.benchmarks):
        if name in BENCHMARKS or not str(name).lower().endswith(FILE_SUFFIXES):
            continue
        try:
            load_prompt_source(name, limit=ev.limit, base_dir=cfg.config_dir)
        except DataError as e:
            raise DataError(f"evaluation.benchmarks[{i}]: {e}") from None


def load_prompt_rows(cfg: Any, tokenizer: Any) -> Sequence[dict | None]:
    """Load the prompt source, render every prompt, tokenize it, drop prompts that do not fit.

    With ``data.lazy`` nothing is read beyond an index: rows are rendered and tokenised when a
    curriculum draws them, and a prompt that does not fit reads as None (skipped by the curriculum).
    The local evaluation files are checked first (:func:`check_evaluation_files`).
    """
    check_evaluation_files(cfg)
    data = cfg.data
    kwargs: dict[str, Any] = {}
    if data.source == "synthetic_arithmetic":
        kwargs = dict(
            num=data.synthetic_num,
            seed=cfg.trainer.seed,
            ops=tuple(data.synthetic_ops),
            min_digits=data.synthetic_min_digits,
            max_digits=data.synthetic_max_digits,
        )
    rows = load_prompt_source(
        data.source,
        split=data.split,
        problem_field=data.problem_field,
        answer_field=data.answer_field,
        id_field=data.id_field,
        limit=data.limit,
        base_dir=cfg.config_dir,
        lazy=data.lazy,
        **kwargs,
    )
    budget = cfg.rollout.max_model_len - cfg.rollout.max_tokens

    def prepare(row: dict) -> dict | None:
        text = render_prompt(
            row["problem"],
            tokenizer,
            template=data.template,
            chat_template=data.chat_template,
            system_prompt=data.system_prompt,
            row=row,
        )
        ids = tokenizer(text, add_special_tokens=not data.chat_template)["input_ids"]
        return {**row, "prompt": text, "prompt_ids": ids} if len(ids) <= budget else None

    if data.lazy:
        return PreparedRows(rows, prepare)
    kept = [row for row in map(prepare, rows) if row is not None]
    if not kept:
        raise ValueError(
            f"data.source '{data.source}': no prompt fits in rollout.max_model_len - rollout.max_tokens = {budget} tokens"
        )
    return kept


def split_validation(rows: Sequence[dict | None], size: int) -> tuple[Sequence[dict | None], list[dict]]:
    """``(training rows, validation rows)``: the last ``size`` rows are held out (lazy rows stay lazy;
    the validation rows are read now, skipping prompts too long to roll out)."""
    if size <= 0:
        return rows, []
    if size >= len(rows):
        raise ValueError(
            f"data.validation_size: {size} held-out prompts leave none of the {len(rows)} prompts to train on"
        )
    cut = len(rows) - size
    training = RowRange(rows, 0, cut) if isinstance(rows, LazyRows) else rows[:cut]
    return training, [row for row in RowRange(rows, cut, len(rows)) if row is not None]


def load_replay_sources(cfg: Any, tokenizer: Any) -> dict[str, tuple[list[dict], list[dict]]]:
    """The rows of every ``replay.sources`` entry (RECAP's other domains), read before anything
    starts: ``{name: (training rows, held-out rows)}``, the held-out rows being the last
    ``heldout`` of the source.

    RL rows are rendered as the run's prompts (``data.chat_template``, ``data.system_prompt``; the
    source's ``template``, default ``data.template``) and tokenised. Supervised rows get
    ``response_ids``: the reference completion (``answer_field``) tokenised, with the EOS token,
    cut at ``rollout.max_tokens`` (the learner's response length). Prompts that do not fit in
    ``rollout.max_model_len - rollout.max_tokens`` are dropped.

    Raises:
        DataError: ``replay.sources[i].data: <file>:<line>: ...``, or no row that fits.
    """
    data, result = cfg.data, {}
    budget = cfg.rollout.max_model_len - cfg.rollout.max_tokens
    for i, spec in enumerate(getattr(cfg.replay, "sources", None) or []):
        where = f"replay.sources[{i}]"
        try:
            rows = load_prompt_source(
                spec.data,
                split=spec.split,
                problem_field=spec.problem_field,
                answer_field=spec.answer_field,
                limit=None if spec.limit is None else spec.offset + spec.limit,
                base_dir=cfg.config_dir,
            )[spec.offset :]
        except DataError as e:
            raise DataError(f"{where}.data: {e}") from None
        supervised = spec.kind == "supervised"
        template = spec.template or ("{problem}" if supervised else data.template)
        prepared = []
        for row in rows:
            text = render_prompt(
                row["problem"],
                tokenizer,
                template=template,
                chat_template=data.chat_template,
                system_prompt=data.system_prompt,
                row=row,
            )
            ids = tokenizer(text, add_special_tokens=not data.chat_template)["input_ids"]
            if len(ids) > budget:
                continue
            row = {**row, "id": f"{spec.name}/{row['id']}", "prompt": text, "prompt_ids": ids}
            if supervised:
                response = tokenizer(str(row["answer"]), add_special_tokens=False)["input_ids"]
                eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
                row["response_ids"] = (response + eos)[: cfg.rollout.max_tokens]
            prepared.append(row)
        if len(prepared) <= spec.heldout:
            raise DataError(
                f"{where}.data '{spec.data}': {len(prepared)} rows fit in {budget} prompt tokens, "
                f"not more than {where}.heldout = {spec.heldout}; nothing is left to train on"
            )
        cut = len(prepared) - spec.heldout
        result[spec.name] = (prepared[:cut], prepared[cut:])
    return result
