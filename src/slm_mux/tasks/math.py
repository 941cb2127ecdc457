"""The ``math`` task (MATH-500): the last ``\\boxed{...}``, graded with math-verify.

Most equal answers never reach math-verify: :meth:`MathTask.canonical` is a
cheap LaTeX normal form, and answers with equal forms are equivalent. The rest
go to ``math_verify.parse``/``verify`` (``verify`` is asymmetric: gold first).

Time limit. Symbolic comparison can run for ever (``9^{9^{9^{9^{9}}}}`` makes
sympy compute a power with hundreds of millions of digits), so every
comparison has one deadline of ``time_limit`` seconds and counts as *not
equivalent* when it runs out:

* in the main thread, a ``SIGALRM`` timer interrupts it (CPython checks for
  signals even inside a huge integer power). math-verify's own per-call
  timeouts are switched off: they would add up across its parse and verify
  calls, and nested alarms cancel each other;
* in any other thread, signals cannot interrupt it and a runaway computation
  holds the GIL, freezing the whole process. So the comparison runs in one
  shared worker process (started on first use, comparisons serialized), which
  applies the same alarm and is killed if it has not answered ``1 s`` after the
  deadline. The worker's start-up (about a second) is not part of the limit.

Answers longer than :data:`MAX_VERIFY_CHARS` are compared by normal form only.
Parses and verdicts are cached; a comparison that timed out is cached as not
equivalent, so the same pathological answer never costs the time limit twice.
POSIX only (``setitimer``, ``select`` on pipes).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from types import FrameType

from slm_mux.errors import SlmMuxError
from slm_mux.tasks.base import Message, Question, Task
from slm_mux.tasks.gsm8k import plain_decimal

MAX_VERIFY_CHARS = 1000
"""Longer answers are compared by normal form only, never parsed by math-verify."""

_WORKER_GRACE_S = 1.0
_VERDICTS: dict[str, bool | None] = {"1": True, "0": False, "timeout": None}
_WORKER_START_S = 60.0
_CACHE_SIZE = 1 << 16

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------- extraction

_BOX = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])\s*")


def _closing_brace(text: str, opening: int) -> int | None:
    """Index of the brace that closes the one at ``opening`` (escaped braces skipped)."""
    depth = 0
    for position in range(opening, len(text)):
        if position > 0 and text[position - 1] == "\\":
            continue
        if text[position] == "{":
            depth += 1
        elif text[position] == "}":
            depth -= 1
            if depth == 0:
                return position
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}``/``\\fbox{...}`` (nested braces allowed).

    ``\\boxed 5`` (no braces) gives the token after it; an unclosed or empty
    box gives ``None``.
    """
    boxes = list(_BOX.finditer(text))
    if not boxes:
        return None
    start = boxes[-1].end()
    if not text.startswith("{", start):
        token = re.match(r"[^\s$]+", text[start:])
        return token.group() if token else None
    end = _closing_brace(text, start)
    return (text[start + 1 : end].strip() or None) if end is not None else None


# ------------------------------------------------------------- normal form

_DELIMITERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
_WRAPPER = re.compile(r"\\(?:boxed|fbox|text|textbf|textrm|mathrm|mbox)\s*(?=\{)")
_REMOVED = re.compile(
    r"\\left(?![A-Za-z])|\\right(?![A-Za-z])|\\displaystyle|(?<!\\)\\[!,;: ]|~"
    r"|\^\s*\{?\s*\\circ\s*\}?|\\degree|°|\\%|%|\\\$"
)
_UNITS = re.compile(r"(?<=[\d}])\s*\\(?:text|mbox)\{\s*[A-Za-z][A-Za-z ]*\}(?:\^\{?\d\}?)?$")
_ASSIGNED = re.compile(r"(?:[A-Za-z]|\\[A-Za-z]+)\s*(?:=|\\in(?![A-Za-z]))\s*(?P<value>[^=]+)")
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_REWRITES = (
    (re.compile(r"\\[dt]frac(?![A-Za-z])"), r"\\frac"),
    (re.compile(r"\\frac(\d)(\d)"), r"\\frac{\1}{\2}"),
    (re.compile(r"\\frac(\d)\{"), r"\\frac{\1}{"),
    (re.compile(r"\\frac\{([^{}]*)\}(\d)"), r"\\frac{\1}{\2}"),
    (re.compile(r"\\sqrt(\d)"), r"\\sqrt{\1}"),
    (re.compile(r"\\geq?(?![A-Za-z])"), r"\\geq"),
    (re.compile(r"\\leq?(?![A-Za-z])"), r"\\leq"),
)


def _unwrap(text: str) -> str:
    """``text`` without surrounding math delimiters or a whole-answer ``\\boxed``/``\\text``."""
    while True:
        text = text.strip()
        for opening, closing in _DELIMITERS:
            fits = len(text) >= len(opening) + len(closing)
            if fits and text.startswith(opening) and text.endswith(closing):
                text = text[len(opening) : len(text) - len(closing)]
                break
        else:
            wrapper = _WRAPPER.match(text)
            if wrapper is None or _closing_brace(text, wrapper.end()) != len(text) - 1:
                return text
            text = text[wrapper.end() + 1 : -1]


def math_normal_form(answer: str) -> str:
    """A cheap normal form of a LaTeX answer; equal forms mean equal answers.

    Strips math delimiters, a whole-answer ``\\boxed``/``\\text`` wrapper,
    ``\\left``/``\\right``, thin spaces, degrees, percent and dollar signs,
    trailing ``\\text{ units}``, a leading ``x =`` or ``x \\in``, thousands
    separators, whitespace and a trailing period; writes ``\\dfrac`` as
    ``\\frac``, ``\\frac12`` as ``\\frac{1}{2}``; normalizes plain decimals
    (``0.50`` -> ``0.5``) and a lone choice letter (``(C)`` -> ``C``).
    """
    text = _UNITS.sub("", _unwrap(answer).rstrip(". "))
    text = _unwrap(_REMOVED.sub(" ", text))
    assigned = _ASSIGNED.fullmatch(text)
    if assigned:
        text = assigned["value"]
    for pattern, replacement in _REWRITES:
        text = pattern.sub(replacement, text)
    text = "".join(text.split()).replace("{,}", ",").rstrip(".")
    if _THOUSANDS.fullmatch(text):
        text = text.replace(",", "")
    number = plain_decimal(text)
    if number is not None:
        return number
    letter = re.fullmatch(r"\(([A-Z])\)", text)
    return letter[1] if letter else text


# ---------------------------------------------------------------- math-verify


class _OutOfTime(BaseException):
    """Raised by the alarm; a BaseException so math-verify's handlers let it through."""


class _TimeoutNoticeFilter(logging.Filter):
    """Drops math-verify's notice that its own timeouts are off (we bound time ourselves)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_TimeoutNoticeFilter())


@lru_cache(maxsize=_CACHE_SIZE)
def _parsed(answer: str) -> list[object]:
    """math-verify's parse of an extracted answer (a list of candidate expressions)."""
    from math_verify import parse  # imported on first use: it loads sympy (~0.25 s)

    result: list[object] = parse("\\boxed{" + answer + "}", parsing_timeout=0)
    return result


def _verified(gold: str, pred: str, both_ways: bool) -> bool:
    """math-verify's verdict with ``gold`` as gold, or in either direction."""
    from math_verify import verify

    gold_parsed, pred_parsed = _parsed(gold), _parsed(pred)
    if not gold_parsed or not pred_parsed:
        return False
    if verify(gold_parsed, pred_parsed, timeout_seconds=0):
        return True
    return both_ways and bool(verify(pred_parsed, gold_parsed, timeout_seconds=0))


def _with_alarm(compare: Callable[[], bool], seconds: float) -> bool | None:
    """``compare()`` under a ``SIGALRM`` deadline; ``None`` when it runs out of time.

    Main thread only. It owns the real-time timer meanwhile: the previous
    ``SIGALRM`` handler is restored afterwards, a previous timer is not.
    """

    def out_of_time(signum: int, frame: FrameType | None) -> None:
        raise _OutOfTime

    previous = signal.signal(signal.SIGALRM, out_of_time)
    try:
        try:
            signal.setitimer(signal.ITIMER_REAL, seconds)
            return compare()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _OutOfTime:
        return None
    finally:
        signal.signal(signal.SIGALRM, previous)


def _compare_here(gold: str, pred: str, both_ways: bool, seconds: float) -> bool | None:
    return _with_alarm(lambda: _verified(gold, pred, both_ways), seconds)


class _Worker:
    """A child process that compares answers under its own alarm; killed when it overruns."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None

    def compare(self, gold: str, pred: str, both_ways: bool, seconds: float) -> bool | None:
        """The worker's verdict, or ``None`` when it ran out of time (or had to be killed)."""
        with self._lock:
            process = self._running()
            assert process.stdin is not None
            process.stdin.write(json.dumps([gold, pred, both_ways, seconds]) + "\n")
            process.stdin.flush()
            reply = self._reply(process, seconds + _WORKER_GRACE_S)
            if reply not in _VERDICTS:
                self.stop()
            return _VERDICTS.get(reply)

    def _running(self) -> subprocess.Popen[str]:
        if self._process is not None and self._process.poll() is None:
            return self._process
        source = str(Path(__file__).resolve().parents[2])
        path = os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH")) if p)
        self._process = subprocess.Popen(
            [sys.executable, "-c", "from slm_mux.tasks.math import _serve; _serve()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONPATH": path},
        )
        if self._reply(self._process, _WORKER_START_S) != "ready":
            self.stop()
            raise SlmMuxError(f"math grading worker did not start within {_WORKER_START_S:.0f} s")
        return self._process

    @staticmethod
    def _reply(process: subprocess.Popen[str], seconds: float) -> str:
        assert process.stdout is not None
        readable, _, _ = select.select([process.stdout], [], [], seconds)
        return process.stdout.readline().strip() if readable else ""

    def stop(self) -> None:
        """Kill the worker process, if any (the next comparison starts a new one)."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None


_WORKER = _Worker()
atexit.register(_WORKER.stop)


def _serve() -> None:
    """Worker loop: read ``[gold, pred, both_ways, seconds]`` lines, answer with a verdict."""
    replies = {verdict: reply for reply, verdict in _VERDICTS.items()}
    print("ready", flush=True)
    for line in sys.stdin:
        gold, pred, both_ways, seconds = json.loads(line)
        print(replies[_compare_here(gold, pred, both_ways, seconds)], flush=True)


@lru_cache(maxsize=_CACHE_SIZE)
def math_verify_equal(gold: str, pred: str, *, both_ways: bool, seconds: float) -> bool:
    """math-verify's verdict on two extracted answers within ``seconds`` (see module doc).

    ``both_ways=False`` asks whether ``pred`` matches ``gold``; ``True`` accepts
    a match in either direction. Running out of time gives ``False``.
    """
    if max(len(gold), len(pred)) > MAX_VERIFY_CHARS:
        return False
    if threading.current_thread() is threading.main_thread():
        verdict = _compare_here(gold, pred, both_ways, seconds)
    else:
        verdict = _WORKER.compare(gold, pred, both_ways, seconds)
    if verdict is None:
        logger.warning("math-verify ran out of time (%g s) on %.80r vs %.80r", seconds, gold, pred)
    return bool(verdict)


# --------------------------------------------------------------------- task


class MathTask(Task):
    """Competition math: answers in ``\\boxed{}``, compared symbolically.

    :meth:`grade` asks math-verify with the reference as gold.
    :meth:`equivalent` (two samples, no gold) accepts a match in either
    direction, so ``[1,2)`` and ``1 \\le x < 2`` are one vote. ``x=3`` and
    ``3`` are equal (a leading single-variable assignment is dropped).
    """

    name = "math"
    exact_equivalence = False

    def __init__(self, time_limit: float = 5.0) -> None:
        if time_limit <= 0:
            raise ValueError("time_limit must be positive")
        self.time_limit = time_limit

    def messages(self, question: Question) -> list[Message]:
        prompt = "Reason step by step, and put your final answer within \\boxed{}."
        return [{"role": "user", "content": f"{question.text}\n\n{prompt}"}]

    def extract(self, text: str) -> str | None:
        return last_boxed(text)

    def canonical(self, answer: str) -> str:
        return math_normal_form(answer)

    def grade(self, answer: str | None, reference: str) -> bool:
        if answer is None or not answer.strip():
            return False
        if self.canonical(answer) == self.canonical(reference):
            return True
        return math_verify_equal(reference, answer, both_ways=False, seconds=self.time_limit)

    def equivalent(self, first: str, second: str) -> bool:
        if self.canonical(first) == self.canonical(second):
            return True
        return math_verify_equal(first, second, both_ways=True, seconds=self.time_limit)
