"""Scaling sweeps, plots and the Markdown/HTML report."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from slm_mux.analysis.arrays import SampleArrays, validation_accuracy
from slm_mux.analysis.evaluate import evaluate
from slm_mux.analysis.report import write_report
from slm_mux.analysis.scaling import Scaling, scale, write_plots
from slm_mux.analysis.search import search, with_test_accuracy

from .builders import random_table, samples_from_table


@pytest.fixture(scope="module")
def splits() -> tuple[SampleArrays, SampleArrays]:
    table, references = random_table(21, models=4, questions=40, samples=4)
    validation = SampleArrays.from_samples(
        samples_from_table(table, references, split="validation"), split="validation"
    )
    table, references = random_table(22, models=4, questions=40, samples=4)
    test = SampleArrays.from_samples(samples_from_table(table, references), split="test")
    return validation, test


@pytest.fixture(scope="module")
def scaling(splits: tuple[SampleArrays, SampleArrays]) -> Scaling:
    validation, test = splits
    return scale(validation, test, trials=4, seed=2, max_models=3)


def test_sweep_over_samples(splits: tuple[SampleArrays, SampleArrays], scaling: Scaling) -> None:
    _, test = splits
    assert [p.k for p in scaling.by_samples] == [1, 2, 3, 4]
    accuracy = validation_accuracy(splits[0])
    for point in scaling.by_samples:
        methods = evaluate(test, k=point.k, trials=4, seed=2, validation_accuracy=accuracy).methods
        assert point.slm_mux == methods["slm-mux"].accuracy
        assert point.agent_forest == methods["agent-forest"].accuracy
        assert point.best_single_sc == max(methods[f"sc:{m}"].accuracy for m in test.models)
        assert point.best_single_sc == methods[f"sc:{point.best_single_model}"].accuracy


def test_sweep_over_models(splits: tuple[SampleArrays, SampleArrays], scaling: Scaling) -> None:
    validation, _ = splits
    assert scaling.k == 4
    best = search(validation, k=4, max_models=3).best
    assert [p.size for p in scaling.by_models] == [1, 2, 3]
    for point in scaling.by_models:
        assert point.models == best[point.size].models
        assert point.union_accuracy >= point.slm_mux
    table = scaling.to_markdown()
    assert "| 4 |" in table and ", ".join(scaling.by_models[-1].models) in table


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
    assert len(re.findall(r"^\| q\d\d \| m\d \|", markdown, re.M)) == len(evaluation.first_trial)
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
