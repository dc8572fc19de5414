"""Turn a prompt row into the text the policy sees.

A template is plain text with ``{name}`` placeholders, where ``name`` is ``problem`` or any
other field of the row (``{level}``, ``{subject}`` ...). Only ``{identifier}`` is a
placeholder: other braces, such as the ``\\boxed{}`` in :data:`DEFAULT_MATH_TEMPLATE` or LaTeX
in the template, are left alone, so templates never need brace escaping. Write
``{{name}}`` to get a literal ``{name}``.

After filling the template, the text becomes the user message of the tokenizer's chat
template (with ``add_generation_prompt=True``) when ``chat_template`` is true and the
tokenizer has one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from rlengine.errors import DataError, did_you_mean

__all__ = ["DEFAULT_MATH_TEMPLATE", "PLAIN_TEMPLATE", "fill_template", "render_prompt"]

#: Plain pass-through template.
PLAIN_TEMPLATE = "{problem}"
#: The usual instruction for math RL (Qwen2.5-Math / SimpleRL style boxed answers).
DEFAULT_MATH_TEMPLATE = "{problem}\nPlease reason step by step, and put your final answer within \\boxed{}."

# ``{{name}}`` (escaped, group 1) or ``{name}`` (placeholder, group 2).
_PLACEHOLDER = re.compile(r"\{\{([A-Za-z_]\w*)\}\}|\{([A-Za-z_]\w*)\}")


def fill_template(template: str, fields: Mapping[str, Any]) -> str:
    """Substitute ``{name}`` placeholders in ``template`` with ``str(fields[name])``.

    Raises:
        DataError: a placeholder names a field that ``fields`` does not have (the message names
            the placeholder, the available fields and the closest one).
    """

    def _sub(m: re.Match[str]) -> str:
        if m.group(1) is not None:
            return "{" + m.group(1) + "}"
        name = m.group(2)
        if name not in fields:
            raise DataError(
                f"prompt template placeholder {{{name}}} has no matching field{did_you_mean(name, fields)}"
                f"; available fields: {sorted(fields)}. Template: {template!r}"
            )
        return str(fields[name])

    return _PLACEHOLDER.sub(_sub, template)


def render_prompt(
    problem: str,
    tokenizer: Any = None,
    *,
    template: str = PLAIN_TEMPLATE,
    chat_template: bool = True,
    system_prompt: str | None = None,
    row: Mapping[str, Any] | None = None,
) -> str:
    """Render one prompt string for generation.

    Args:
        problem: the problem text (fills ``{problem}``; wins over ``row["problem"]``).
        tokenizer: a Hugging Face tokenizer; only used for its chat template (may be None
            when ``chat_template`` is False).
        template: text with ``{field}`` placeholders (see the module docstring).
        chat_template: wrap the filled text as a user message with the tokenizer's chat
            template and append the assistant generation prompt. Ignored when the tokenizer
            has no chat template.
        system_prompt: optional system message. Without a chat template it is prepended to the
            text followed by a blank line.
        row: the full prompt row, so the template may use its other fields.

    Returns:
        The prompt text, ready to be tokenised (chat special tokens already included).

    Raises:
        DataError: a template placeholder names a field that does not exist.
    """
    fields: dict[str, Any] = dict(row) if row is not None else {}
    fields["problem"] = problem
    text = fill_template(template, fields)
    if chat_template and tokenizer is not None and getattr(tokenizer, "chat_template", None):
        messages: list[dict[str, str]] = []
        if system_prompt is not None:
            messages.append({"role": "system", "content": system_prompt})
        messages.append({"role": "user", "content": text})
        rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return str(rendered)
    if system_prompt:
        return f"{system_prompt}\n\n{text}"
    return text
