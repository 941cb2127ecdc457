"""Adaptive SLM-MUX sampling live: rounds, seeds, decisions, failures, flags, the pool key.

A loopback fake server answers each choice from its sample seed (request seed + choice
index), so sample ``i`` of a question is the same whether it was drawn alone, in a
round or in one request of ``k``: the stream an adaptive run draws a prefix of.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from tests.server.test_serve_command import serving

from slm_mux.adaptive import pick
from slm_mux.cli import main
from slm_mux.engine import Mux, drawn_codes
from slm_mux.selection import tie_break_rank
from slm_mux.tasks import get_task
from slm_mux.testing.fake_server import FakeServer, FakeServerConfig, run_fake_server

MODELS = ("steady", "shaky", "wild")
ODDS = {"steady": 80, "shaky": 55, "wild": 30}  # percent of samples that answer 42


def by_seed(model: str, prompt: str, seed: int | None, index: int) -> str:
    """An answer drawn from the sample's own seed: ``seed + index``."""
    digest = hashlib.sha256(f"{model}:{prompt}:{(seed or 0) + index}".encode()).digest()
    roll = digest[0] * 100 // 256
    if roll < ODDS.get(model, 50):
        return "Answer: 42"
    return f"Answer: {digest[1] % 4}"


def write_pool(path: Path, base_url: str, *, k: int = 5, adaptive: str | None = None) -> Path:
    defaults = f"{{k: {k}" + (f", adaptive: {adaptive}" if adaptive else "") + "}"
    lines = [f"defaults: {defaults}", "models:"]
    for name in MODELS:
        lines += [
            f"  - name: {name}",
            "    backend: openai",
            f"    base_url: {base_url}",
            f"    model: {name}",
            "    max_retries: 0",
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def server() -> Iterator[tuple[str, FakeServer]]:
    with run_fake_server(FakeServerConfig(answers={"*": by_seed})) as running:
        yield running


def requests_of(server: FakeServer, model: str) -> list[tuple[int, int]]:
    """(seed, n) of every request ``model`` received, in arrival order."""
    return [
        (r.body["seed"], r.body.get("n", 1)) for r in server.requests if r.body["model"] == model
    ]


def test_exact_decides_as_full_on_the_same_stream_with_fewer_samples(
    tmp_path: Path, server: tuple[str, FakeServer]
) -> None:
    url, fake = server
    pool = write_pool(tmp_path / "pool.yaml", url)
    questions = [f"Question {i}: what is six times seven?" for i in range(30)]
    with Mux.from_pool(pool, adaptive="full") as full:
        expected = [full.ask(q) for q in questions]
    assert fake.request_count == len(questions) * len(MODELS)  # one request of k per model
    fake.requests.clear()
    drawn = 0
    with Mux.from_pool(pool, adaptive="exact") as exact:
        for question, whole in zip(questions, expected, strict=True):
            got = exact.ask(question)
            assert (got.answer, got.model) == (whole.answer, whole.model), question
            assert got.confidence is not None and whole.confidence is not None
            assert got.confidence <= whole.confidence  # counted over k, of fewer samples
            for model in MODELS:
                # A prefix of the same stream: the same answers as full's first ones.
                mine = got.samples[model].answers
                assert mine == whole.samples[model].answers[: len(mine)]
            # The decision over the drawn samples is the rule's pick over their codes.
            rows = [got.samples[m].answers for m in MODELS]
            chosen = pick(
                drawn_codes(rows, get_task("exact")),
                [5] * 3,
                list(map(int, tie_break_rank([None] * 3))),
            )
            assert MODELS[int(chosen.model)] == got.model
            assert got.samples_full == 15
            assert got.rounds >= 1
            drawn += got.samples_drawn
    assert drawn < 15 * len(questions)  # it saved samples
    assert drawn == sum(n for m in MODELS for _, n in requests_of(fake, m))


def test_rounds_ask_only_the_models_still_running_with_continuing_seeds(
    tmp_path: Path, server: tuple[str, FakeServer]
) -> None:
    url, fake = server
    pool = write_pool(tmp_path / "pool.yaml", url, k=5)
    with Mux.from_pool(pool, adaptive="first-agree") as mux:
        answer = mux.ask("Question 3: what is six times seven?")
    for model in MODELS:
        seeds = requests_of(fake, model)
        drawn = len(answer.samples[model].answers)
        assert sum(n for _, n in seeds) == drawn
        assert seeds[0][1] == 1  # round 1: one sample per model
        # Each later request starts at the next sample number: seed = base + first sample.
        starts = [seed - seeds[0][0] for seed, _ in seeds]
        assert starts == [sum(n for _, n in seeds[:i]) for i in range(len(seeds))]
    assert answer.rounds == max(len(requests_of(fake, m)) for m in MODELS)
    assert answer.samples_drawn == sum(len(answer.samples[m].answers) for m in MODELS)


def test_full_is_one_request_of_k_per_model(tmp_path: Path, server: tuple[str, FakeServer]) -> None:
    url, fake = server
    pool = write_pool(tmp_path / "pool.yaml", url, k=4)
    with Mux.from_pool(pool) as mux:
        answer = mux.ask("Question 1: what is six times seven?")
    assert [requests_of(fake, m) for m in MODELS] == [
        [(requests_of(fake, m)[0][0], 4)] for m in MODELS
    ]
    assert (answer.rounds, answer.samples_drawn, answer.samples_full) == (1, 12, 12)
    assert answer.tokens_saved == 0


def test_a_failed_model_counts_as_no_vote_and_is_asked_once(tmp_path: Path) -> None:
    config = FakeServerConfig(answers={"steady": by_seed, "shaky": by_seed})  # wild: 404
    with run_fake_server(config) as (url, fake):
        pool = write_pool(tmp_path / "pool.yaml", url, adaptive="exact")
        with Mux.from_pool(pool) as mux:
            answer = mux.ask("Question 5: what is six times seven?")
    assert answer.samples["wild"].error is not None
    assert answer.model in ("steady", "shaky")
    assert len(requests_of(fake, "wild")) == 1
    assert answer.to_json()["errors"].keys() == {"wild"}


def test_ask_prints_rounds_samples_and_an_estimate_of_tokens_saved(
    tmp_path: Path, server: tuple[str, FakeServer], capsys: pytest.CaptureFixture[str]
) -> None:
    url, _ = server
    pool = write_pool(tmp_path / "pool.yaml", url, adaptive="two-unanimous")
    assert main(["ask", "Question 2: what is six times seven?", "--pool", str(pool), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["adaptive"] == "two-unanimous"
    assert out["samples"]["full"] == 15
    assert 6 <= out["samples"]["drawn"] <= 15
    assert out["rounds"] in (1, 2)
    saved = 15 - out["samples"]["drawn"]
    assert (out["tokens_saved_estimate"] > 0) == (saved > 0)
    # The flag overrides the pool's default.
    assert main(["ask", "Question 2: x?", "--pool", str(pool), "--adaptive", "full"]) == 0
    assert "adaptive full: 1 round, 15 of 15 samples, ~0 tokens saved" in capsys.readouterr().err


def test_a_bad_policy_is_one_error_line(
    tmp_path: Path, server: tuple[str, FakeServer], capsys: pytest.CaptureFixture[str]
) -> None:
    url, _ = server
    pool = write_pool(tmp_path / "pool.yaml", url)
    for command in (["ask", "q?"], ["serve"], ["compare", "--task", "arith", "--store", "c.db"]):
        with pytest.raises(SystemExit) as exited:
            main([*command, "--pool", str(pool), "--adaptive", "agree:2"])
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert "argument --adaptive: adaptive policy 'agree:2': agree needs a threshold" in err
    bad = write_pool(tmp_path / "bad.yaml", url, adaptive="sometimes")
    for argv in (
        ["ask", "q?", "--pool", str(bad)],
        ["collect", "--pool", str(bad), "--task", "arith", "--store", str(tmp_path / "s.db")],
    ):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert f"{bad}: defaults.adaptive: unknown adaptive policy 'sometimes'" in err
    store = tmp_path / "s.db"
    argv = ["collect", "--pool", str(pool), "--task", "arith", "--store", str(store)]
    assert main([*argv, "--adaptive", "exact", "--samples", "7"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--samples with adaptive exact: adaptive collection stores at most" in err
    assert not store.exists()  # refused before anything was opened


def test_serve_samples_with_the_pool_default_and_reports_it(
    tmp_path: Path, server: tuple[str, FakeServer]
) -> None:
    url, fake = server
    pool = write_pool(tmp_path / "pool.yaml", url, adaptive="exact")
    with serving("--pool", str(pool), "--task", "gsm8k") as (base, process, _):
        api = openai.OpenAI(base_url=base, api_key="unused", max_retries=0)
        question = [{"role": "user", "content": "Question 7: what is six times seven?"}]
        reply = api.chat.completions.create(model="slm-mux", messages=question)  # type: ignore[arg-type]
        drawn = sum(n for m in MODELS for _, n in requests_of(fake, m))
        fake.requests.clear()
        forest = api.chat.completions.create(model="agent-forest", messages=question)  # type: ignore[arg-type]
        process.terminate()
    assert reply.model_extra is not None and forest.model_extra is not None
    selection = reply.model_extra["slm_mux"]
    assert set(selection) == {
        "answer",
        "model",
        "confidence",
        "votes",
        "failed",
        "adaptive",
        "rounds",
        "samples",
    }
    assert selection["adaptive"] == "exact"
    assert selection["samples"] == {"drawn": drawn, "full": 15}
    assert selection["rounds"] >= 1
    # agent-forest pools every sample: never adaptive, one request of k per model.
    assert "adaptive" not in forest.model_extra["slm_mux"]
    assert [n for m in MODELS for _, n in requests_of(fake, m)] == [5, 5, 5]
