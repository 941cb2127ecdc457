"""What the harness log readers share: the task map, the stored rows of one question,
and the check that every model answered the same questions."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from slm_mux.errors import InputError
from slm_mux.tasks import get_task, task_names

HARNESS_TASKS = (("gsm8k", "gsm8k"), ("gpqa", "gpqa"), ("math", "math"))
"""(part of a harness task name, slm-mux task): the first part found in the name wins,
so ``gsm8k_cot``, ``gpqa_diamond_cot_zeroshot``, ``hendrycks_math_algebra`` and
``inspect_evals/math`` map to gsm8k, gpqa and math."""

DEFAULT_SPLIT = "test"
"""The split of imported harness logs when ``--split`` is not given."""

Row = tuple[tuple[str, ...], tuple[object, ...]]
"""A staged sample row (see :meth:`~slm_mux.store.Staging.add_samples`)."""


def mapped_task(harness_task: str, given: str | None, where: str) -> str:
    """The slm-mux task grading a harness task: ``given`` (``--task``) when set, else the
    one :data:`HARNESS_TASKS` names; raises :class:`InputError` (naming ``where``) if none."""
    if given is not None:
        get_task(given)
        return given
    lowered = harness_task.lower()
    found = next((task for part, task in HARNESS_TASKS if part in lowered), None)
    if found is None:
        raise InputError(
            f"{where}: task {harness_task!r} has no slm-mux grader of its own; "
            f"give --task ({', '.join(task_names())})"
        )
    return found


def reference_of(task: str, target: str) -> str:
    """The reference answer in a harness target: what ``task`` extracts from it (the number
    after ``####``, a ``\\boxed{}``, an option letter), else the target stripped."""
    return get_task(task).extract(target) or target.strip()


@dataclass(frozen=True)
class Answered:
    """One question as a harness log holds it: its id, text, reference and raw generations."""

    question_id: str
    text: str
    reference: str
    generations: Sequence[str]


def sample_rows(
    model: str, task: str, split: str, answered: Answered, origin: int
) -> Iterator[Row]:
    """The staged rows of ``answered``: sample ``i`` is generation ``i``, its answer
    extracted by ``task``'s grader from the raw text, which is kept."""
    extract = get_task(task).extract
    for number, text in enumerate(answered.generations):
        values = (model, task, split, answered.question_id, answered.reference, number)
        yield ("text",), (*values, extract(text), text, origin)


@dataclass
class QuestionSets:
    """Which questions each model's logs answered, per task and split, to check that every
    model of an import answered the same ones (:meth:`check`)."""

    _held: dict[tuple[str, str], dict[str, dict[str, str]]] = field(default_factory=dict)

    def note(self, task: str, split: str, model: str, question_id: str, where: str) -> None:
        """Record that ``model`` answered ``question_id``, as read at ``where``."""
        models = self._held.setdefault((task, split), {})
        models.setdefault(model, {}).setdefault(question_id, where)

    def check(self) -> None:
        """Raise :class:`InputError` naming the first question one model answered and
        another (of the same task and split) did not."""
        for (task, split), models in self._held.items():
            first_model, first = next(iter(models.items()))
            for model, answered in models.items():
                extra = next((qid for qid in answered if qid not in first), None)
                if extra is not None:
                    raise InputError(
                        f"{answered[extra]}: {model!r} answered question {extra!r} ({task}, "
                        f"{split}), which {first_model!r} did not: the models' logs cover "
                        "different questions"
                    )
                missing = next((qid for qid in first if qid not in answered), None)
                if missing is not None:
                    raise InputError(
                        f"{first[missing]}: {first_model!r} answered question {missing!r} "
                        f"({task}, {split}), which {model!r} did not: the models' logs cover "
                        "different questions"
                    )
