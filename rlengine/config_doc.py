"""Generate the config reference (docs/config.md) from the field docstrings in the source.

python -m rlengine.config_doc > docs/config.md
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import typing

from rlengine import config
from rlengine.schema import yaml_key
from rlengine.stages import REGISTRY, STAGE_KINDS

SECTIONS = {
    "model": config.ModelConfig,
    "data": config.DataConfig,
    "rollout": config.RolloutConfig,
    "reward": config.RewardConfig,
    "algorithm": config.AlgorithmConfig,
    "learner": config.LearnerConfig,
    "evaluation": config.EvaluationConfig,
    "logging": config.LoggingConfig,
    "trainer": config.TrainerConfig,
}


def field_docs(cls: type) -> list[tuple[str, str, str, str]]:
    """(name, annotation, default, docstring) for every annotated field of a dataclass, the
    fields of its dataclass bases first (a subclass's redefinition replaces the base's row)."""
    rows: dict[str, tuple[str, str, str, str]] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass) and klass.__module__ != "builtins":
            rows.update((row[0], row) for row in _own_field_docs(klass))
    return list(rows.values())


def _own_field_docs(cls: type) -> list[tuple[str, str, str, str]]:
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body
    rows = []
    for i, node in enumerate(body):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            doc = ""
            if (
                i + 1 < len(body)
                and isinstance(body[i + 1], ast.Expr)
                and isinstance(body[i + 1].value, ast.Constant)
            ):
                doc = " ".join(str(body[i + 1].value.value).split())
            default = ast.unparse(node.value) if node.value is not None else ""
            if default.startswith("field(default_factory=lambda: "):
                default = default[len("field(default_factory=lambda: ") : -1]
            elif default.startswith("field(default_factory="):
                default = default[len("field(default_factory=") : -1] + "()"
            rows.append((yaml_key(node.target.id), ast.unparse(node.annotation), default, doc))
    return rows


def table(cls: type, skip: tuple[str, ...] = ()) -> str:
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for name, annotation, default, doc in field_docs(cls):
        if name in skip:
            continue
        cell = lambda s: s.replace("|", "\\|")  # noqa: E731
        lines.append(f"| `{name}` | `{cell(annotation)}` | `{cell(default)}` | {cell(doc)} |")
    return "\n".join(lines)


def nested_sections(cls: type) -> list[tuple[str, type]]:
    """Fields of ``cls`` that are themselves sections (dataclass defaults), as ``(name, class)``, and
    lists of sections (``list[SomeConfig]``), as ``(name[i], class)``."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(f.default_factory):
            out.append((f.name, f.default_factory))
        elif typing.get_origin(hints[f.name]) is list:
            (item,) = typing.get_args(hints[f.name]) or (None,)
            if dataclasses.is_dataclass(item):
                out.append((f"{f.name}[i]", item))
    return out


def render() -> str:
    parts = [
        "# Config reference",
        "",
        "Generated from the field docstrings by `python -m rlengine.config_doc`; a test keeps it in sync.",
        "Any key can be overridden on the command line as `section.key=value`. Top level: `resume` (bool).",
        "An override that changes a stage's `name` (`curriculum`, `filter`, `replay`, `reward_weighting`)",
        "starts that section afresh: the YAML's options belong to the stage it named",
        "(`reward_weighting.name=static` on a gradient config drops the gradient options).",
    ]
    for section, cls in SECTIONS.items():
        parts += ["", f"## `{section}`", "", table(cls)]
    for kind in STAGE_KINDS:
        parts += [
            "",
            f"## `{kind}` (stage)",
            "",
            f"`{kind}.name` picks one of: "
            + ", ".join(f"`{n}`" for n in REGISTRY[kind])
            + ", or your own class as `my_file.py:MyClass` (see docs/stages.md).",
        ]
        for name, (cls, config_cls) in REGISTRY[kind].items():
            summary = " ".join((inspect.getdoc(cls) or "").split("\n\n")[0].split())
            parts += ["", f"### `{kind}.name: {name}`", "", summary]
            if len(field_docs(config_cls)) > 1:
                parts += ["", table(config_cls, skip=("name",))]
            for sub_name, sub_cls in nested_sections(config_cls):
                parts += ["", f"#### `{kind}.{sub_name}`", "", table(sub_cls)]
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    print(render(), end="")
