"""Scaling sweeps, plots and the Markdown/HTML report."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from slm_mux.analysis.arrays import SampleArrays, validation_accuracy
from slm_mux.analysis.draws import bases, draw, slot_keys
from slm_mux.analysis.evaluate import SLM_MUX, evaluate
from slm_mux.analysis.report import write_report
from slm_mux.analysis.scaling import Scaling, draw_lines, scale, write_plots
from slm_mux.analysis.search import SearchResult, SubsetScore, search, with_test_accuracy
from slm_mux.comparison import Comparison, Failure, MethodResult
from slm_mux.errors import InputError
from slm_mux.sample import Split

from .builders import Table, random_table, samples_from_table

VALIDATION, VALIDATION_REFERENCES = random_table(21, models=4, questions=40, samples=4)
TEST, TEST_REFERENCES = random_table(22, models=4, questions=40, samples=4)


def arrays_of(
    table: Table, references: dict[str, str], split: Split, models: Sequence[str] | None = None
) -> SampleArrays:
    samples = samples_from_table(table, references, split=split)
    return SampleArrays.from_samples(samples, models=models, split=split)


def majority_answer(answers: Sequence[str | None]) -> str | None:
    """The most frequent non-empty answer, ties to the one that occurs first."""
    counts = Counter(a for a in answers if a)
    return next((a for a in answers if a and counts[a] == max(counts.values())), None)


def sc_accuracy(table: Table, references: dict[str, str], model: str) -> float:
    """Share of questions where the model's majority over all its samples is right."""
    rows = table[model]
    return float(np.mean([majority_answer(rows[q]) == references[q] for q in references]))


@pytest.fixture(scope="module")
def splits() -> tuple[SampleArrays, SampleArrays]:
    return (
        arrays_of(VALIDATION, VALIDATION_REFERENCES, "validation"),
        arrays_of(TEST, TEST_REFERENCES, "test"),
    )


@pytest.fixture(scope="module")
def scaling(splits: tuple[SampleArrays, SampleArrays]) -> Scaling:
    validation, test = splits
    return scale(validation, test, trials=4, seed=2, max_models=3)


def brute_force_sweep_point(
    table: Table, references: dict[str, str], k: int, accuracy: dict[str, float], best: str
) -> tuple[float, float, float]:
    """SLM-MUX, Agent Forest and ``best``'s SC at ``k``, by hand, over the same seeded draws.

    Only the draw (which samples, :mod:`slm_mux.analysis.draws`) is shared with
    the code under test; voting, confidence and tie-breaks are redone here.
    """
    models, questions = sorted(table), sorted(references)
    base = bases(models, questions)
    recorded = np.array([[len(table[m][q]) for q in questions] for m in models])
    mux, forest, single_sc = [], [], []
    for trial in range(4):
        drawn = draw(slot_keys(base, seed=2, trial=trial, width=4), recorded, k)
        for j, q in enumerate(questions):
            answers = {m: [table[m][q][s] for s in drawn[i, j]] for i, m in enumerate(models)}
            votes = {m: majority_answer(a) for m, a in answers.items()}
            counts = {m: answers[m].count(votes[m]) if votes[m] else 0 for m in models}
            winner = min(models, key=lambda m: (-counts[m], -accuracy[m], m))
            mux.append(votes[winner] == references[q])
            pooled = [a for m in models for a in answers[m]]
            forest.append(majority_answer(pooled) == references[q])
            single_sc.append(votes[best] == references[q])
    return float(np.mean(mux)), float(np.mean(forest)), float(np.mean(single_sc))


def test_sweep_over_samples(splits: tuple[SampleArrays, SampleArrays], scaling: Scaling) -> None:
    per_sample = {
        model: np.mean([a == "A" for answers in rows.values() for a in answers])
        for model, rows in VALIDATION.items()
    }
    best = max(sorted(per_sample), key=per_sample.__getitem__)
    accuracy = {model: float(value) for model, value in per_sample.items()}
    assert [p.k for p in scaling.by_samples] == [1, 2, 3, 4]
    assert {p.best_single_model for p in scaling.by_samples} == {best}
    for point in scaling.by_samples:
        expected = brute_force_sweep_point(TEST, TEST_REFERENCES, point.k, accuracy, best)
        assert (point.slm_mux, point.agent_forest, point.best_single_sc) == pytest.approx(expected)
    assert scaling.by_samples[-1].best_single_sc == pytest.approx(
        sc_accuracy(TEST, TEST_REFERENCES, best)
    )


def test_best_single_model_is_picked_on_validation_not_test() -> None:
    # a is perfect on validation but worse than b on test.
    validation = arrays_of(
        {"a": {"q1": ["r", "r"], "q2": ["r", "r"]}, "b": {"q1": ["r", "w"], "q2": ["w", "w"]}},
        {"q1": "r", "q2": "r"},
        "validation",
    )
    test_table: Table = {
        "a": {"q1": ["w", "w"], "q2": ["r", "w"]},
        "b": {"q1": ["r", "r"], "q2": ["r", "r"]},
    }
    test = arrays_of(test_table, {"q1": "r", "q2": "r"}, "test")
    result = scale(validation, test, trials=3, seed=0, max_models=1)
    assert [(p.k, p.best_single_model) for p in result.by_samples] == [(1, "a"), (2, "a")]
    assert result.by_samples[-1].best_single_sc == 0.5  # q2: r and w tie, r comes first
    assert sc_accuracy(test_table, {"q1": "r", "q2": "r"}, "b") == 1.0


@pytest.mark.parametrize("order", [["a", "b"], ["b", "a"]])
def test_best_single_model_ties_go_to_the_first_name_whatever_the_order(
    order: list[str],
) -> None:
    same: Table = {"a": {"q": ["r", "w"]}, "b": {"q": ["w", "r"]}}
    validation = arrays_of(same, {"q": "r"}, "validation")
    test = arrays_of(same, {"q": "r"}, "test", models=order)
    result = scale(validation, test, trials=1, seed=0, max_models=1)
    assert {p.best_single_model for p in result.by_samples} == {"a"}


def test_sweep_over_models(splits: tuple[SampleArrays, SampleArrays], scaling: Scaling) -> None:
    validation, test = splits
    assert scaling.k == 4
    best = search(validation, k=4, max_models=3).best
    accuracy = validation_accuracy(validation)
    rows = []
    for size in (1, 2, 3):
        models = best[size].models
        mux = evaluate(test.subset(models), k=4, trials=1, seed=0, validation_accuracy=accuracy)
        union = np.mean(
            [
                any(majority_answer(TEST[m][q]) == TEST_REFERENCES[q] for m in models)
                for q in TEST_REFERENCES
            ]
        )
        point = scaling.by_models[size - 1]
        assert (point.size, point.models) == (size, models)
        assert point.slm_mux == mux.methods[SLM_MUX].accuracy
        assert point.union_accuracy == pytest.approx(union)
        rows.append(
            f"| {size} | {', '.join(models)} | {mux.methods[SLM_MUX].accuracy:.4f} | {union:.4f} |"
        )
    table = scaling.to_markdown()
    assert table.splitlines()[-3:] == rows
    assert table.startswith("Best single model by validation accuracy;")


def test_given_search_is_reused(
    splits: tuple[SampleArrays, SampleArrays], scaling: Scaling
) -> None:
    validation, test = splits
    again = scale(
        validation,
        test,
        trials=4,
        seed=2,
        max_models=3,
        found=search(validation, k=4, max_models=3),
    )
    assert again.to_json() == scaling.to_json()
    searched = search(validation, k=2, max_models=1, lam=0.5).best[1].models
    other = next(m for m in test.models if (m,) != searched)
    found = SearchResult(
        best={1: SubsetScore((other,), objective=0.0, union_accuracy=0.0, contradiction=0.0)},
        exact=False,
        lam=0.5,
        k=2,
    )
    result = scale(validation, test, trials=4, seed=2, lam=0.5, max_models=1, found=found)
    assert [p.models for p in result.by_models] == [(other,)]
    assert (result.k, result.lam, result.exact) == (2, 0.5, False)
    expected = evaluate(
        test.subset([other]),
        k=2,
        trials=4,
        seed=2,
        validation_accuracy=validation_accuracy(validation),
    )
    assert result.by_models[0].slm_mux == expected.methods[SLM_MUX].accuracy


@pytest.mark.parametrize(
    ("k", "lam", "max_models", "asked"),
    [
        (2, 1.0, 3, "k=2, lambda=1, sizes up to 3"),
        (None, 0.5, 3, "k=4, lambda=0.5, sizes up to 3"),
        (4, 1.0, 2, "k=4, lambda=1, sizes up to 2"),
    ],
)
def test_given_search_must_match_the_request(
    splits: tuple[SampleArrays, SampleArrays],
    k: int | None,
    lam: float,
    max_models: int,
    asked: str,
) -> None:
    validation, test = splits
    found = search(validation, k=4, max_models=3)
    with pytest.raises(InputError) as raised:
        scale(validation, test, trials=1, seed=0, lam=lam, max_models=max_models, k=k, found=found)
    assert str(raised.value) == (
        f"the given search has k=4, lambda=1, sizes up to 3; scaling asked for {asked}"
    )


def test_test_model_without_validation_samples_is_refused(
    splits: tuple[SampleArrays, SampleArrays],
) -> None:
    validation, test = splits
    with pytest.raises(
        InputError, match=r"^model 'm3' has test samples but no validation samples$"
    ):
        scale(validation.subset(["m0", "m1", "m2"]), test, trials=1, seed=0, max_models=1)


@pytest.mark.parametrize(
    ("k", "note"),
    [
        (4, "40 questions, k=4 samples per model, 1 pass (all recorded samples); std is 0."),
        (
            2,
            "40 questions, k=2 samples per model, 3 trials, seed 0; std is across trials (ddof=0).",
        ),
    ],
)
def test_report_says_how_samples_were_drawn(
    tmp_path: Path, splits: tuple[SampleArrays, SampleArrays], k: int, note: str
) -> None:
    evaluation = evaluate(splits[1], k=k, trials=3, seed=0)
    md_path, html_path = write_report(tmp_path, evaluation=evaluation)
    assert f"\n{note}\n" in md_path.read_text()
    assert f'<p class="note">{note}</p>' in html_path.read_text()


def test_plots_and_report(
    tmp_path: Path, splits: tuple[SampleArrays, SampleArrays], scaling: Scaling
) -> None:
    validation, test = splits
    plots = write_plots(scaling, tmp_path / "plots")
    assert [p.name for p in plots] == ["accuracy_vs_k.png", "accuracy_vs_models.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in plots)
    accuracy = validation_accuracy(validation)
    evaluation = evaluate(test, k=2, trials=3, seed=0, validation_accuracy=accuracy)
    found = with_test_accuracy(
        search(validation, k=2, max_models=2),
        test,
        k=2,
        trials=3,
        seed=0,
        validation_accuracy=accuracy,
    )
    md_path, html_path = write_report(
        tmp_path / "report",
        evaluation=evaluation,
        search=found,
        scaling=scaling,
        plots=plots,
        title="Report <1> & co",
    )
    markdown, page = md_path.read_text(), html_path.read_text()
    assert "![accuracy_vs_k](../plots/accuracy_vs_k.png)" in markdown
    assert (
        "\nBest single model by validation accuracy (chosen once, the same at every k)" in markdown
    )
    best = scaling.by_samples[0].best_single_model
    assert len(re.findall(rf"^\| \d \|.* \| {best} \|$", markdown, re.M)) == len(scaling.by_samples)
    rows = re.findall(r"^\| q\d\d \|  \| - \| m\d \|", markdown, re.M)  # no texts, references
    assert len(rows) == len(evaluation.first_trial)
    assert page.count('src="data:image/png;base64,') == 2
    assert not re.search(r"(src|href)=\"(?!data:)", page)
    assert "http://" not in page and "https://" not in page
    assert "<title>Report &lt;1&gt; &amp; co</title>" in page
    for name in test.models:
        assert f"<td>{name}</td>" in page


def test_report_escapes_answers(tmp_path: Path) -> None:
    table = {"a": {"q": ['<img src="http://x">|', "y"]}, "b": {"q": ["y", "y"]}}
    samples = samples_from_table(table, {"q": "z"})
    arrays = SampleArrays.from_samples(samples, split="test")
    evaluation = evaluate(arrays.subset(["a"]), k=2, trials=1, seed=0)
    md_path, html_path = write_report(tmp_path, evaluation=evaluation)
    page = html_path.read_text()
    assert 'src="http' not in page
    assert "&lt;img src=&quot;http://x&quot;&gt;|" in page
    assert "\\|" in md_path.read_text()


def test_per_question_table_shows_each_reference(
    tmp_path: Path, splits: tuple[SampleArrays, SampleArrays]
) -> None:
    evaluation = evaluate(splits[1], k=2, trials=1, seed=0)
    md_path, html_path = write_report(
        tmp_path, evaluation=evaluation, references=TEST_REFERENCES, question_texts={"q00": "t"}
    )
    shown = dict(re.findall(r"^\| (q\d\d) \| t? \| (\S+) \| ", md_path.read_text(), re.M))
    assert shown == {o.question_id: TEST_REFERENCES[o.question_id] for o in evaluation.first_trial}
    assert "<th>reference</th>" in html_path.read_text()


def test_identical_curves_stay_apart_with_their_own_markers() -> None:
    from matplotlib.figure import Figure

    axes = Figure().add_subplot()
    same = [0.5, 0.6, 0.7]
    draw_lines(axes, [1, 2, 3], {"a": same, "b": same, "c": [0.1, 0.2, 0.3]})
    lines = axes.get_lines()
    xs = [tuple(np.asarray(line.get_xdata(), dtype=float)) for line in lines]
    assert len(set(xs)) == 3 and all(abs(x[0] - 1) < 0.1 for x in xs)
    ys = [np.asarray(line.get_ydata(), dtype=float).tolist() for line in lines[:2]]
    assert ys == [same, same]
    assert len({line.get_marker() for line in lines}) == 3
    assert len({line.get_linestyle() for line in lines}) == 3


def _compared(method: str, failed: int, reasons: tuple[str, ...]) -> MethodResult:
    failures = tuple(Failure(reason, True, 1) for reason in reasons)
    return MethodResult(method, 4, 0, 4, 10, 10, 0.1, failed, failures=failures)


def test_a_compared_method_that_failed_everywhere_shows_why(tmp_path: Path) -> None:
    reasons = tuple(f"prompt {n} too long" for n in range(5))
    comparison = Comparison(
        "arith",
        "test",
        4,
        {
            "slm-mux": _compared("slm-mux", 1, ("timeout",)),
            "debate": _compared("debate", 4, reasons),
            "moa": _compared("moa", 4, ()),
        },
    )
    debate_result = comparison.methods["debate"]
    assert MethodResult.from_json("debate", debate_result.to_json()) == debate_result
    evaluation = evaluate(arrays_of(TEST, TEST_REFERENCES, "test"), k=2, trials=1, seed=0)
    md_path, html_path = write_report(tmp_path, evaluation=evaluation, comparisons=[comparison])
    markdown = md_path.read_text()
    assert "why every question failed |" in markdown
    [debate] = re.findall(r"^\| debate \|.*", markdown, re.M)
    shown = "prompt 0 too long (and 4 other reasons)"
    assert debate.endswith(f"| {shown} |")
    [mux] = re.findall(r"^\| slm-mux \| 0\.0000 \|.*", markdown, re.M)
    assert mux.endswith("| 1 |  |")  # failed somewhere, not everywhere: no reason column entry
    assert re.search(r"^\| moa \|.*\| no reason recorded \|$", markdown, re.M)
    assert f"<td>{shown}</td>" in html_path.read_text()


def test_names_are_not_wrapped_in_html_tables(tmp_path: Path) -> None:
    evaluation = evaluate(arrays_of(TEST, TEST_REFERENCES, "test"), k=2, trials=1, seed=0)
    _, html_path = write_report(tmp_path, evaluation=evaluation)
    style = re.search(r"<style>(.*)</style>", html_path.read_text(), re.S)
    assert style is not None
    assert re.search(r"td:first-child[^{]*\{ white-space: nowrap; \}", style.group(1))
