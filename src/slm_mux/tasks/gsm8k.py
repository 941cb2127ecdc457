"""The ``gsm8k`` task: grade-school word problems with a numeric answer.

The answer is the number on the last ``#### N`` line, or else the last number
in the response. Numbers are compared by value: ``1,000``, ``$1,000``,
``1000`` and ``1000.0`` are one answer.
"""

from __future__ import annotations

import re

from slm_mux.tasks.base import Message, Question, Task

_NUMBER = re.compile(r"(?<![\w.])-?\$?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)")
_PLAIN = re.compile(r"(-?)(\d*)(?:\.(\d*))?")
# A list item's number ("1. First, ...", "2) ..."): a line's first word, a dot or a bracket,
# then a space. Real small models start lists they never finish ("1.  "): no answer.
_LIST_MARKER = re.compile(r"^[ \t]*\d{1,2}[.)][ \t]+", re.MULTILINE)
_MARKER = "####"


def plain_decimal(text: str) -> str | None:
    """Normal form of a plain decimal (``-0.50`` -> ``-0.5``, ``7.`` -> ``7``), else ``None``.

    Exact for any number of digits; never uses an exponent.
    """
    match = _PLAIN.fullmatch(text)
    if match is None or not (match[2] or match[3]):
        return None
    sign, whole, fraction = match[1], match[2].lstrip("0") or "0", (match[3] or "").rstrip("0")
    number = whole + ("." + fraction if fraction else "")
    return number if number == "0" else sign + number


def last_number(text: str) -> str | None:
    """The last number written in ``text`` (with its sign, ``$`` and commas), if any;
    list items' numbers (``1. ``) do not count."""
    numbers = _NUMBER.findall(_LIST_MARKER.sub(" ", text))
    return numbers[-1] if numbers else None


class Gsm8kTask(Task):
    """Word problems answered with one number, compared by value."""

    name = "gsm8k"

    def messages(self, question: Question) -> list[Message]:
        prompt = "Reason step by step, then give the final answer on a last line '#### <number>'."
        return [{"role": "user", "content": f"{question.text}\n\n{prompt}"}]

    def extract(self, text: str) -> str | None:
        marked = text.rfind(_MARKER)
        if marked >= 0:
            line = text[marked + len(_MARKER) :].split("\n", 1)[0]
            numbers = _NUMBER.findall(line)
            if numbers:
                return str(numbers[0])
        return last_number(text)

    def canonical(self, answer: str) -> str:
        cleaned = "".join(answer.split()).replace(",", "").replace("$", "").rstrip(".")
        number = plain_decimal(cleaned)
        return number if number is not None else cleaned.lower()
