"""Tests of the reward package: extraction, grading, built-ins, loader errors and the process pool."""

from __future__ import annotations

import random
import re
import time
from pathlib import Path

import pytest

from reward import (
    BUILTIN_REWARDS,
    RewardConfigError,
    RewardItem,
    RewardPool,
    RewardSpec,
    extract_answer,
    extract_boxed,
    grade,
    load_reward_function,
    normalize_answer,
    parse_reward_specs,
)
from reward import grader as grader_module

ROOT = Path(__file__).resolve().parent.parent

PLUGINS = Path(__file__).parent / "fixtures" / "reward_plugins.py"


# ---------------------------------------------------------------- extraction
def test_boxed_beats_pattern_beats_answer_is_beats_math_span_beats_last_number() -> None:
    text = "Answer: 7. Then 9. \\boxed{5} and finally 11"
    assert extract_answer(text, r"Answer: (\d+)") == "5"
    assert (
        extract_answer("Answer: 7. Then 9.", r"Result: (\d+)") == "7"
    )  # the stated answer, not the last number
    assert extract_answer("So 7 then 9.", r"Final: (\d+)") == "9"  # pattern without a match, nothing stated
    assert extract_answer("We get $x^2$ and so on") == "x^2"
    assert extract_answer("Let $x$ be the count. Then x = 18.") == "18"  # a number after the span wins


def test_last_box_nested_braces_and_variants() -> None:
    assert extract_answer("\\boxed{1} then \\boxed{\\frac{1}{\\sqrt{2}}}") == "\\frac{1}{\\sqrt{2}}"
    assert extract_answer("set \\boxed{\\{1, 2\\}}") == "\\{1, 2\\}"
    assert extract_answer("so $\\boxed 42$.") == "42"
    assert extract_answer("\\fbox{12} done") == "12"
    # a truncated last box falls back to the previous complete one
    assert extract_answer("\\boxed{3} ... \\boxed{\\frac{1}{") == "3"


def test_last_number_forms_and_no_answer() -> None:
    assert extract_answer("it costs 1,234,567 dollars") == "1234567"
    assert extract_answer("so x = -2.5") == "-2.5"
    assert extract_answer("ratio 3/4") == "3/4"
    assert extract_answer("the values 1, 2, 3") == "3"
    assert extract_answer("I do not know") is None
    assert extract_answer("") is None
    assert extract_answer("\\boxed{}") is None


def _reference_extract_boxed(text: str) -> str | None:
    """The straightforward (quadratic) extraction: for each box from the last, scan for its brace."""
    for match in reversed(list(re.finditer(r"\\(?:boxed|fbox)(?![A-Za-z])", text))):
        rest = text[match.end() :]
        if rest.lstrip().startswith("{"):
            i = open_at = match.end() + len(rest) - len(rest.lstrip())
            depth, close_at = 0, None
            while i < len(text):
                if text[i] == "\\":
                    i += 2
                    continue
                depth += {"{": 1, "}": -1}.get(text[i], 0)
                if text[i] == "}" and depth == 0:
                    close_at = i
                    break
                i += 1
            content = "" if close_at is None else text[open_at + 1 : close_at].strip()
        elif rest[:1].isspace():
            token = re.match(r"\s+([^\s$]+)", rest)
            content = token.group(1).rstrip(".,;") if token else ""
        else:
            content = ""
        if content:
            return content
    return None


def test_extract_boxed_matches_reference_on_random_texts() -> None:
    assert extract_answer("\\boxed{\\frac{1}{2}} then \\boxed{ }") == "\\frac{1}{2}"
    assert extract_answer("\\boxed{a\\}b} \\boxed{\\frac{") == "a\\}b"
    assert extract_answer("\\\\boxed{4} \\boxed . \\fbox{") == "4"  # LaTeX line break before 'boxed'
    pieces = [*"{}\\ \n7x.$", "\\boxed", "\\fbox", "\\boxedx", "\\{", "\\}", "\\\\"]
    rng = random.Random(0)
    for _ in range(5000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 24)))
        assert extract_boxed(text) == _reference_extract_boxed(text), text


@pytest.mark.parametrize(
    ("unit", "tail", "expected", "after_a_box"),
    [
        ("\\boxed{", "", None, "7"),  # every box unclosed
        ("\\boxed{", "}", None, "7"),  # the last box closed but empty, the others unclosed
        ("\\boxed{}", "", None, "7"),  # every box closed and empty
        ("\\boxed{\\", "", None, "7"),
        ("\\boxed ; ", "", None, "7"),  # every ``\\boxed x`` empty once ";" is stripped
        ("\\boxed{1", "", "1", "7"),  # no complete box: the last number
    ],
    ids=["unclosed", "last-closed-empty", "all-empty", "escaped-brace", "empty-token", "number"],
)
def test_extraction_is_linear_on_pathological_input(
    unit: str, tail: str, expected: str | None, after_a_box: str
) -> None:
    text = unit * (200_000 // len(unit)) + tail
    start = time.perf_counter()
    assert extract_answer(text) == expected
    assert extract_answer("\\boxed{7} " + text) == after_a_box  # the one complete box comes first
    assert grade(text, "7").correct is False
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0, f"extraction of {len(text)} characters took {elapsed:.1f} s"


def test_invalid_pattern_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="invalid answer_pattern"):
        extract_answer("no box here", "(unclosed")


def test_normalize_answer() -> None:
    assert normalize_answer("\\dfrac{1}{2}") == normalize_answer("\\frac{1}{2}")
    assert normalize_answer(" 1,000. ") == "1000"
    assert normalize_answer("\\left( 1, 2 \\right)") == "(1,2)"
    assert normalize_answer("2.50") == "2.5"


# ---------------------------------------------------------------- grading
@pytest.mark.parametrize(
    ("completion", "gold", "correct", "extracted"),
    [
        ("so the answer is \\boxed{18}", "18", True, "18"),
        ("so the answer is \\boxed{17}", "18", False, "17"),
        ("She makes 16 - 3 - 4 = 9 eggs, 9 * 2 = 18 dollars.", "18", True, "18"),
        ("\\boxed{\\frac{1}{2}}", "0.5", True, "\\frac{1}{2}"),
        ("\\boxed{0.5}", "\\frac{1}{2}", True, "0.5"),
        ("\\boxed{\\dfrac{3}{4}}", "\\frac{3}{4}", True, "\\dfrac{3}{4}"),
        ("\\boxed{x=3}", "3", True, "x=3"),
        ("\\boxed{x=4}", "3", False, "x=4"),
        ("The total is 1,000 apples.", "1000", True, "1000"),
        ("\\boxed{1,000}", "1000", True, "1,000"),
        ("\\boxed{(3, \\pi/2)}", "\\left( 3, \\frac{\\pi}{2} \\right)", True, "(3, \\pi/2)"),
        ("\\boxed{\\sqrt{2}/2}", "\\frac{\\sqrt{2}}{2}", True, "\\sqrt{2}/2"),
        ("\\boxed{3.83\\times 10^{35}}", "3.83e35", True, "3.83\\times 10^{35}"),
        ("no answer here", "18", False, None),
    ],
)
def test_grade_known_answers(completion: str, gold: str, correct: bool, extracted: str | None) -> None:
    result = grade(completion, gold)
    assert result.correct is correct
    assert result.extracted == extracted
    assert result.timed_out is False


def test_grade_integers_of_any_length() -> None:
    big = "1234567890" * 500  # 5000 digits: int(big) raises ValueError (limit 4300)
    assert grade(f"\\boxed{{{big}}}", big) == grader_module.GradeResult(True, big, False)
    assert grade(f"so it is {big}", big).correct is True
    assert grade(f"\\boxed{{{big[:-1]}1}}", big).correct is False
    assert grade(f"\\boxed{{{big}}}", big + "0").correct is False
    assert grade(f"\\boxed{{-{big}}}", big).correct is False
    assert grade(f"\\boxed{{00{big}}}", big).correct is True
    assert grade(f"\\boxed{{+{big}}}", big).correct is True
    assert grade("\\boxed{-0}", "0").correct is True and grade("\\boxed{007}", "7").correct is True
    assert grade("\\boxed{-7}", "7").correct is False and grade("\\boxed{\u0663}", "3").correct is True
    detailed = BUILTIN_REWARDS["math_verify_detailed"]("p", f"\\boxed{{{big}}}", big, {})
    assert detailed.score == 1.0
    with RewardPool(parse_reward_specs(["math_verify"]), num_workers=0) as inline:
        result = inline.score([RewardItem("q", f"\\boxed{{{big}}}", big, {})])
    assert result.scores["math_verify"] == [1.0] and result.status["math_verify"] == ["ok"]


def test_grade_timeout_counts_as_wrong(monkeypatch: pytest.MonkeyPatch) -> None:
    from math_verify.errors import TimeoutException

    class SlowMathVerify:
        @staticmethod
        def parse(text: str, **kwargs: object) -> list[str]:
            return ["x"]

        @staticmethod
        def verify(gold: object, pred: object, **kwargs: object) -> bool:
            raise TimeoutException("too slow")

    monkeypatch.setattr(grader_module, "_math_verify", lambda: SlowMathVerify)
    grader_module._parse_gold_cached.cache_clear()
    try:
        result = grade("\\boxed{\\sin(x)}", "\\cos(x)")
    finally:
        grader_module._parse_gold_cached.cache_clear()
    assert result == grader_module.GradeResult(False, "\\sin(x)", True)


def test_grade_in_a_thread_does_not_use_signals() -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as ex:
        result = ex.submit(grade, "\\boxed{\\frac{2}{4}}", "0.5").result()
    assert result.correct


# ---------------------------------------------------------------- built-ins
def test_builtin_rewards() -> None:
    mv, fmt, length = BUILTIN_REWARDS["math_verify"], BUILTIN_REWARDS["format"], BUILTIN_REWARDS["length"]
    assert mv("p", "\\boxed{4}", "4", {}) == 1.0
    assert mv("p", "\\boxed{5}", "4", {}) == 0.0
    assert mv("p", "Final: 4. Also 9", "4", {}, answer_pattern=r"Final: (\d+)") == 1.0
    assert mv("p", "Final: 4. Also 9", "4", {"answer_pattern": r"Final: (\d+)"}) == 1.0
    assert fmt("p", "2 + 2 = 4\nso \\boxed{4}", "4", {}) == 1.0
    assert fmt("p", "so \\boxed{4}", "4", {}) == 0.5  # no step before the answer
    assert fmt("p", "so 4", "4", {}) == 0.0
    assert length("p", "a" * 100, "", {}, target_length=100) == 1.0
    assert length("p", "a" * 150, "", {}, target_length=100) == pytest.approx(0.5)
    assert length("p", "a" * 300, "", {}, target_length=100) == 0.0
    assert length("p", "a" * 512, "", {}) == 1.0
    detailed = BUILTIN_REWARDS["math_verify_detailed"]("p", "\\boxed{0.5}", "\\frac12", {})
    assert detailed.score == 1.0 and detailed.info == {"extracted": "0.5", "timed_out": False}


# ---------------------------------------------------------------- specs and loader
def test_parse_reward_specs() -> None:
    specs = parse_reward_specs(
        [
            "math_verify",
            {"function": "my_rewards.py:brevity", "weight": 0.2},
            {"name": "length", "kwargs": {"target_length": 64}},
            {"function": "pkg.mod:fn", "name": "custom", "weight": 2},
        ]
    )
    assert specs == [
        RewardSpec("math_verify", "math_verify"),
        RewardSpec("brevity", "my_rewards.py:brevity", 0.2),
        RewardSpec("length", "length", 1.0, {"target_length": 64}),
        RewardSpec("custom", "pkg.mod:fn", 2.0),
    ]
    with pytest.raises(RewardConfigError, match="already used"):
        parse_reward_specs(["format", "format"])
    with pytest.raises(RewardConfigError, match="unknown key"):
        parse_reward_specs([{"function": "format", "wieght": 1}])
    with pytest.raises(RewardConfigError, match="'weight' must be a number"):
        parse_reward_specs([{"function": "format", "weight": "high"}])
    with pytest.raises(RewardConfigError, match="non-empty list"):
        parse_reward_specs([])


def test_unknown_builtin_suggests_closest() -> None:
    with pytest.raises(RewardConfigError) as info:
        load_reward_function("math_verfy")
    message = str(info.value)
    assert "'math_verfy'" in message and "did you mean 'math_verify'" in message
    assert "format" in message and "length" in message  # the valid built-ins are listed


def test_loader_file_errors(tmp_path: Path) -> None:
    with pytest.raises(RewardConfigError, match="not found.*nope.py"):
        load_reward_function("nope.py:fn", base_dir=tmp_path)
    with pytest.raises(RewardConfigError, match="'missing' not found in .*reward_plugins.py.*char_count"):
        load_reward_function(f"{PLUGINS}:missing")
    with pytest.raises(RewardConfigError, match="not callable"):
        load_reward_function(f"{PLUGINS}:NOT_CALLABLE")
    broken = tmp_path / "broken.py"
    broken.write_text("def f(:\n    pass\n")
    with pytest.raises(RewardConfigError, match=r"broken.py: SyntaxError.*line 1"):
        load_reward_function(f"{broken}:f")
    failing = tmp_path / "failing.py"
    failing.write_text("import not_a_real_module_xyz\n")
    with pytest.raises(RewardConfigError, match="ModuleNotFoundError"):
        load_reward_function(f"{failing}:f")
    with pytest.raises(RewardConfigError, match="cannot import module"):
        load_reward_function("not_a_real_pkg.mod:fn")


def test_user_plugin_relative_to_base_dir(tmp_path: Path) -> None:
    (tmp_path / "my_rewards.py").write_text(
        "def brevity(prompt, completion, answer, metadata, **kwargs):\n"
        "    return 1.0 / (1 + len(completion)) * kwargs.get('scale', 1)\n"
    )
    fn = load_reward_function("my_rewards.py:brevity", base_dir=tmp_path)
    assert fn("p", "abc", "a", {}, scale=2) == pytest.approx(0.5)
    assert load_reward_function("reward.builtin:format_reward") is BUILTIN_REWARDS["format"]


# ---------------------------------------------------------------- pool
def _specs(*extra: str) -> list[RewardSpec]:
    return parse_reward_specs(["math_verify", "format", *[f"{PLUGINS}:{fn}" for fn in extra]])


def _items(n: int) -> list[RewardItem]:
    return [RewardItem("q", f"step\nso \\boxed{{{i % 5}}}", str(i % 3), {}) for i in range(n)]


@pytest.fixture(scope="module")
def pool() -> RewardPool:
    with RewardPool(
        _specs("raise_on_bad", "hang_on_hang", "nan_on_nan", "die_on_die"), num_workers=2, timeout_s=1.0
    ) as p:
        yield p


def test_pool_matches_in_process_scoring(pool: RewardPool) -> None:
    items = _items(300) + [RewardItem("q", "\\boxed{\\frac{1}{2}}", "0.5", {})]
    result = pool.score(items)
    inline = RewardPool(pool.specs, num_workers=0).score(items)
    assert result.scores == inline.scores
    assert result.errors == result.timeouts == 0
    expected = [1.0 if (i % 5) == (i % 3) else 0.0 for i in range(300)] + [1.0]
    assert result.scores["math_verify"] == expected


def test_pool_contains_errors(pool: RewardPool) -> None:
    items = _items(40)
    items[7] = RewardItem("q", "bad \\boxed{1}", "1", {})
    items[9] = RewardItem("q", "nan \\boxed{1}", "1", {})
    items[11] = RewardItem("q", "str \\boxed{1}", "1", {})
    result = pool.score(items)
    assert result.errors == 3 and result.timeouts == 0
    assert result.scores["raise_on_bad"][7] == 0.0 and result.status["raise_on_bad"][7] == "error"
    assert any("RuntimeError: bad completion" in m for m in result.error_messages)
    assert result.scores["nan_on_nan"][9] == 0.0 and result.scores["nan_on_nan"][11] == 0.0
    assert result.scores["math_verify"][7] == 1.0  # the other objectives of that item still count
    assert sum(result.scores["raise_on_bad"]) == 39.0
    assert result.scores["nan_on_nan"].count(2.0) == 38


def test_pool_kills_hung_call_and_keeps_working(pool: RewardPool) -> None:
    items = _items(60)
    items[25] = RewardItem("q", "hang\nso \\boxed{1}", "1", {})
    start = time.monotonic()
    result = pool.score(items)
    assert time.monotonic() - start < 8.0
    assert result.timeouts == 1 and result.errors == 0
    assert result.scores["hang_on_hang"][25] == 0.0 and result.status["hang_on_hang"][25] == "timeout"
    assert sum(result.scores["hang_on_hang"]) == 59.0
    assert result.scores["math_verify"][25] == 1.0 and result.scores["format"][25] == 1.0
    after = pool.score(_items(30))  # the next call on the same pool works
    assert after.timeouts == after.errors == 0
    assert after.scores["math_verify"] == [1.0 if (i % 5) == (i % 3) else 0.0 for i in range(30)]


def test_pool_survives_worker_crash(pool: RewardPool) -> None:
    items = _items(20)
    items[3] = RewardItem("q", "die \\boxed{1}", "1", {})
    result = pool.score(items)
    assert result.errors == 1 and result.status["die_on_die"][3] == "error"
    assert "exit code 3" in result.error_messages[0]
    assert sum(result.scores["die_on_die"]) == 19.0


def test_inline_pool_times_out_with_alarm() -> None:
    with RewardPool(_specs("hang_on_hang"), num_workers=0, timeout_s=0.3) as p:
        result = p.score([RewardItem("q", "hang", "1", {}), RewardItem("q", "\\boxed{1}", "1", {})])
    assert result.timeouts == 1
    assert result.scores["hang_on_hang"] == [0.0, 1.0]
    assert result.scores["math_verify"] == [0.0, 1.0]


def test_pool_rejects_bad_config_at_construction() -> None:
    with pytest.raises(RewardConfigError, match="reward objective 'nope'.*nope.py"):
        RewardPool([RewardSpec("nope", "/does/not/exist/nope.py:fn")], num_workers=1)


def test_pool_unpicklable_items_fail_cleanly(pool: RewardPool) -> None:
    from reward import RewardPoolError

    with pytest.raises(RewardPoolError, match="cannot send"):
        pool.score([RewardItem("q", "\\boxed{1}", "1", {"f": lambda: 0})])
    assert pool.score(_items(3)).scores["math_verify"] == [1.0, 1.0, 1.0]


# ---------------------------------------------------------------- imports that block
BLOCKS_IN_WORKERS = """
import multiprocessing
import time

if multiprocessing.parent_process() is not None:  # only inside the pool's worker processes
    time.sleep(10**6)


def blocked(prompt, completion, answer, metadata):
    return 1.0
"""

BLOCKS_EVERYWHERE = """
import time

time.sleep(10**6)


def never(prompt, completion, answer, metadata):
    return 1.0
"""


def test_pool_contains_a_reward_file_that_blocks_at_import_in_workers(tmp_path: Path) -> None:
    blocked = tmp_path / "blocks_in_workers.py"
    blocked.write_text(BLOCKS_IN_WORKERS)
    specs = _specs("hang_on_hang") + parse_reward_specs([f"{blocked}:blocked"])
    start = time.monotonic()
    with RewardPool(specs, num_workers=2, timeout_s=1.0, import_timeout_s=2.0) as p:
        items = _items(20)
        items[4] = RewardItem("q", "hang \\boxed{4}", "4", {})  # a hung call replaces its worker
        with pytest.warns(RuntimeWarning, match="blocks_in_workers.py did not finish importing"):
            result = p.score(items)
        assert time.monotonic() - start < 30.0  # two parallel 2 s imports, one 1 s hang, restarts
        assert result.status["blocked"] == ["error"] * 20 and result.scores["blocked"] == [0.0] * 20
        assert result.errors == 20 and result.timeouts == 1
        assert result.scores["math_verify"] == [
            1.0 if i == 4 or (i % 5) == (i % 3) else 0.0 for i in range(20)
        ]
        assert result.scores["hang_on_hang"] == [0.0 if i == 4 else 1.0 for i in range(20)]
        blocked_messages = [m for m in result.error_messages if m.startswith("reward 'blocked'")]
        assert blocked_messages and all(
            f"reward file {blocked} did not finish importing within 2 s (reward.import_timeout_s)" in m
            for m in blocked_messages
        )
        assert list(p.unavailable) == ["blocked"]
        start = time.monotonic()
        again = p.score(_items(6))  # the replacement worker skips the blocked import
        assert time.monotonic() - start < 1.5
        assert again.errors == 6 and again.timeouts == 0 and again.status["format"] == ["ok"] * 6


def test_reward_file_that_blocks_at_import_in_the_main_process_is_a_config_error(tmp_path: Path) -> None:
    import signal

    from rlengine.config import ConfigError, load_config

    blocked = tmp_path / "blocks_everywhere.py"
    blocked.write_text(BLOCKS_EVERYWHERE)
    start = time.monotonic()
    with pytest.raises(RewardConfigError) as pool_error:
        RewardPool(parse_reward_specs([f"{blocked}:never"]), num_workers=1, import_timeout_s=1.0)
    assert time.monotonic() - start < 10.0
    message = str(pool_error.value)
    assert f"reward objective 'never': reward file {blocked} did not finish importing within 1 s" in message
    assert "(reward.import_timeout_s = 1)" in message and "input()" in message

    start = time.monotonic()
    with pytest.raises(ConfigError) as config_error:
        load_config(None, [f"reward.functions=[math_verify,{blocked}:never]", "reward.import_timeout_s=1.5"])
    assert time.monotonic() - start < 10.0
    assert str(config_error.value).startswith(
        f"reward.functions[1] (never): reward file {blocked} did not finish importing within 1.5 s "
        "(reward.import_timeout_s = 1.5). Module-level code runs at import: look there for network calls, "
        "input(), infinite loops or locks"
    )
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)  # the alarm is disarmed
    assert signal.getsignal(signal.SIGALRM) is signal.SIG_DFL  # and its handler restored


def test_import_off_the_main_thread_has_no_time_limit(tmp_path: Path) -> None:
    import threading

    slow = tmp_path / "slow_import.py"
    slow.write_text(
        "import time\ntime.sleep(0.5)\n\ndef fn(prompt, completion, answer, metadata):\n    return 3.0\n"
    )
    loaded: list[object] = []
    thread = threading.Thread(
        target=lambda: loaded.append(load_reward_function(f"{slow}:fn", import_timeout_s=0.1))
    )
    thread.start()
    thread.join(timeout=10)
    assert len(loaded) == 1 and loaded[0]("p", "c", "a", {}) == 3.0  # type: ignore[operator]


# Answer classes math-verify's own extraction gets right and a last-number fallback does not, plus
# the comparison classes of issue 22 (lists, digits apart, tiny magnitudes). Each failed before.
UNBOXED_AND_COMPARISON_CASES = [
    ("The answer is 18. That took 3 steps to find.", "18", True),
    ("The answer is $\\frac{3}{4}$.", "\\frac{3}{4}", True),
    ("The answer is 18. I am 95 % sure.", "18", True),
    ("So the circumference is $2\\pi$", "2\\pi", True),
    ("The point is $(3, 4)$", "(3,4)", True),
    ("Thus the length is $\\sqrt{5}$", "\\sqrt{5}", True),
    ("Final answer: 42 apples", "42", True),
    ("\\boxed{81256}", "81, 256", False),  # a list of two solutions is not 81,256
    ("\\boxed{256, 81}", "81, 256", True),
    ("\\boxed{1 2}", "12", False),  # digits apart are two numbers
    ("\\boxed{1,000}", "1000", True),  # a thousands separator still is one
    ("\\boxed{4.6e-23}", "4.6e-24", False),  # tiny magnitudes compare relatively
    ("\\boxed{4.60 \\times 10^{-24}}", "4.6 \\times 10^{-24}", True),
    ("\\boxed{4.6 \\times 10^{-23}}", "4.6 \\times 10^{-24}", False),
    ("\\boxed{0}", "4.6e-24", False),
    ("\\boxed{.0000673}", ".0000672", False),  # small: to the gold's significant digits
    ("\\boxed{0.00006724}", ".0000672", True),
    ("\\boxed{2516_9}", "2516_8", False),  # a numeral in another base
    ("The answer is $\\$36$.", "\\$36", True),  # an escaped dollar inside a math span
]


@pytest.mark.parametrize(("completion", "gold", "correct"), UNBOXED_AND_COMPARISON_CASES)
def test_unboxed_answers_lists_and_tiny_magnitudes(completion: str, gold: str, correct: bool) -> None:
    assert grade(completion, gold).correct is correct


def test_grader_beats_math_verify_on_the_labelled_corpus() -> None:
    """A sixth of tests/fixtures/grading_corpus.jsonl (labelled pairs from every shipped
    benchmark's golds: right answers in many forms, boxed and not; wrong answers near the gold),
    against math-verify's verdicts stored with it (math-verify called directly, gold in $...$):
    accuracy at least 98 %, at least math-verify's, and no more false positives."""
    import json

    rows = [
        json.loads(line)
        for line in (ROOT / "tests/fixtures/grading_corpus.jsonl").read_text().splitlines()[::6]
    ]
    ours = [grade(r["completion"], r["gold"]).correct for r in rows]
    right = sum(o == r["label"] for o, r in zip(ours, rows))
    theirs = sum(r["math_verify"] == r["label"] for r in rows)
    misses = [(r["class"], r["completion"][-60:], r["gold"]) for o, r in zip(ours, rows) if o != r["label"]]
    assert right / len(rows) >= 0.98 and right >= theirs, misses[:20]
    false_positives = sum(o and not r["label"] for o, r in zip(ours, rows))
    assert false_positives <= sum(r["math_verify"] and not r["label"] for r in rows), misses[:20]
