"""Answer extraction and math-equivalence grading (math-verify).

Extraction order used everywhere in rlengine (training rewards and evaluation):

1. the content of the last complete ``\\boxed{...}`` (nested braces handled; ``\\boxed 5`` without
   braces and ``\\fbox{...}`` count too);
2. the last match of a configurable regex ``answer_pattern`` (group 1 when it has groups);
3. the span after the last "answer is" / "answer:" / "final answer =" (a ``$...$`` there, else the
   rest of the sentence, or its leading number when words follow it: "42 apples");
4. the last ``$...$`` / ``\\(...\\)`` / ``$$...$$`` span, unless a number follows it in the text;
5. the last number in the text (integers, decimals, negatives, ``1,000`` -> ``1000``, ``3/4``).

Steps 1 and 3 take time linear in the length of the completion, whatever its content (e.g. thousands
of unclosed ``\\boxed{``): extraction runs before, and so outside, math-verify's timeout.

Grading compares two integers exactly as digit strings (any length: no ``int()``, whose limit is 4300
digits); otherwise it parses the gold answer once (cached) and the extracted answer with math-verify and
compares them symbolically/numerically. math-verify times out with ``signal.alarm``, which works only in
the main thread of a process: in other threads (or when an outer alarm is already armed by the caller)
the timeouts are disabled so that no one's alarm is clobbered.
"""

from __future__ import annotations

import math
import re
import signal
import threading
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from itertools import product
from typing import Any

__all__ = [
    "GradeResult",
    "extract_answer",
    "extract_boxed",
    "grade",
    "normalize_answer",
    "parse_gold",
]

_BOXED_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_NUMBER_RE = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|(?<![\w.])-?\.\d+")
_INT_RE = re.compile(r"[-+]?\d+")
_SPACES_RE = re.compile(r"\s*")
_BOX_TOKEN_RE = re.compile(r"\s+([^\s$]+)")  # ``\boxed 42``
_BRACE_TOKEN_RE = re.compile(r"\\.|[{}]", re.DOTALL)  # an escaped character, or a brace
_SCI_RE = re.compile(r"^(-?\d+(?:\.\d+)?)[eE]([+-]?\d+)$")
_ANSWER_IS_RE = re.compile(r"\banswer\s*(?:is|:|=)\s*:?\s*", re.IGNORECASE)
_MATH_SPAN_RE = re.compile(  # $$...$$, $...$ (an escaped \\$ inside is a dollar sign), \\(...\\), \\[...\\]
    r"\$\$(.+?)\$\$|(?<!\\)\$((?:\\\$|[^$])+?)(?<!\\)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.DOTALL
)
_BASE_RE = re.compile(r"[0-9A-Za-z]+_\{?\d+\}?")  # a numeral in a base: 2516_8, 101_{2}
_NUMBER_WORD_RE = re.compile(r"(-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)\s+[A-Za-z]{2,}")
_SENTENCE_RE = re.compile(r"[^\n]*?(?=\.\s|\.$|[\n;]|$)")
_FLOAT_RE = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_TIMES_TEN_RE = re.compile(r"(-?(?:\d+\.?\d*|\.\d+))\s*(?:\\times|\\cdot|\*|x)\s*10\^\{?([+-]?\d+)\}?")
TINY = 1e-3
"""Below this magnitude two plain numbers are compared to the gold's significant digits
(math-verify rounds to a fixed number of decimals, so it cannot tell .0000673 from .0000672, and
treats any two values below about 1e-15 as equal)."""


@dataclass(frozen=True)
class GradeResult:
    """Outcome of grading one completion.

    Attributes:
        correct: the extracted answer is equivalent to the gold answer.
        extracted: the extracted answer string, or None when nothing could be extracted.
        timed_out: math-verify parsing or comparison hit its timeout (counted as wrong).
    """

    correct: bool
    extracted: str | None
    timed_out: bool = False


def _match_braces(text: str, start: int) -> int | None:
    """Return the index of the ``}`` closing the ``{`` at ``start`` (``\\{``/``\\}`` skipped), or None."""
    depth = 0
    for token in _BRACE_TOKEN_RE.finditer(text, start):
        ch = token.group()
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return token.start()
    return None


def _brace_pairs(text: str, start: int) -> dict[int, int]:
    """``{open index: close index}`` of every matched ``{`` at or after ``start``, in one pass.

    For each ``{`` the closing index is the one :func:`_match_braces` finds (unmatched braces are
    left out): a ``{`` that is not itself escaped is reached by a scan from any earlier
    position, and from there both scans are the same.
    """
    pairs: dict[int, int] = {}
    stack: list[int] = []
    for token in _BRACE_TOKEN_RE.finditer(text, start):
        ch = token.group()
        if ch == "{":
            stack.append(token.start())
        elif ch == "}" and stack:
            pairs[stack.pop()] = token.start()
    return pairs


def extract_boxed(text: str) -> str | None:
    """Content of the last complete, non-empty ``\\boxed{...}`` / ``\\fbox{...}`` / ``\\boxed x``.

    Linear in ``len(text)``: the last box is matched by a scan to the end of the text; when it is
    truncated or empty, the braces of all earlier boxes are matched together in one more pass
    (a text of many unclosed ``\\boxed{`` would otherwise cost a scan per box).
    """
    boxes = [match.end() for match in _BOXED_RE.finditer(text)]
    pairs: dict[int, int] | None = None
    for index in range(len(boxes) - 1, -1, -1):
        pos = boxes[index]
        open_at = _SPACES_RE.match(text, pos).end()  # type: ignore[union-attr]
        if text.startswith("{", open_at):
            if index == len(boxes) - 1:
                close_at = _match_braces(text, open_at)
            else:
                if pairs is None:
                    pairs = _brace_pairs(text, boxes[0])
                close_at = pairs.get(open_at)
            if close_at is None:
                continue  # truncated box: fall back to an earlier complete one
            content = text[open_at + 1 : close_at].strip()
        elif open_at > pos:
            token = _BOX_TOKEN_RE.match(text, pos)
            content = token.group(1).rstrip(".,;") if token else ""
        else:
            continue
        if content:
            return content
    return None


@lru_cache(maxsize=64)
def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid answer_pattern {pattern!r}: {exc}") from exc


def _extract_by_pattern(text: str, pattern: str) -> str | None:
    last = None
    for match in _compile(pattern).finditer(text):
        last = match
    if last is None:
        return None
    if last.re.groups:
        value = next((g for g in last.groups() if g is not None), None)
    else:
        value = last.group(0)
    value = value.strip() if value is not None else None
    return value or None


def _extract_last_number(text: str) -> str | None:
    matches = _NUMBER_RE.findall(text)
    if not matches:
        return None
    return matches[-1].replace(",", "")


def _last_match(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    last = None
    for match in pattern.finditer(text):
        last = match
    return last


def _span_content(match: re.Match[str]) -> str:
    return next(g for g in match.groups() if g is not None).strip()


def _extract_answer_is(text: str) -> str | None:
    """The answer stated after the last "answer is" / "answer:" / "answer =": a math span right
    there, else the rest of the sentence (at most 300 characters), or only its leading number when
    words follow it ("42 apples")."""
    last = _last_match(_ANSWER_IS_RE, text)
    if last is None:
        return None
    rest = text[last.end() :]
    span = _MATH_SPAN_RE.match(rest)
    if span:
        return _span_content(span) or None
    sentence = _SENTENCE_RE.match(rest)
    value = sentence.group(0).strip().rstrip(".") if sentence else ""
    with_unit = _NUMBER_WORD_RE.match(value)  # "42 apples": the number; "3\\sqrt{13}", "4.5e33": all of it
    if with_unit:
        return with_unit.group(1).replace(",", "")
    return value if 0 < len(value) <= 300 else None


def _extract_last_math_span(text: str) -> str | None:
    """The content of the last inline math span, unless a number follows it (then the number is
    the later statement: "let $x$ be ..., so x = 18")."""
    last = _last_match(_MATH_SPAN_RE, text)
    if last is None or _NUMBER_RE.search(text, last.end()):
        return None
    return _span_content(last) or None


def extract_answer(text: str, answer_pattern: str | None = None) -> str | None:
    """Extract the final answer of a completion: last box, then ``answer_pattern``, then an "answer
    is" span, then the last math span, then the last number (module docstring).

    Args:
        text: the model's completion.
        answer_pattern: optional regex; its last match (group 1 if it has groups) is used when
            the completion has no box. Raises ValueError if it does not compile.

    Returns:
        The answer string, or None when the text holds no box, no pattern match and no number.
    """
    boxed = extract_boxed(text)
    if boxed is not None:
        return boxed
    if answer_pattern:
        found = _extract_by_pattern(text, answer_pattern)
        if found is not None:
            return found
    return _extract_answer_is(text) or _extract_last_math_span(text) or _extract_last_number(text)


def normalize_answer(answer: str) -> str:
    """Cheap canonical string form of an answer (used for equality shortcuts and majority voting)."""
    s = answer.strip()
    s = re.sub(r"\\(?:left|right)(?![A-Za-z])", "", s)
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = re.sub(r"\\[,!;: ]", "", s)
    s = re.sub(r"\\(?:text|textbf|mathrm|mbox)\s*\{\s*([^{}]*?)\s*\}", r"\1", s)
    s = s.replace("$", "").replace("\\%", "").replace("%", "").strip()
    # a comma is a thousands separator only in "1,000" written without spaces; "81, 256" is a list
    thousands = re.fullmatch(r"-?(?:\d{1,3}(?:,\d{3})+)(?:\.\d+)?\.?", s) is not None
    s = re.sub(r"(?<=\d)\s+(?=\d)", "\u2423", s)  # "1 2" stays two numbers, not 12
    s = re.sub(r"\s+", "", s).replace("\u2423", " ")
    s = s.rstrip(".")
    if thousands:
        s = s.replace(",", "")
    if re.fullmatch(r"-?\d+\.\d*", s):
        s = s.rstrip("0").rstrip(".")
    return s


def _int_key(number: str) -> str:
    """Canonical form of an integer literal (``[-+]?\\d+``): sign, leading zeros and non-ASCII digits
    normalised, so that two literals are equal integers iff their keys are equal. Never calls
    ``int()``, which refuses strings of more than 4300 digits."""
    negative = number.startswith("-")
    digits = number.lstrip("+-")
    if not digits.isascii():
        digits = "".join(str(unicodedata.decimal(ch)) for ch in digits)
    digits = digits.lstrip("0") or "0"
    return "-" + digits if negative and digits != "0" else digits


def _as_float(text: str) -> float | None:
    """A plain number: ``4.6e-24``, ``-0.5``, ``4.6\\times10^{-24}``; None for anything else."""
    if _FLOAT_RE.fullmatch(text):
        return float(text)
    times = _TIMES_TEN_RE.fullmatch(text)
    if times:
        return float(times.group(1)) * 10.0 ** int(times.group(2))
    return None


def _significant_digits(number: str) -> int:
    """Significant digits of a plain number's mantissa: ``4.60e-24`` → 3, ``.0000672`` → 3."""
    mantissa = re.split(r"[eE]|\\times|\\cdot|\*|x", number)[0]
    digits = re.sub(r"\D", "", mantissa).lstrip("0")
    return max(1, len(digits))


def _tiny_comparison(pred: str, gold: str) -> bool | None:
    """Whether two plain numbers agree to the gold's significant digits, when either is below
    :data:`TINY` in magnitude (the prediction rounded to as many significant digits as the gold
    states must equal the gold); None when this rule does not apply."""
    a, b = _as_float(pred), _as_float(gold)
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
        return None
    if min(abs(a), abs(b)) >= TINY:
        return None
    if a == 0 or b == 0:
        return a == b
    digits = _significant_digits(gold) - 1
    return f"{a:.{digits}e}" == f"{b:.{digits}e}"


def _alarm_timeout(timeout_s: float | None) -> int | None:
    """The timeout to hand to math-verify: whole seconds, or None where signal.alarm must not be used."""
    if timeout_s is None or timeout_s <= 0:
        return None
    if threading.current_thread() is not threading.main_thread():
        return None
    if signal.getitimer(signal.ITIMER_REAL)[0] > 0:
        return None  # an outer deadline owns the alarm (e.g. RewardPool with num_workers=0)
    return max(1, math.ceil(timeout_s))


def _math_verify() -> Any:
    import math_verify  # imported lazily: ~0.5 s, only paid by processes that grade

    return math_verify


def _parse_math(text: str, timeout: int | None) -> list[Any]:
    """Parse an answer string with math-verify, trying ``\\boxed{}``, then ``$...$``, then raw text."""
    mv = _math_verify()
    sci = _SCI_RE.match(text.strip())
    if sci:
        text = f"{sci.group(1)}\\times 10^{{{sci.group(2)}}}"
    for candidate in (f"\\boxed{{{text}}}", f"${text}$", text):
        try:  # raise_on_error so that a TimeoutException reaches grade(); other errors: next form
            parsed = mv.parse(candidate, parsing_timeout=timeout, raise_on_error=True)
        except Exception:
            continue
        if parsed:
            return parsed
    return []


@lru_cache(maxsize=4096)
def _parse_gold_cached(gold: str) -> tuple[Any, ...]:
    return tuple(_parse_math(gold, _alarm_timeout(5.0)))


def parse_gold(gold: str) -> tuple[Any, ...]:
    """Parse a gold answer once with math-verify (cached per string; a timeout is not cached)."""
    return _parse_gold_cached(gold.strip())


def _is_timeout(exc: BaseException) -> bool:
    return type(exc).__name__ == "TimeoutException"


def grade(
    completion: str, gold: str, *, answer_pattern: str | None = None, timeout_s: float = 5.0
) -> GradeResult:
    """Grade one completion against a gold answer.

    Args:
        completion: model output text.
        gold: gold answer string (LaTeX or plain).
        answer_pattern: optional regex used when the completion has no ``\\boxed{}``.
        timeout_s: math-verify timeout for parsing and for each comparison (rounded up to whole
            seconds; disabled outside the main thread). A timeout counts as wrong.

    Returns:
        GradeResult(correct, extracted, timed_out).
    """
    extracted = extract_answer(completion, answer_pattern)
    if extracted is None:
        return GradeResult(False, None, False)
    norm_pred, norm_gold = normalize_answer(extracted), normalize_answer(gold)
    if norm_pred == norm_gold:
        return GradeResult(True, extracted, False)
    if _INT_RE.fullmatch(norm_pred) and _INT_RE.fullmatch(norm_gold):  # fast path, exact
        return GradeResult(_int_key(norm_pred) == _int_key(norm_gold), extracted, False)
    if " " in norm_pred and re.fullmatch(r"[-\d. ]+", norm_pred):  # "1 2": digits apart, not one number
        return GradeResult(False, extracted, False)
    if _BASE_RE.fullmatch(norm_pred) or _BASE_RE.fullmatch(norm_gold):  # 2516_9 is not 2516_8
        return GradeResult(False, extracted, False)
    small = _tiny_comparison(norm_pred, norm_gold)
    if small is not None:
        return GradeResult(small, extracted, False)
    timeout = _alarm_timeout(timeout_s)
    mv = _math_verify()
    timed_out = False
    try:
        gold_parsed = parse_gold(gold)
        predicted = _parse_math(extracted, timeout)
    except BaseException as exc:  # math-verify's TimeoutException derives from BaseException
        if _is_timeout(exc):
            return GradeResult(False, extracted, True)
        if not isinstance(exc, Exception):
            raise
        return GradeResult(False, extracted, False)
    for g, p in product(gold_parsed, predicted):
        try:
            if mv.verify(g, p, timeout_seconds=timeout, raise_on_error=True):
                return GradeResult(True, extracted, False)
        except BaseException as exc:
            if _is_timeout(exc):
                timed_out = True
            elif not isinstance(exc, Exception):
                raise
    return GradeResult(False, extracted, timed_out)
