"""The math task: boxed extraction, normal forms, math-verify grading and its time limit."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from slm_mux.selection import decide
from slm_mux.tasks import Question, get_task
from slm_mux.tasks import math as math_module
from slm_mux.tasks.math import MAX_VERIFY_CHARS, MathTask, last_boxed, math_normal_form

TASK = MathTask()
TOWER = r"9^{9^{9^{9^{9}}}}"
LIMIT_S = 1.0

Verdicts = list[tuple[str, str, bool | None]]
"""``(gold, pred, verdict)`` of each comparison; verdict ``None``: it ran out of time."""


@pytest.fixture
def fresh_caches() -> Iterator[None]:
    """Forget cached verdicts so a time-limit test really runs math-verify."""
    math_module.math_verify_equal.cache_clear()
    math_module._parsed.cache_clear()
    yield
    math_module.math_verify_equal.cache_clear()


@pytest.fixture
def here(monkeypatch: pytest.MonkeyPatch) -> Verdicts:
    """Every comparison run in this process (under the alarm), with its verdict."""
    seen: Verdicts = []
    compare = math_module._compare_here

    def counted(gold: str, pred: str, both_ways: bool, seconds: float) -> bool | None:
        verdict = compare(gold, pred, both_ways, seconds)
        seen.append((gold, pred, verdict))
        return verdict

    monkeypatch.setattr(math_module, "_compare_here", counted)
    return seen


@pytest.fixture
def in_worker(monkeypatch: pytest.MonkeyPatch) -> Verdicts:
    """Every comparison sent to the worker process, with its verdict."""
    seen: Verdicts = []
    worker = math_module._WORKER
    compare = worker.compare

    def counted(gold: str, pred: str, both_ways: bool, seconds: float) -> bool | None:
        verdict = compare(gold, pred, both_ways, seconds)
        seen.append((gold, pred, verdict))
        return verdict

    monkeypatch.setattr(worker, "compare", counted)
    return seen


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so $\boxed{5}$.", "5"),
        (r"\boxed{1} then \boxed{2}", "2"),
        (r"\boxed{\frac{1}{\sqrt{2}}}", r"\frac{1}{\sqrt{2}}"),
        (r"\boxed {x^{2}}", "x^{2}"),
        (r"\fbox{7}", "7"),
        (r"\boxed 5$ done", "5"),
        (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),
        (r"\boxed{\left\{ x \right.}", r"\left\{ x \right."),
        (r"\boxed{ 3 }", "3"),
        (r"\boxed{5", None),
        (r"\boxed{}", None),
        ("the answer is 5", None),
        (r"\boxedx{5}", None),
    ],
)
def test_last_boxed(text: str, expected: str | None) -> None:
    assert last_boxed(text) == expected
    assert TASK.extract(text) == expected


@pytest.mark.parametrize(
    ("answer", "form"),
    [
        (r"\frac{1}{2}", r"\frac{1}{2}"),
        (r"\dfrac{1}{2}", r"\frac{1}{2}"),
        (r"\tfrac12", r"\frac{1}{2}"),
        (r"\frac{270}7\text{ degrees}", r"\frac{270}{7}"),
        (r"\sqrt2", r"\sqrt{2}"),
        ("$0.50$", "0.5"),
        (r"\(5.\)", "5"),
        ("-0.0", "0"),
        ("x = 3", "3"),
        (r"\theta = 30^\circ", "30"),
        (r"x \in [-2,7]", "[-2,7]"),
        ("y = -2x", "-2x"),
        ("5x - 7y + 11z + 4 = 0", "5x-7y+11z+4=0"),
        (r"120^\circ", "120"),
        (r"120^{\circ}", "120"),
        (r"10\%", "10"),
        (r"\$32,\!348", "32348"),
        (r"11,\! 111,\! 111,\! 100", "11111111100"),
        ("1{,}000", "1000"),
        ("1,-2", "1,-2"),
        (r"5.4 \text{ cents}", "5.4"),
        (r"2\sqrt{3}\text{ cm}^2", r"2\sqrt{3}"),
        (r"\text{Evelyn}", "Evelyn"),
        (r"\boxed{\text{(C)}}", "C"),
        (r"\left( 3, \frac{\pi}{2} \right)", r"(3,\frac{\pi}{2})"),
        (r"x \ge 2", r"x\geq2"),
        (r"\text{a} + \text{b}", r"\text{a}+\text{b}"),
        (r"f \circ g", r"f\circg"),
    ],
)
def test_normal_form(answer: str, form: str) -> None:
    assert math_normal_form(answer) == form
    assert TASK.canonical(answer) == form


@pytest.mark.parametrize(
    ("answer", "reference", "correct"),
    [
        ("0.5", r"\frac{1}{2}", True),
        ("1/2", r"\frac{1}{2}", True),
        (r"\dfrac{1}{2}", "0.5", True),
        ("x=3", "3", True),
        ("3", "x = 3", True),
        (r"2\sqrt{3}", r"\sqrt{12}", True),
        (r"(0,9)\cup(9,36)", r"(0,9) \cup (9,36)", True),
        (r"\{2,1\}", r"\{1,2\}", True),
        (r"\frac{\pi}{2}", r"\frac{\pi}{2}", True),
        ("90", r"90^\circ", True),
        ("10", r"10\%", True),
        ("0.3333333", r"\frac{1}{3}", True),
        ("0.333", r"\frac{1}{3}", False),
        ("(1,2)", "[1,2)", False),
        ("(2,1)", "(1,2)", False),
        ("q-p", "p-q", False),
        ("3.14", r"\pi", False),
        ("4", "3", False),
        ("", "3", False),
        (None, "3", False),
        # math-verify is asymmetric: an inequality does not match an interval gold.
        (r"1 \le x < 2", "[1,2)", False),
    ],
)
def test_grade(answer: str | None, reference: str, correct: bool) -> None:
    assert TASK.grade(answer, reference) is correct


@pytest.mark.parametrize(
    ("first", "second", "same"),
    [
        (r"\frac{1}{2}", "0.5", True),
        ("1/2", "0.5", True),
        # Either direction counts for two samples (no gold between them).
        (r"1 \le x < 2", "[1,2)", True),
        ("[1,2)", r"1 \le x < 2", True),
        ("x=3", "3", True),
        ("(1,2)", "[1,2)", False),
        ("2", "3", False),
    ],
)
def test_equivalent(first: str, second: str, same: bool) -> None:
    assert TASK.equivalent(first, second) is same
    assert TASK.equivalent(second, first) is same


def test_cluster_counts_equal_answers_as_one_vote() -> None:
    answers = [r"\frac{1}{2}", "1/2", "0.5", "2", r"\dfrac{1}{2}", "2.0", r"\sqrt{4}", "3"]
    assert TASK.cluster(answers) == [0, 0, 0, 1, 0, 1, 1, 2]


def test_selection_votes_on_math_equivalence() -> None:
    decision = decide(
        {"a": [r"\frac{1}{2}", "0.5", "1/2", "3"], "b": ["2", "2", "3", None]},
        TASK.cluster,
    )
    assert (decision.model, decision.answer, decision.confidence) == ("a", r"\frac{1}{2}", 0.75)
    assert decision.votes["a"] == {r"\frac{1}{2}": 3, "3": 1}


def test_prompt_asks_for_a_boxed_answer() -> None:
    [message] = get_task("math").messages(Question("q", "What is 1+1?", "2"))
    assert message["role"] == "user"
    assert message["content"].startswith("What is 1+1?")
    assert "\\boxed{}" in message["content"]


def test_overlong_answers_are_compared_by_normal_form_only() -> None:
    long_sum = "+".join(["1"] * (MAX_VERIFY_CHARS // 2 + 1))
    assert TASK.grade(long_sum, long_sum)
    assert not TASK.grade(long_sum, str(MAX_VERIFY_CHARS // 2 + 1))


def test_time_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="time_limit"):
        MathTask(time_limit=0)


@pytest.mark.usefixtures("fresh_caches")
def test_pathological_answer_stops_at_the_time_limit_in_the_main_thread(
    caplog: pytest.LogCaptureFixture, here: Verdicts, in_worker: Verdicts
) -> None:
    def on_alarm(signum: int, frame: object) -> None:
        raise AssertionError("our own SIGALRM handler must not run")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        task = MathTask(time_limit=LIMIT_S)
        assert not task.grade(TOWER, "5")
        assert here == [("5", TOWER, None)]  # the alarm stopped it: out of time
        assert "ran out of time" in caplog.text
        assert signal.getsignal(signal.SIGALRM) is on_alarm
        assert not task.grade(TOWER, "5")  # a timed-out verdict is cached ...
        assert len(here) == 1  # ... so math-verify is not asked again
        assert task.grade(r"\frac{2}{4}", "0.5")  # the grader still works
        assert here[1:] == [("0.5", r"\frac{2}{4}", True)]
        assert in_worker == []  # the main thread never needs the worker
    finally:
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.usefixtures("fresh_caches")
def test_pathological_answer_stops_at_the_time_limit_in_another_thread(
    here: Verdicts, in_worker: Verdicts
) -> None:
    task = MathTask(time_limit=LIMIT_S)
    with ThreadPoolExecutor(max_workers=1) as pool:
        assert pool.submit(task.grade, "0.5", r"\frac{1}{2}").result(timeout=60)
        process = math_module._WORKER._process
        assert not pool.submit(task.equivalent, TOWER, "7").result(timeout=60)
        # The worker's own alarm stopped it: it answered "out of time" and lives on.
        assert in_worker[-1] == (TOWER, "7", None)
        assert process is not None and process.poll() is None
        assert pool.submit(task.grade, "1/3", r"\frac{1}{3}").result(timeout=60)
        assert not pool.submit(task.grade, "1/4", r"\frac{1}{3}").result(timeout=60)
        assert math_module._WORKER._process is process
    assert [verdict for _, _, verdict in in_worker] == [True, None, True, False]
    assert here == []  # nothing was compared in this process, outside the main thread


@pytest.mark.usefixtures("fresh_caches")
def test_a_worker_that_stops_answering_is_killed_and_replaced(
    monkeypatch: pytest.MonkeyPatch, in_worker: Verdicts
) -> None:
    waits: list[float] = []
    reply = math_module._Worker._reply

    def waited(process: subprocess.Popen[str], seconds: float) -> str:
        waits.append(seconds)
        return reply(process, seconds)

    monkeypatch.setattr(math_module._Worker, "_reply", staticmethod(waited))
    task = MathTask(time_limit=LIMIT_S)
    with ThreadPoolExecutor(max_workers=1) as pool:
        assert pool.submit(task.grade, "0.25", r"\frac{1}{4}").result(timeout=60)
        process = math_module._WORKER._process
        assert process is not None
        os.kill(process.pid, signal.SIGSTOP)  # a computation that ignores the alarm
        waits.clear()
        assert not pool.submit(task.grade, "0.2", r"\frac{1}{5}").result(timeout=60)
        # It waited for the deadline plus the grace period only, then killed the worker.
        assert waits == [LIMIT_S + math_module._WORKER_GRACE_S]
        assert in_worker[-1] == (r"\frac{1}{5}", "0.2", None)
        assert process.poll() is not None
        assert pool.submit(task.grade, "0.125", r"\frac{1}{8}").result(timeout=60)
        assert math_module._WORKER._process is not process
