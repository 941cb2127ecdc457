"""The ``arith`` task: short integer expressions such as ``47+38-12``.

It is what the bundled tiny models (``slm_mux/pool_data``) were trained on, so
the demo runs offline. Three problem types, one or two operations each, with
operands 0-49:

* ``add``: ``a+b`` or ``a+b+c``;
* ``sub``: ``a-b`` or ``a-b-c``, never below zero;
* ``mul``: ``a*k`` with ``k`` in 2-9, optionally then ``+c`` or ``-c``.

Models answer with a scratchpad, one step per operation, then ``####`` and the
result: ``47+38=85 85-12=73 #### 73``.

Every expression belongs to exactly one split by a stable hash of its text
(:func:`split_of`), so the validation and test questions are disjoint and never
used for training.
"""

from __future__ import annotations

import random
import re
import zlib
from typing import Literal

from slm_mux.errors import InputError
from slm_mux.sample import Split
from slm_mux.tasks.base import ANSWER_FORMAT, Message, Question, Task

ProblemType = Literal["add", "sub", "mul"]
PROBLEM_TYPES: tuple[ProblemType, ...] = ("add", "sub", "mul")
MAX_OPERAND = 49
MAX_QUESTIONS = 5_000
"""The most questions :func:`generate_questions` draws per split (all are distinct)."""

ANSWER_FORMAT_HINT = (
    f"{ANSWER_FORMAT} compute the expression step by step, then write the result on a "
    "last line as '#### <number>'."
)

_EXPRESSION = re.compile(r"\d+(?:[+\-*]\d+)*")
_STEP = re.compile(r"([+\-*])(\d+)")
_INTEGER = re.compile(r"[+-]?\d+")
# "The answer is 8", "The result is 152.", "The result of 7 + 9 is 16." (an expression only
# between "of" and "is", so a sentence that merely goes on is not read).
_STATED = re.compile(
    r"(?:answer|result)(?: of [\d\s+\-*]+)? is:?\s*\**([+-]?\d+)\b(?![.,]\d)", re.IGNORECASE
)
# A real model's spaced equation, ``12 + 7 = 8``: the bundled tiny models never put a
# space before ``=`` (``47+38=85``), so their truncated scratchpads still read as no answer.
_EQUATION = re.compile(r" =\s*\**([+-]?\d+)\b(?![.,]\d)")


def problem_type(expression: str) -> ProblemType:
    """The problem type of an expression (multiplication wins over a trailing ``-c``)."""
    if "*" in expression:
        return "mul"
    return "sub" if "-" in expression else "add"


def _steps(expression: str) -> list[tuple[int, str, int, int]]:
    """Left-to-right steps ``(left, operator, right, result)`` of an expression."""
    text = expression.replace(" ", "")
    if not _EXPRESSION.fullmatch(text):
        raise InputError(f"not an arith expression: {expression!r}")
    head = re.match(r"\d+", text)
    assert head is not None  # guaranteed by the full match above
    value = int(head.group())
    steps = []
    for operator, operand in _STEP.findall(text[head.end() :]):
        right = int(operand)
        if operator == "+":
            result = value + right
        elif operator == "-":
            result = value - right
        else:
            result = value * right
        steps.append((value, operator, right, result))
        value = result
    return steps


def evaluate(expression: str) -> int:
    """The value of an expression, evaluated left to right (``*`` only ever comes first)."""
    steps = _steps(expression)
    return steps[-1][3] if steps else int(expression)


def scratchpad(expression: str) -> str:
    """The worked answer the models are trained to write: ``47+38=85 85-12=73 #### 73``."""
    steps = _steps(expression)
    work = " ".join(f"{left}{op}{right}={result}" for left, op, right, result in steps)
    return f"{work} #### {evaluate(expression)}"


def split_of(expression: str) -> Split | Literal["train"]:
    """The split an expression belongs to: 10 % validation, 10 % test, the rest train."""
    bucket = zlib.crc32(expression.encode()) % 10
    return "validation" if bucket == 0 else "test" if bucket == 1 else "train"


def random_expression(rng: random.Random, kind: ProblemType) -> str:
    """A random expression of problem type ``kind`` with one or two operations."""
    two = rng.random() < 0.5
    a = rng.randint(0, MAX_OPERAND)
    if kind == "add":
        b = rng.randint(0, MAX_OPERAND)
        return f"{a}+{b}+{rng.randint(0, MAX_OPERAND)}" if two else f"{a}+{b}"
    if kind == "sub":
        b = rng.randint(0, a)
        return f"{a}-{b}-{rng.randint(0, a - b)}" if two else f"{a}-{b}"
    product = f"{a}*{rng.randint(2, 9)}"
    if not two:
        return product
    if rng.random() < 0.5:
        return f"{product}+{rng.randint(0, MAX_OPERAND)}"
    return f"{product}-{rng.randint(0, min(MAX_OPERAND, evaluate(product)))}"


def generate_questions(split: Split, n: int, seed: int = 0) -> list[Question]:
    """``n`` distinct questions of ``split``, problem types drawn uniformly.

    Deterministic in ``(split, n, seed)``; a longer list starts with the shorter
    one. An id is the split and the expression, like ``arith-test-47+38-12``, so
    it names the same question whatever the seed or position.
    """
    if split not in ("validation", "test"):
        raise InputError(f"unknown arith split {split!r}; choose validation or test")
    if not 0 <= n <= MAX_QUESTIONS:
        raise InputError(f"arith question count {n} is outside 0..{MAX_QUESTIONS}")
    rng = random.Random(f"arith-{split}-{seed}")
    seen: set[str] = set()
    questions: list[Question] = []
    while len(questions) < n:
        kind = rng.choice(PROBLEM_TYPES)
        expression = random_expression(rng, kind)
        while expression in seen or split_of(expression) != split:
            expression = random_expression(rng, kind)
        seen.add(expression)
        questions.append(
            Question(
                id=f"arith-{split}-{expression}",
                text=expression,
                reference=str(evaluate(expression)),
            )
        )
    return questions


class ArithTask(Task):
    """Integer arithmetic with a scratchpad; the answer follows the last ``####``."""

    name = "arith"

    def messages(self, question: Question) -> list[Message]:
        """The answer-format hint as the system message, the bare expression as the user's.

        Real instruction models read the hint; the bundled tiny models, trained on
        the bare expression, never see it: their template drops system turns, and
        the in-process backend folds dropped system text into the user's turn
        except ``Answer format:`` paragraphs
        (:data:`~slm_mux.tasks.base.ANSWER_FORMAT`), so they still read
        ``Q: <expression>\nA: `` and the demo's numbers stand.
        """
        return [
            {"role": "system", "content": ANSWER_FORMAT_HINT},
            {"role": "user", "content": question.text},
        ]

    def extract(self, text: str) -> str | None:
        """The integer after the last ``####`` (quotes and bold around it ignored); else,
        what real instruction models write when they skip the format: a reply that is
        only an integer, the integer after a last "the answer is" or "the result (of
        <expression>) is", else after the last spaced ``=`` (``12 + 7 = 8``)."""
        if "####" not in text:
            bare = text.strip()
            if _INTEGER.fullmatch(bare):
                return bare
            stated = _STATED.findall(text) or _EQUATION.findall(text)
            return stated[-1] if stated else None
        tail = text.rsplit("####", 1)[1].split()
        word = tail[0].strip("\"'*`") if tail else ""
        return word if _INTEGER.fullmatch(word) else None

    def canonical(self, answer: str) -> str:
        stripped = answer.strip()
        return str(int(stripped)) if _INTEGER.fullmatch(stripped) else stripped
