"""Offline replay of adaptive sampling policies: on the evaluation's draws, on stores
collected adaptively, and through ``slm-mux eval``, ``scale`` and ``report``."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from slm_mux.adaptive import Policy, replay
from slm_mux.analysis.adaptive_replay import replay_policies
from slm_mux.analysis.arrays import SampleArrays, validation_accuracy
from slm_mux.analysis.draws import bases, draw, slot_keys
from slm_mux.analysis.evaluate import SLM_MUX, evaluate
from slm_mux.analysis.scaling import scale, write_plots
from slm_mux.cli import main
from slm_mux.errors import StoreError
from slm_mux.formats import write_jsonl
from slm_mux.sample import Sample
from slm_mux.selection import tie_break_rank

from .builders import Table, random_table, samples_from_table

POLICIES = [Policy.parse(p) for p in ("full", "exact", "first-agree", "two-unanimous", "agree:0.5")]
TEST, REFERENCES = random_table(31, models=3, questions=40, samples=5)
_VALIDATION, _REFERENCES = random_table(32, models=3, questions=20, samples=5)
VALIDATION: Table = {m: {f"v{q}": rows[q] for q in rows} for m, rows in _VALIDATION.items()}
VALIDATION_REFERENCES = {f"v{q}": reference for q, reference in _REFERENCES.items()}


def arrays(table: Table, references: dict[str, str], split: str = "test") -> SampleArrays:
    samples = samples_from_table(table, references, split=split)  # type: ignore[arg-type]
    return SampleArrays.from_samples(samples, split=split)


@pytest.fixture(scope="module")
def test_arrays() -> SampleArrays:
    return arrays(TEST, REFERENCES)


@pytest.fixture(scope="module")
def accuracy() -> dict[str, float]:
    return validation_accuracy(arrays(VALIDATION, VALIDATION_REFERENCES, "validation"))


def by_hand(
    table: Table, policy: Policy, k: int, trials: int, accuracy: dict[str, float]
) -> tuple[float, float, float]:
    """Accuracy, samples fraction and rounds of ``policy``, replayed question by question.

    Only the draw (:mod:`slm_mux.analysis.draws`) and the rule (:func:`replay`) are
    shared with the code under test: answers are compared as strings here.
    """
    models, questions = sorted(table), sorted(REFERENCES)
    base = bases(models, questions)
    recorded = np.array([[len(table[m][q]) for q in questions] for m in models])
    rank = tie_break_rank([accuracy[m] for m in models]).tolist()
    right, drawn, rounds = [], 0, 0
    for trial in range(trials):
        slots = draw(slot_keys(base, seed=4, trial=trial, width=5), recorded, k)
        for j, q in enumerate(questions):
            answers = [[table[m][q][s] for s in slots[i, j]] for i, m in enumerate(models)]
            names = {a: c for c, a in enumerate(dict.fromkeys(a for r in answers for a in r if a))}
            codes = [[names[a] if a else -1 for a in row] for row in answers]
            played = replay(policy, codes, [k] * len(models), rank)
            winner = int(played.selection.model)
            chosen = None if winner < 0 else list(names)[int(played.selection.code)]
            right.append(chosen == REFERENCES[q])
            drawn += sum(played.drawn)
            rounds += played.rounds
    decisions = trials * len(questions)
    return float(np.mean(right)), drawn / (decisions * len(models) * k), rounds / decisions


@pytest.mark.parametrize("k", [2, 3, 5])
def test_replay_on_the_evaluations_draws_matches_a_replay_by_hand(
    test_arrays: SampleArrays, accuracy: dict[str, float], k: int
) -> None:
    trials = 3
    result = replay_policies(
        test_arrays, POLICIES, k=k, trials=trials, seed=4, validation_accuracy=accuracy
    )
    plain = evaluate(test_arrays, k=k, trials=trials, seed=4, validation_accuracy=accuracy)
    passes = 1 if k == 5 else trials
    assert (result.k, result.passes, result.recorded_order) == (k, passes, False)
    for policy, score in result.policies.items():
        expected = by_hand(TEST, policy, k, passes, accuracy)
        assert (score.accuracy, score.samples_fraction, score.rounds) == pytest.approx(expected)
    for name in ("full", "exact"):
        lossless = result.policies[Policy.parse(name)]
        assert lossless.same_decision == 1.0
        assert lossless.accuracy == pytest.approx(plain.methods[SLM_MUX].accuracy)
        assert lossless.std == pytest.approx(plain.methods[SLM_MUX].std)
    assert result.policies[Policy.parse("full")].samples_fraction == 1.0
    # The approximate policies do stop early on these tables, and sometimes decide otherwise.
    cheap = result.policies[Policy.parse("agree:0.5")]
    assert cheap.samples_fraction < result.policies[Policy.parse("exact")].samples_fraction
    assert 0 < cheap.same_decision < 1  # type: ignore[operator]


def test_tokens_fraction_weighs_the_drawn_samples_by_their_tokens(
    test_arrays: SampleArrays, accuracy: dict[str, float]
) -> None:
    policies = [Policy.parse("full"), Policy.parse("exact"), Policy.parse("first-agree")]
    # Every recorded sample s of every model costs 10 ** s tokens: the fraction says which
    # samples were drawn, not only how many.
    tokens = np.broadcast_to(10.0 ** np.arange(5), test_arrays.codes.shape).copy()
    ones = np.ones(test_arrays.codes.shape)
    result = replay_policies(
        test_arrays, policies, k=5, trials=1, seed=4, validation_accuracy=accuracy, tokens=tokens
    )
    even = replay_policies(
        test_arrays, policies, k=5, trials=1, seed=4, validation_accuracy=accuracy, tokens=ones
    )
    models = sorted(TEST)
    rank = tie_break_rank([accuracy[m] for m in models]).tolist()
    for policy in policies:
        used = 0.0
        for q in range(len(REFERENCES)):
            rows = test_arrays.codes[:, q, :].tolist()
            used += sum(
                sum(10.0**s for s in range(n)) for n in replay(policy, rows, [5] * 3, rank).drawn
            )
        whole = len(REFERENCES) * 3 * 11111.0
        assert result.policies[policy].tokens_fraction == pytest.approx(used / whole)
        assert even.policies[policy].tokens_fraction == pytest.approx(
            even.policies[policy].samples_fraction
        )
        assert "tokens_fraction" in result.policies[policy].to_json()
    assert result.policies[Policy.parse("full")].tokens_fraction == 1.0
    # One unknown count: no tokens fraction, and none in the JSON.
    tokens[1, 2, 3] = np.nan
    unknown = replay_policies(test_arrays, policies, k=5, trials=1, seed=4, tokens=tokens)
    assert all(score.tokens_fraction is None for score in unknown.policies.values())
    assert "tokens_fraction" not in unknown.policies[policies[0]].to_json()


def adaptive_table(policy: Policy, k: int, accuracy: dict[str, float]) -> Table:
    """The full test table cut to what ``policy`` draws of each question: an adaptive store."""
    models = sorted(TEST)
    rank = tie_break_rank([accuracy[m] for m in models]).tolist()
    cut: dict[str, dict[str, list[str | None]]] = {m: {} for m in models}
    for q in REFERENCES:
        names = {a: c for c, a in enumerate(dict.fromkeys(a for m in models for a in TEST[m][q]))}
        codes = [[names[a] if a else -1 for a in TEST[m][q][:k]] for m in models]
        played = replay(policy, codes, [k] * len(models), rank)
        for m, n in zip(models, played.drawn, strict=True):
            cut[m][q] = list(TEST[m][q][:n])
    return cut


def test_a_store_collected_adaptively_replays_in_recorded_order(
    test_arrays: SampleArrays, accuracy: dict[str, float]
) -> None:
    exact = Policy.parse("exact")
    stored = arrays(adaptive_table(exact, 5, accuracy), REFERENCES)
    assert (stored.recorded < 5).any()
    result = replay_policies(stored, [exact], k=5, trials=7, seed=4, validation_accuracy=accuracy)
    full = replay_policies(
        test_arrays, [exact], k=5, trials=7, seed=4, validation_accuracy=accuracy
    )
    assert (result.recorded_order, result.passes) == (True, 1)
    score, reference = result.policies[exact], full.policies[exact]
    assert score.same_decision is None
    assert score.accuracy == reference.accuracy  # the decisions full sampling makes
    assert (
        score.samples_fraction == reference.samples_fraction == stored.recorded.sum() / (3 * 40 * 5)
    )
    assert score.rounds == reference.rounds


def test_a_policy_that_needs_an_unrecorded_sample_is_one_clear_error(
    accuracy: dict[str, float],
) -> None:
    stored = arrays(adaptive_table(Policy.parse("exact"), 5, accuracy), REFERENCES)
    with pytest.raises(StoreError) as raised:
        replay_policies(
            stored,
            [Policy.parse("first-agree")],
            k=5,
            trials=1,
            seed=0,
            validation_accuracy=accuracy,
        )
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("replaying first-agree at k=5 needs sample ")
    assert "of model 'm" in message and "on question 'q" in message
    assert "slm-mux collect --adaptive first-agree" in message


def test_scale_replays_every_k_and_plots_accuracy_against_cost(
    test_arrays: SampleArrays, tmp_path: Path
) -> None:
    validation = arrays(VALIDATION, VALIDATION_REFERENCES, "validation")
    policies = [Policy.parse("exact"), Policy.parse("agree:0.5")]
    result = scale(validation, test_arrays, trials=2, seed=4, max_models=2, policies=policies)
    assert result.policies == policies
    accuracy = validation_accuracy(validation)
    for point in result.by_samples:
        replayed = replay_policies(
            test_arrays, policies, k=point.k, trials=2, seed=4, validation_accuracy=accuracy
        )
        assert point.adaptive == replayed.policies
        assert point.adaptive[policies[0]].accuracy == pytest.approx(point.slm_mux)
        assert point.to_json()["adaptive"]["slm-mux@exact"]["samples_fraction"] <= 1
    assert "slm-mux@agree:0.5 (samples)" in result.to_markdown()
    paths = write_plots(result, tmp_path)
    assert [p.name for p in paths] == [
        "accuracy_vs_k.png",
        "accuracy_vs_models.png",
        "accuracy_vs_samples.png",
    ]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in paths)
    plain = scale(validation, test_arrays, trials=2, seed=4, max_models=2)
    assert len(write_plots(plain, tmp_path / "plain")) == 2


# --- the command line ---------------------------------------------------------


def write_store(tmp_path: Path, test: Table) -> Path:
    """A store of the tables; each test sample has 1 + its sample number completion tokens."""
    samples: list[Sample] = [
        *samples_from_table(VALIDATION, VALIDATION_REFERENCES, split="validation"),
        *(
            replace(sample, completion_tokens=1 + sample.sample)
            for sample in samples_from_table(test, REFERENCES)
        ),
    ]
    data = tmp_path / "samples.jsonl"
    with data.open("w", encoding="utf-8") as out:
        write_jsonl(samples, out)
    store = tmp_path / "samples.db"
    assert main(["import", str(data), "--store", str(store)]) == 0
    return store


def test_eval_adaptive_adds_one_method_per_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = write_store(tmp_path, TEST)
    capsys.readouterr()
    argv = ["eval", "--store", str(store), "--k", "3", "--trials", "3", "--seed", "4"]
    assert main([*argv, "--json", "--adaptive", "exact,agree:0.5"]) == 0
    payload = json.loads(capsys.readouterr().out)
    methods = payload["methods"]
    assert methods["slm-mux@exact"]["accuracy"] == methods["slm-mux"]["accuracy"]
    assert methods["slm-mux@exact"]["same_decision"] == 1.0
    assert set(methods["slm-mux@agree:0.5"]) == {
        "accuracy",
        "std",
        "samples_fraction",
        "tokens_fraction",
        "rounds",
        "same_decision",
    }
    # Later samples cost more tokens; a policy draws the first ones of each draw.
    cheap = methods["slm-mux@agree:0.5"]
    assert 0 < cheap["tokens_fraction"] < 1
    assert main([*argv, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["methods"] == {
        name: score for name, score in methods.items() if "@" not in name
    }
    assert main([*argv, "--adaptive", "two-unanimous"]) == 0
    assert "| slm-mux@two-unanimous |" in capsys.readouterr().out


def test_eval_on_an_adaptive_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], accuracy: dict[str, float]
) -> None:
    store = write_store(tmp_path, adaptive_table(Policy.parse("exact"), 5, accuracy))
    capsys.readouterr()
    assert main(["eval", "--store", str(store), "--adaptive", "exact", "--json"]) == 0
    out, err = capsys.readouterr()
    payload = json.loads(out)
    assert (payload["k"], payload["recorded_order"]) == (5, True)
    assert list(payload["methods"]) == ["slm-mux@exact"]
    assert "replay the recorded samples in recorded order" in err
    # Plain evaluation says what is missing and points to --adaptive.
    assert main(["eval", "--store", str(store), "--k", "5"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "replay it with --adaptive POLICY" in err
    # A policy that would need more than was recorded: one line, exit status 1.
    assert main(["eval", "--store", str(store), "--adaptive", "first-agree"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("slm-mux: error: replaying first-agree at k=5 needs sample ")
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("exact,bogus", "unknown adaptive policy 'bogus'"),
        ("exact,exact", "adaptive policy 'exact' is named twice"),
        ("agree:1,agree:1.0", "adaptive policy 'agree:1' is named twice in 'agree:1,agree:1.0'"),
        ("agree:0", "agree needs a threshold in (0, 1]"),
        ("exact,", "expected comma-separated adaptive policy names"),
    ],
)
def test_bad_policies_are_refused_while_parsing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str, says: str
) -> None:
    for command in ("eval", "scale", "report"):
        with pytest.raises(SystemExit) as raised:
            main([command, "--store", str(tmp_path / "none.db"), "--adaptive", value])
        assert raised.value.code == 2
        err = capsys.readouterr().err
        assert says in err and err.count("\n") == 1


def test_report_plots_accuracy_against_cost_by_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = write_store(tmp_path, TEST)
    out = tmp_path / "report"
    argv = [
        "report",
        "--store",
        str(store),
        "--out",
        str(out),
        "--trials",
        "2",
        "--max-models",
        "2",
    ]
    assert main(argv) == 0
    assert (out / "accuracy_vs_samples.png").read_bytes().startswith(b"\x89PNG")
    report = (out / "report.md").read_text()
    assert "## Adaptive sampling (replayed on the same draws)" in report
    for name in ("exact", "first-agree", "two-unanimous", "agree:1", "agree:0.6"):
        assert f"| slm-mux@{name} |" in report
    assert "![accuracy_vs_samples](accuracy_vs_samples.png)" in report
    assert main([*argv, "--out", str(tmp_path / "one"), "--adaptive", "exact"]) == 0
    assert "slm-mux@agree" not in (tmp_path / "one" / "report.md").read_text()
