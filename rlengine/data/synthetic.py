"""Seeded synthetic arithmetic prompts with a recorded difficulty level.

The built-in CPU model (SmolLM2-135M-Instruct) solves only a fraction of these
problems, which gives an RL run a useful reward signal without any download.

Difficulty ``level`` of a row::

    level = max(number of digits of the operands) + (1 if op is "mul" or "div" else 0)

For ``div`` the digits counted are those of the divisor and the quotient (the dividend is
their product). So ``3 + 4`` is level 1, ``37 + 405`` is level 3, ``37 * 405`` is level 4. With the
defaults (``min_digits=1``, ``max_digits=4``) levels range from 1 to 5. The number of
digits of each operand is drawn uniformly and independently, so a generated set mixes
difficulties (about half of ``add`` rows have a 4-digit operand, for example).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from rlengine.errors import DataError

__all__ = ["OPS", "make_arithmetic", "arithmetic_level"]

#: Supported operations and the symbol printed in the problem text.
OPS: dict[str, str] = {"add": "+", "sub": "-", "mul": "*", "div": "/"}


def arithmetic_level(op: str, operands: Sequence[int]) -> int:
    """Return the difficulty level of one arithmetic problem (see the module docstring)."""
    digits = max(len(str(abs(x))) for x in operands)
    return digits + (1 if op in ("mul", "div") else 0)


def _operand(rng: random.Random, digits: int) -> int:
    """Draw a non-negative integer with exactly ``digits`` digits (1 digit includes 0)."""
    low = 0 if digits == 1 else 10 ** (digits - 1)
    return rng.randint(low, 10**digits - 1)


def _one_problem(rng: random.Random, op: str, min_digits: int, max_digits: int) -> tuple[list[int], int]:
    """Draw the operands for ``op`` and compute the exact integer result."""
    d1 = rng.randint(min_digits, max_digits)
    d2 = rng.randint(min_digits, max_digits)
    a, b = _operand(rng, d1), _operand(rng, d2)
    if op == "add":
        return [a, b], a + b
    if op == "sub":
        a, b = max(a, b), min(a, b)  # keep results non-negative
        return [a, b], a - b
    if op == "mul":
        return [a, b], a * b
    # div: the dividend is divisor * quotient, so the answer is an exact integer.
    divisor = max(b, 1)
    quotient = a
    return [divisor * quotient, divisor], quotient


def make_arithmetic(
    num: int,
    seed: int,
    *,
    ops: Sequence[str] = ("add", "sub", "mul"),
    min_digits: int = 1,
    max_digits: int = 4,
) -> list[dict[str, Any]]:
    """Generate ``num`` arithmetic prompts, deterministically for a given ``seed``.

    Args:
        num: number of rows to generate (>= 1).
        seed: RNG seed; the same ``(num, seed, ops, min_digits, max_digits)`` always gives the
            same rows, and a larger ``num`` extends a smaller one (rows are drawn in order).
        ops: operations to draw from uniformly: any of ``"add"``, ``"sub"``, ``"mul"``, ``"div"``
            (``div`` problems always have an exact integer answer).
        min_digits: smallest number of digits of an operand (>= 1).
        max_digits: largest number of digits of an operand (>= ``min_digits``).

    Returns:
        Rows ``{"id": "arith/<seed>/<i>", "problem": "What is 37 + 405?", "answer": "442",
        "level": int, "op": str, "operands": [int, int]}``.

    Raises:
        DataError: for a bad argument (unknown op, bad digit range, num < 1).
    """
    if isinstance(ops, str):
        ops = (ops,)
    unknown = [op for op in ops if op not in OPS]
    if unknown or not ops:
        raise DataError(f"synthetic_arithmetic: unknown op(s) {unknown or list(ops)}; allowed: {sorted(OPS)}")
    if int(num) < 1:
        raise DataError(f"synthetic_arithmetic: num must be >= 1, got {num}")
    if not (1 <= int(min_digits) <= int(max_digits) <= 18):
        raise DataError(
            "synthetic_arithmetic: need 1 <= min_digits <= max_digits <= 18, "
            f"got min_digits={min_digits}, max_digits={max_digits}"
        )
    rng = random.Random(int(seed))
    ops = tuple(ops)
    rows: list[dict[str, Any]] = []
    for i in range(int(num)):
        op = rng.choice(ops)
        operands, result = _one_problem(rng, op, int(min_digits), int(max_digits))
        rows.append(
            {
                "id": f"arith/{seed}/{i}",
                "problem": f"What is {operands[0]} {OPS[op]} {operands[1]}?",
                "answer": str(result),
                "level": arithmetic_level(op, operands if op != "div" else [operands[1], result]),
                "op": op,
                "operands": operands,
            }
        )
    return rows
