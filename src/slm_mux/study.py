"""A study: the recorded samples of one store and task, ready for evaluation.

It loads the store once, checks what the analysis needs (a test split, a
validation split for search and tie-breaks, known models), and runs the
analysis functions with validation accuracy taken from the validation split
only — never from test answers.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from slm_mux.adaptive import Policy
from slm_mux.analysis import (
    Evaluation,
    SampleArrays,
    Scaling,
    SearchResult,
    evaluate,
    fewest_samples,
    scale,
    search,
    validation_accuracy,
    with_test_accuracy,
    write_plots,
    write_report,
)
from slm_mux.analysis.adaptive_replay import (
    REPORTED_POLICIES,
    FloatArray,
    Replayed,
    replay_policies,
)
from slm_mux.columns import SampleColumns
from slm_mux.comparison import Comparison, comparisons_of
from slm_mux.errors import InputError, StoreError
from slm_mux.store import Store

Warn = Callable[[str], None]


def _ignore(message: str) -> None:
    """Drop a warning."""


@dataclass(frozen=True)
class Study:
    """Test (and, when stored, validation) arrays of one or more tasks' samples.

    ``task`` names the task, or the comma-joined tasks, whose samples were loaded.
    """

    store: Path
    task: str
    test: SampleArrays
    validation: SampleArrays | None
    warn: Warn
    question_texts: dict[str, str]
    """Stored texts of the test questions (collected or imported from the authors' layout)."""
    references: dict[str, str]
    """Reference answers of the test questions, by question id."""

    @classmethod
    def open(
        cls,
        store: str | Path,
        *,
        models: Sequence[str] | None = None,
        task: str | Sequence[str] | None = None,
        question_ids: Collection[str] | None = None,
        warn: Warn = _ignore,
    ) -> Study:
        """Load the samples of ``task`` (the store's only task by default) for ``models``.

        ``task`` may name several tasks, as a sequence or comma-separated
        (``"math,exact"``): their samples are loaded together and each question
        is graded by its own task (a mixed custom set). Models are kept sorted
        by name whatever order they are given in. ``question_ids``, when given,
        keeps only those questions.
        """
        with Store(store, create=False) as db:
            tasks, columns = _load(db, task, ("test", "validation"))
            known = db.models() if models is not None else []
            texts = {
                qid: text for name in tasks for qid, text in db.question_texts(name, "test").items()
            }
        test_columns, validation_columns = columns["test"], columns["validation"]
        label = ",".join(tasks)
        if not len(test_columns.model):
            raise StoreError(f"{store}: no samples in split 'test' for task {label!r}")
        test = SampleArrays.from_columns(
            test_columns, models=models, known=known, question_ids=question_ids
        )
        validation = _validation_arrays(
            store, label, validation_columns, test.models, warn, question_ids
        )
        overlap = set(test_columns.question_ids) & (
            set(validation.question_ids) if validation is not None else set()
        )
        if question_ids is not None:
            overlap &= set(question_ids)
        if overlap:
            warn(f"{len(overlap)} questions are in both the validation and the test split")
        for arrays in (test, validation):
            if arrays is not None and arrays.dropped_questions:
                warn(
                    f"{arrays.dropped_questions} {arrays.split} questions left out: "
                    "not every model has samples of them"
                )
        references = dict(zip(test_columns.question_ids, test_columns.references, strict=True))
        return cls(Path(store), label, test, validation, warn, texts, references)

    @cached_property
    def test_tokens(self) -> FloatArray | None:
        """Completion tokens of each test sample, laid out as ``test.codes`` (NaN: unknown);
        ``None`` when the store knows none (imported samples)."""
        with Store(self.store, create=False) as db:
            known = db.completion_tokens("test", self.task.split(","))
        tokens = np.full(self.test.codes.shape, np.nan)
        for m, model in enumerate(self.test.models):
            for q, question_id in enumerate(self.test.question_ids):
                counts = known.get((model, question_id), [])
                tokens[m, q, : len(counts)] = [np.nan if c is None else c for c in counts]
        return None if np.isnan(tokens).all() else tokens

    @property
    def validation_accuracy(self) -> dict[str, float] | None:
        """Mean per-sample validation accuracy of the models that have validation samples."""
        return None if self.validation is None else validation_accuracy(self.validation)

    def _need_validation(self, what: str) -> SampleArrays:
        validation = self.validation
        missing = [m for m in self.test.models if validation is None or m not in validation.models]
        if validation is None or missing:
            raise StoreError(
                f"{self.store}: {what} needs validation samples of every model; "
                f"none for {', '.join(repr(m) for m in missing)}"
            )
        return validation

    def evaluate(self, *, k: int | None, trials: int, seed: int) -> Evaluation:
        """SLM-MUX and the baselines on test (``k`` defaults to all recorded samples)."""
        try:
            return evaluate(
                self.test,
                k=fewest_samples(self.test) if k is None else k,
                trials=trials,
                seed=seed,
                validation_accuracy=self.validation_accuracy,
            )
        except StoreError as error:
            raise StoreError(
                f"{error} (a store collected adaptively holds fewer: "
                "replay it with --adaptive POLICY)"
            ) from None

    def evaluate_adaptive(
        self, policies: Sequence[Policy], *, k: int | None, trials: int, seed: int
    ) -> tuple[Evaluation | None, Replayed]:
        """Plain evaluation and ``policies`` replayed on its draws, at ``k`` samples per model
        (default: the most recorded of any model and question).

        When some model has fewer than ``k`` samples of some question (a store
        collected adaptively) plain evaluation is impossible: it is ``None`` and
        the policies replay the recorded samples in recorded order, once.
        """
        chosen = int(self.test.recorded.max()) if k is None else k
        evaluation = None
        if int(self.test.recorded.min()) >= chosen:
            evaluation = self.evaluate(k=chosen, trials=trials, seed=seed)
        return evaluation, self._replay(policies, k=chosen, trials=trials, seed=seed)

    def _replay(self, policies: Sequence[Policy], *, k: int, trials: int, seed: int) -> Replayed:
        """``policies`` replayed on the test split, tie-breaks and tokens from this study."""
        return replay_policies(
            self.test,
            policies,
            k=k,
            trials=trials,
            seed=seed,
            validation_accuracy=self.validation_accuracy,
            tokens=self.test_tokens,
        )

    def search(
        self, *, k: int | None, max_models: int, lam: float, trials: int, seed: int
    ) -> SearchResult:
        """The best subset per size on validation, each then evaluated on test."""
        validation = self._need_validation("search")
        chosen_k = fewest_samples(self.test, validation) if k is None else k
        found = search(validation, k=chosen_k, max_models=max_models, lam=lam)
        return with_test_accuracy(
            found,
            self.test,
            k=chosen_k,
            trials=trials,
            seed=seed,
            validation_accuracy=self.validation_accuracy,
        )

    def scale(
        self,
        *,
        max_models: int,
        lam: float,
        trials: int,
        seed: int,
        k: int | None = None,
        found: SearchResult | None = None,
        policies: Sequence[Policy] = (),
    ) -> Scaling:
        """Accuracy against samples per model and against number of models.

        ``found`` reuses a search already run with the same ``k``, ``lam`` and sizes;
        each of ``policies`` is replayed at every ``k`` of the sweep.
        """
        return scale(
            self._need_validation("scale"),
            self.test,
            trials=trials,
            seed=seed,
            lam=lam,
            max_models=max_models,
            k=k,
            found=found,
            policies=policies,
            tokens=self.test_tokens if policies else None,
        )

    def comparisons(self) -> list[Comparison]:
        """The live comparisons (``slm-mux compare``) stored for the study's tasks."""
        with Store(self.store, create=False) as db:
            return comparisons_of(db.method_runs(task=self.task.split(",")))

    def report(
        self,
        out_dir: Path,
        *,
        k: int | None,
        max_models: int,
        lam: float,
        trials: int,
        seed: int,
        title: str | None = None,
        policies: Sequence[Policy] = REPORTED_POLICIES,
    ) -> Report:
        """Evaluation, search, scaling and plots as ``report.md`` and ``report.html``.

        Each of ``policies`` is replayed at the report's ``k`` and along the
        sweep over ``k``, for the accuracy-cost plot.
        """
        k = fewest_samples(self.test) if k is None else k
        evaluation = self.evaluate(k=k, trials=trials, seed=seed)
        replayed = None
        if policies:
            replayed = self._replay(policies, k=k, trials=trials, seed=seed)
        found = scaling = None
        plots: list[Path] = []
        if self.validation is not None:
            found = self.search(k=k, max_models=max_models, lam=lam, trials=trials, seed=seed)
            scaling = self.scale(
                max_models=max_models,
                lam=lam,
                trials=trials,
                seed=seed,
                k=found.k,
                found=found,
                policies=policies,
            )
            plots = write_plots(scaling, out_dir)
        else:
            self.warn("no validation split: the report has no search and no scaling sweep")
        md_path, html_path = write_report(
            out_dir,
            evaluation=evaluation,
            replayed=replayed,
            search=found,
            scaling=scaling,
            plots=plots,
            title=title or f"SLM-MUX report: {self.task} ({', '.join(self.test.models)})",
            question_texts=self.question_texts,
            references=self.references,
            comparisons=self.comparisons(),
        )
        return Report(evaluation, found, scaling, [*plots, md_path, html_path])


@dataclass(frozen=True)
class Report:
    """What :meth:`Study.report` computed and the files it wrote.

    ``search`` and ``scaling`` are ``None`` without a validation split.
    """

    evaluation: Evaluation
    search: SearchResult | None
    scaling: Scaling | None
    files: list[Path]


def stored_validation_accuracy(
    store: str | Path, *, task: str | Sequence[str] | None = None, warn: Warn = _ignore
) -> dict[str, float]:
    """Tie-break accuracy per model from a store's validation split (empty without one).

    ``task`` is read as in :meth:`Study.open` (one task, or several).
    """
    with Store(store, create=False) as db:
        tasks, loaded = _load(db, task, ("validation",))
    columns = loaded["validation"]
    arrays = _validation_arrays(store, ",".join(tasks), columns, columns.models, warn, None)
    return {} if arrays is None else validation_accuracy(arrays)


def _load(
    db: Store, task: str | Sequence[str] | None, splits: Sequence[str]
) -> tuple[list[str], dict[str, SampleColumns]]:
    """The tasks asked for (comma-separated or a sequence), checked, and their samples of
    ``splits``; by default the only task those splits hold (the store's, when they hold none).

    One query reads the samples; the store's list of tasks is read only for an error.
    """
    names = None
    if task is not None:
        names = [t.strip() for t in task.split(",")] if isinstance(task, str) else list(task)
        if not names or not all(names):
            raise InputError(f"empty task name in {task!r}")
        names = sorted(set(names))
    columns = db.sample_columns(splits, names)
    loaded = sorted({name for split in columns.values() for name in split.tasks})
    missing = [name for name in names or () if name not in loaded]
    stored = db.tasks() if missing or not loaded else loaded
    if not stored:
        raise StoreError(f"{db.path}: the store is empty; import or collect samples first")
    if names is None:
        if len(stored) > 1:
            raise InputError(
                f"{db.path} holds several tasks ({', '.join(stored)}); choose one with --task"
            )
        return stored, columns
    for name in missing:
        if name not in stored:
            raise InputError(
                f"{db.path} has no samples of task {name!r} (has: {', '.join(stored)})"
            )
    return names, columns


def _validation_arrays(
    store: str | Path,
    task: str,
    columns: SampleColumns,
    models: Sequence[str],
    warn: Warn,
    question_ids: Collection[str] | None,
) -> SampleArrays | None:
    """Validation arrays of the ``models`` that have validation samples; warns about the rest."""
    present = set(columns.models)
    chosen = [m for m in models if m in present]
    if not chosen:
        warn(
            f"{store}: no validation split for task {task!r}; "
            "confidence ties go to the model names in sorted order"
        )
        return None
    if len(chosen) < len(models):
        absent = ", ".join(repr(m) for m in models if m not in present)
        warn(f"no validation samples of {absent}: they rank last in confidence ties")
    return SampleArrays.from_columns(columns, models=chosen, question_ids=question_ids)
