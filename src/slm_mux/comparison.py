"""The results of a live comparison (``slm-mux compare``): one table for terminal, JSON, report.

Per method: accuracy and its standard error, the requests actually sent (one per
response received), the prompt and completion tokens the servers reported, the wall
time of the runs that sent requests, the questions on which some call failed, and, for
debate and moa, the groupthink counts, for mav the verifier replies without a
``Verdict:`` line (of all verdicts), and each distinct failure reason with whether a
re-run may fix it. The votes over samples (``slm-mux``, ``agent-forest``, ``sc``,
``first-sample``, ``oracle``) are computed from one shared set of independent samples, so
they show that sampling's calls, tokens and wall time.

Exit codes of ``slm-mux compare`` (:attr:`Comparison.exit_code`): 0 every call answered;
3 some call failed for a reason a re-run may fix (run the same command again: finished
calls are replayed, failed ones retried); 4 calls failed only for reasons a re-run
cannot fix (a prompt longer than the model's context, say).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from slm_mux.methods.registry import compare_methods, shared_methods
from slm_mux.store import MethodRun
from slm_mux.tables import Align, markdown_table

SHARED = "independent"
"""The name under which the shared independent samples are recorded."""


@dataclass(frozen=True)
class Failure:
    """One distinct reason calls failed, on how many questions, and whether a re-run may
    fix it."""

    reason: str
    retryable: bool
    questions: int

    def to_json(self) -> dict[str, Any]:
        return {"reason": self.reason, "retryable": self.retryable, "questions": self.questions}


def failure_counts(per_question: Iterable[Sequence[Mapping[str, Any]]]) -> tuple[Failure, ...]:
    """The distinct failure reasons of a method's questions (each question's failures
    as the method noted them: ``error`` and ``retryable``, default true), in order of first
    appearance, each counted once per question."""
    counts: Counter[tuple[str, bool]] = Counter()
    for failures in per_question:
        counts.update({(f["error"], bool(f.get("retryable", True))) for f in failures})
    return tuple(Failure(reason, retryable, n) for (reason, retryable), n in counts.items())


@dataclass(frozen=True)
class Verdicts:
    """A verifying method's (mav's) verifier verdicts, and those without a ``Verdict:``
    line (read from a last yes/no word, else a rejection)."""

    total: int
    unparsed: int


def verdict_counts(details: Iterable[Mapping[str, Any]]) -> Verdicts | None:
    """The verdicts over a method's questions (its outcomes' details: ``verdicts`` and
    ``unparsed_verdicts``), or ``None`` for a method that counts none."""
    counted = [d for d in details if "verdicts" in d]
    if not counted:
        return None
    total = sum(d["verdicts"] for d in counted)
    return Verdicts(total, sum(d.get("unparsed_verdicts", 0) for d in counted))


@dataclass(frozen=True)
class Groupthink:
    """Debate/moa outcomes against their first round's majority, in questions.

    ``lost``: the first-round majority was correct, the final answer wrong;
    ``gained``: the reverse; ``correct_present_lost``: some first-round answer was
    correct, the final answer wrong.
    """

    lost: int
    gained: int
    correct_present_lost: int


@dataclass(frozen=True)
class MethodResult:
    """One method's row of the table.

    ``model`` names the single model of ``sc`` and ``first-sample``; ``shared`` is
    :data:`SHARED` for the methods computed from the shared samples; ``failures`` the
    distinct reasons of the failed calls; ``verdicts`` those of a verifying method (mav).
    """

    method: str
    questions: int
    correct: int
    calls: int
    prompt_tokens: int
    completion_tokens: int
    wall_s: float
    failed: int
    model: str | None = None
    shared: str | None = None
    groupthink: Groupthink | None = None
    failures: tuple[Failure, ...] = ()
    verdicts: Verdicts | None = None

    @property
    def failed_everywhere(self) -> bool:
        """Whether some call failed on every question."""
        return self.questions > 0 and self.failed == self.questions

    @property
    def accuracy(self) -> float:
        """Share of questions answered correctly."""
        return self.correct / self.questions if self.questions else 0.0

    @property
    def stderr(self) -> float:
        """Standard error of :attr:`accuracy`: ``sqrt(p (1 - p) / n)``."""
        p = self.accuracy
        return math.sqrt(p * (1 - p) / self.questions) if self.questions else 0.0

    def to_json(self) -> dict[str, Any]:
        """The row as JSON (what ``--json`` prints under the method's name)."""
        data: dict[str, Any] = {
            "accuracy": self.accuracy,
            "stderr": self.stderr,
            "calls": self.calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "wall_s": round(self.wall_s, 3),
            "questions": self.questions,
            "correct": self.correct,
            "failed_questions": self.failed,
        }
        if self.model is not None:
            data["model"] = self.model
        if self.shared is not None:
            data["shared"] = self.shared
        if self.groupthink is not None:
            data["groupthink"] = {
                "lost": self.groupthink.lost,
                "gained": self.groupthink.gained,
                "correct_present_lost": self.groupthink.correct_present_lost,
            }
        if self.failures:
            data["failures"] = [failure.to_json() for failure in self.failures]
        if self.verdicts is not None:
            data["verdicts"] = self.verdicts.total
            data["unparsed_verdicts"] = self.verdicts.unparsed
        return data

    @classmethod
    def from_json(cls, method: str, data: dict[str, Any]) -> MethodResult:
        """The row :meth:`to_json` wrote."""
        groupthink = data.get("groupthink")
        return cls(
            method=method,
            questions=data["questions"],
            correct=data["correct"],
            calls=data["calls"],
            prompt_tokens=data["prompt_tokens"],
            completion_tokens=data["completion_tokens"],
            wall_s=data["wall_s"],
            failed=data["failed_questions"],
            model=data.get("model"),
            shared=data.get("shared"),
            groupthink=Groupthink(**groupthink) if groupthink is not None else None,
            failures=tuple(Failure(**f) for f in data.get("failures", ())),
            verdicts=(
                Verdicts(data["verdicts"], data["unparsed_verdicts"])
                if "verdicts" in data
                else None
            ),
        )


_HEADER = (
    "method",
    "accuracy",
    "stderr",
    "calls",
    "prompt tokens",
    "completion tokens",
    "wall s",
    "groupthink lost / gained / correct lost",
    "unparsed verdicts",
    "failed",
)
_RIGHT: Align = "right"
_ALIGN: tuple[Align, ...] = ("left", *[_RIGHT] * (len(_HEADER) - 1))


@dataclass(frozen=True)
class Comparison:
    """Every compared method's result on one question set of one task and split."""

    task: str
    split: str
    questions: int
    methods: dict[str, MethodResult]

    @property
    def failed(self) -> bool:
        """Whether some call failed on some question."""
        return any(result.failed for result in self.methods.values())

    @property
    def failures(self) -> list[Failure]:
        """Every distinct failure reason over the methods, once each (questions summed;
        a stored result from before reasons were kept counts as one retryable reason)."""
        merged: dict[tuple[str, bool], int] = {}
        for result in self.methods.values():
            known = result.failures or (
                (Failure("(reason not recorded)", True, result.failed),) if result.failed else ()
            )
            for failure in known:
                key = (failure.reason, failure.retryable)
                merged[key] = merged.get(key, 0) + failure.questions
        return [Failure(reason, retryable, n) for (reason, retryable), n in merged.items()]

    @property
    def retryable(self) -> bool:
        """Whether running the same command again may answer a failed call."""
        return any(failure.retryable for failure in self.failures)

    @property
    def exit_code(self) -> int:
        """``compare``'s exit status: 0 nothing failed, 3 a re-run may fix a failure,
        4 every failure is one a re-run cannot fix."""
        if not self.failed:
            return 0
        return 3 if self.retryable else 4

    def to_json(self) -> dict[str, Any]:
        """``{"task", "split", "questions": n, "methods": {name: row}}``."""
        return {
            "task": self.task,
            "split": self.split,
            "questions": self.questions,
            "methods": {name: result.to_json() for name, result in self.methods.items()},
        }

    def note(self) -> str:
        """What the table shows, in one paragraph."""
        shared = [name for name in self.methods if name in shared_methods()]
        text = (
            f"{self.task} ({self.split}), {self.questions} questions. Calls are requests "
            "actually sent (responses received); tokens as the servers reported them; wall "
            "time of the runs that sent requests."
        )
        if shared:
            text += (
                f" {', '.join(shared)} share one set of independent samples: their calls, "
                "tokens and wall time are those of that sampling."
            )
        return text

    def rows(self) -> list[tuple[str, ...]]:
        """The table's rows, one per method, under :data:`header`."""
        return [_row(result) for result in self.methods.values()]

    @property
    def header(self) -> tuple[str, ...]:
        """The table's column names."""
        return _HEADER

    def to_markdown(self) -> str:
        """The table in Markdown, then the note."""
        return markdown_table(_HEADER, self.rows(), _ALIGN) + "\n" + self.note() + "\n"


def _row(result: MethodResult) -> tuple[str, ...]:
    name = result.method if result.model is None else f"{result.method} ({result.model})"
    groupthink, verdicts = result.groupthink, result.verdicts
    return (
        name,
        f"{result.accuracy:.4f}",
        f"{result.stderr:.4f}",
        str(result.calls),
        str(result.prompt_tokens),
        str(result.completion_tokens),
        f"{result.wall_s:.2f}",
        "-"
        if groupthink is None
        else f"{groupthink.lost} / {groupthink.gained} / {groupthink.correct_present_lost}",
        "-" if verdicts is None else f"{verdicts.unparsed} of {verdicts.total}",
        str(result.failed),
    )


def comparisons_of(runs: Sequence[MethodRun]) -> list[Comparison]:
    """The stored comparisons, one per (task, split, question set), in order of first run.

    ``runs`` come oldest first (:meth:`~slm_mux.store.Store.method_runs`); each
    method shows its latest result on the question set, methods in table order.
    """
    groups: dict[tuple[str, str, str], dict[str, MethodResult]] = {}
    for run in runs:
        if run.result is None:
            continue
        group = groups.setdefault((run.task, run.split, run.questions_hash), {})
        group[run.method] = MethodResult.from_json(run.method, run.result)
    order = {name: i for i, name in enumerate(compare_methods())}
    comparisons = []
    for (task, split, _), results in groups.items():
        chosen = sorted(results.values(), key=lambda r: order.get(r.method, len(order)))
        questions = chosen[0].questions
        comparisons.append(Comparison(task, split, questions, {r.method: r for r in chosen}))
    return comparisons
