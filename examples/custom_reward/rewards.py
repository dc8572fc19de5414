"""A verifiable reward plug-in: a correct final answer that also shows correct working.

``reward.functions`` names it as ``rewards.py:shows_working`` (the path is resolved next to the
YAML file). Like every reward it is called as ``fn(prompt, completion, answer, metadata, **kwargs)``
inside the reward worker processes and must return a float.

Scoring (``kwargs`` come from the config entry's ``kwargs``):

* 0.0 when the final answer is wrong (graded exactly like the built-in ``math_verify``);
* 0.0 when the completion shows a worked equation that is false (``37 + 405 = 452``): the
  working contradicts itself, even if the boxed answer happens to be right;
* 1.0 when the answer is right and at least ``min_steps`` true equations are shown;
* ``bare_answer_score`` (default 0.5) when the answer is right but fewer than ``min_steps``
  equations are shown.

A "worked equation" is a chain of numbers and operators, ``=``, and one number:
``37 + 405 = 442``, ``3 + 4 + 5 = 12``, ``12 \\times 3 = 36``, ``1,000 - 1 = 999``, ``7 / 4 = 1.75``.
Its left side is evaluated exactly (fractions, usual precedence); a decimal right side written
with d decimals may be rounded (``2 / 3 = 0.67`` is true), an integer right side must be exact.
"""

from __future__ import annotations

import ast
import operator
import re
from fractions import Fraction
from typing import Any

from reward import grade

__all__ = ["count_equations", "shows_working"]

_NUMBER = r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
_OP = r"[-+*/]"
_EQUATION = re.compile(
    rf"(?<![\d.,])(?P<lhs>{_NUMBER}(?:\s*{_OP}\s*{_NUMBER})+)\s*=\s*(?P<rhs>{_NUMBER})(?![\d.,]*\s*{_OP}\s*\d)"
)
_LATEX_OPS = {r"\times": "*", r"\cdot": "*", r"\div": "/", "×": "*", "÷": "/", "−": "-"}
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def _evaluate(node: ast.AST) -> Fraction:
    """Exact value of a parsed arithmetic expression (numbers, + - * /, unary minus only)."""
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return Fraction(str(node.value))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_evaluate(node.operand)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        return _BINOPS[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    raise ValueError(f"not plain arithmetic: {ast.dump(node)}")


def _is_true(lhs: str, rhs: str) -> bool:
    """Whether ``lhs = rhs`` holds (``rhs`` may be rounded to the decimals it is written with)."""
    try:
        value = _evaluate(ast.parse(lhs.replace(",", ""), mode="eval"))
    except (SyntaxError, ValueError, ZeroDivisionError):
        return False
    rhs = rhs.replace(",", "")
    claimed = Fraction(rhs)
    decimals = len(rhs.split(".", 1)[1]) if "." in rhs else 0
    if decimals == 0:
        return value == claimed
    return abs(value - claimed) <= Fraction(1, 2 * 10**decimals)


def count_equations(text: str) -> tuple[int, int]:
    """``(true, false)`` counts of the worked equations in ``text``."""
    for latex, op in _LATEX_OPS.items():
        text = text.replace(latex, f" {op} ")
    true = false = 0
    for match in _EQUATION.finditer(text):
        if _is_true(match["lhs"], match["rhs"]):
            true += 1
        else:
            false += 1
    return true, false


def shows_working(prompt: str, completion: str, answer: str, metadata: dict, **kwargs: Any) -> float:
    """1.0 for a correct answer with at least ``min_steps`` true equations and no false one;
    ``bare_answer_score`` for a correct answer without enough working; 0.0 otherwise.

    Kwargs:
        min_steps: true equations needed for the full score (default 1).
        bare_answer_score: score of a correct answer shown without working (default 0.5).
        answer_pattern: regex for the final answer when there is no ``\\boxed{}`` (default: from
            the row's metadata, else none), as for ``math_verify``.
        timeout_s: math-verify timeout in seconds (default 5).
    """
    pattern = kwargs.get("answer_pattern") or (metadata or {}).get("answer_pattern")
    result = grade(
        completion, str(answer), answer_pattern=pattern, timeout_s=float(kwargs.get("timeout_s", 5.0))
    )
    if not result.correct:
        return 0.0
    true, false = count_equations(completion)
    if false:
        return 0.0
    if true >= int(kwargs.get("min_steps", 1)):
        return 1.0
    return float(kwargs.get("bare_answer_score", 0.5))
