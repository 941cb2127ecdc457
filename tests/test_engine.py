"""Live SLM-MUX and resumable collection, on scripted models and a real loopback server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from slm_mux.backends.base import Price
from slm_mux.backends.scripted import ScriptedBackend
from slm_mux.collect import collect
from slm_mux.engine import Mux, MuxAnswer
from slm_mux.errors import BackendError, InputError
from slm_mux.members import Member
from slm_mux.store import Store
from slm_mux.tasks import Question, get_task
from slm_mux.testing.fake_server import FakeServerConfig, run_fake_server

QUESTIONS = [Question(f"q{i}", f"What is {i} + {i}?", str(2 * i)) for i in range(6)]


def _ask(members: list[Member], question: str = "q", **options: Any) -> MuxAnswer:
    with Mux(members, task="gsm8k", **options) as mux:
        return mux.ask(question)


def _member(name: str, responses: list[str], k: int = 3) -> Member:
    return Member(ScriptedBackend(name, {"*": responses}), k=k, settings_hash=f"h-{name}")


def test_ask_picks_the_most_confident_model_and_reports_votes() -> None:
    mux = Mux(
        [
            _member("split", ["#### 1", "#### 2", "#### 3"]),
            _member("sure", ["#### 7", "#### 7", "#### 7.0"]),
            _member("half", ["#### 5", "#### 5", "no idea"]),
        ],
        task="gsm8k",
    )
    with mux:
        answer = mux.ask("anything")
    assert (answer.answer, answer.model, answer.confidence) == ("7", "sure", 1.0)
    assert answer.votes["sure"] == {"7": 3}  # 7 and 7.0 are one vote under the grader
    assert answer.votes["half"] == {"5": 2}
    assert answer.to_json()["model"] == "sure"


def test_ask_asks_each_model_once_for_all_k_samples() -> None:
    members = [_member(name, ["#### 1"], k=5) for name in ("a", "b", "c")]
    _ask(members)
    for member in members:
        backend = member.backend
        assert isinstance(backend, ScriptedBackend)
        assert [r.n for r in backend.requests] == [5]


def test_ask_ties_go_to_validation_accuracy() -> None:
    members = [_member("a", ["#### 1", "#### 1", "#### 2"]), _member("b", ["#### 3"] * 2 + ["x"])]
    assert _ask(members).model == "a"
    assert _ask(members, validation_accuracy={"a": 0.4, "b": 0.6}).model == "b"


def test_a_failing_model_is_reported_and_the_others_answer() -> None:
    broken = Member(ScriptedBackend("broken", {"only this": ["#### 9"]}), k=3)
    answer = _ask([broken, _member("ok", ["#### 4"])])
    assert answer.model == "ok"
    assert "no scripted answer" in (answer.samples["broken"].error or "")
    assert answer.votes["broken"] == {}


class _CountingBackend(ScriptedBackend):
    closed = 0

    async def aclose(self) -> None:
        self.closed += 1


def test_sync_asks_share_one_loop_and_close_once() -> None:
    backend = _CountingBackend("a", {"*": ["#### 1"]})
    with Mux([Member(backend, k=2)], task="gsm8k") as mux:
        assert [mux.ask(f"q{i}").answer for i in range(3)] == ["1", "1", "1"]
        assert backend.closed == 0
    assert backend.closed == 1


def test_every_model_failing_is_an_error() -> None:
    broken = Member(ScriptedBackend("broken", {"only this": ["#### 9"]}), k=3)
    with pytest.raises(BackendError, match="every model failed; broken"):
        _ask([broken])


def _collect(members: list[Member], store: Store, questions: list[Question] = QUESTIONS) -> None:
    report = asyncio.run(collect(members, get_task("gsm8k"), questions, split="test", store=store))
    assert set(report.models) == {m.name for m in members}


def test_collect_stores_k_samples_and_a_second_run_asks_nothing(tmp_path: Path) -> None:
    members = [_member("a", ["#### 2", "#### 4", "#### 6"]), _member("b", ["#### 0"], k=2)]
    with Store(tmp_path / "s.db") as store:
        _collect(members, store)
        assert store.count() == len(QUESTIONS) * (3 + 2)
        first = store.samples(models=["a"])
        assert [s.sample for s in first[:3]] == [0, 1, 2]
        assert first[0].settings_hash == "h-a" and first[0].text == "#### 2"
        assert first[1].correct is (QUESTIONS[0].reference == "4")
        assert store.question_text("gsm8k", "test", "q3") == "What is 3 + 3?"
        again = [_member("a", ["#### 2"]), _member("b", ["#### 0"], k=2)]
        _collect(again, store)
    for member in again:
        assert isinstance(member.backend, ScriptedBackend)
        assert member.backend.requests == []


def test_collect_resumes_partial_questions_with_the_missing_samples_only(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as store:
        _collect([_member("a", ["#### 2"], k=2)], store)
        grown = _member("a", ["#### 2"], k=5)
        _collect([grown], store)
        assert store.count() == len(QUESTIONS) * 5
    assert isinstance(grown.backend, ScriptedBackend)
    assert {r.n for r in grown.backend.requests} == {3}


def test_one_failing_model_never_stops_the_others_and_is_retried(tmp_path: Path) -> None:
    flaky = Member(ScriptedBackend("flaky", {"1 + 1": ["#### 2"], "2 + 2": ["#### 4"]}), k=2)
    with Store(tmp_path / "s.db") as store:
        _collect([flaky, _member("steady", ["#### 0"])], store)
        assert store.count(split="test") == 2 * 2 + len(QUESTIONS) * 3
        failed = {f.question_id for f in store.failures(model="flaky")}
        assert failed == {"q0", "q3", "q4", "q5"}
        healed = Member(ScriptedBackend("flaky", {"*": ["#### 1"]}), k=2)
        _collect([healed], store)
        assert store.failures() == []
        assert store.count() == len(QUESTIONS) * (2 + 3)


def _write_pool(path: Path, base_url: str, models: list[str], k: int = 3) -> None:
    lines = ["defaults:", f"  k: {k}", "  temperature: 0.3", "models:"]
    for name in models:
        lines += [
            f"  - name: {name}",
            "    backend: openai",
            f"    base_url: {base_url}",
            f"    model: {name}",
            "    timeout_s: 5",
            "    max_retries: 1",
        ]
    path.write_text("\n".join(lines) + "\n")


def _numbers(model: str, prompt: str, seed: int | None, index: int) -> str:
    """Model 'good' always answers 2x the number in the prompt; 'noisy' varies."""
    number = int(prompt.split("What is ")[1].split(" ")[0]) if "What is " in prompt else 0
    if model == "good":
        return f"Doubling gives #### {2 * number}"
    return f"#### {number + index}"


def test_ask_command_against_a_real_server(tmp_path: Path) -> None:
    config = FakeServerConfig(answers={"*": _numbers})
    with run_fake_server(config) as (base_url, server):
        pool = tmp_path / "pool.yaml"
        _write_pool(pool, base_url, ["noisy", "good"])
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "slm_mux",
                "ask",
                "What is 21 + 21?",
                "--pool",
                str(pool),
                "--task",
                "gsm8k",
                "--json",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        out = json.loads(result.stdout)
        assert (out["answer"], out["model"], out["confidence"]) == ("42", "good", 1.0)
        assert out["votes"]["noisy"] == {"21": 1, "22": 1, "23": 1}
        assert server.request_count == 2


@pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")
def test_collection_killed_with_sigkill_resumes_without_loss_or_duplicates(tmp_path: Path) -> None:
    data = tmp_path / "questions.jsonl"
    questions = 40
    data.write_text(
        "".join(
            json.dumps(
                {"id": f"q{i}", "question": f"What is {i} + {i}?", "answer": f"#### {2 * i}"}
            )
            + "\n"
            for i in range(questions)
        )
    )
    db = tmp_path / "s.db"
    config = FakeServerConfig(answers={"*": _numbers}, latency_s=0.05)
    with run_fake_server(config) as (base_url, server):
        pool = tmp_path / "pool.yaml"
        _write_pool(pool, base_url, ["noisy", "good"])
        for model in ("noisy", "good"):
            pool.write_text(
                pool.read_text().replace(
                    f"    model: {model}\n", f"    model: {model}\n    max_concurrency: 2\n"
                )
            )
        argv = [
            sys.executable,
            "-m",
            "slm_mux",
            "collect",
            "--pool",
            str(pool),
            "--task",
            "gsm8k",
            "--data",
            str(data),
            "--store",
            str(db),
            "--quiet",
        ]
        victim = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if db.exists():
                with Store(db) as store:
                    if store.count() >= 30:
                        break
            time.sleep(0.05)
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=10)
        with Store(db) as store:
            stored_before = store.count()
        assert 0 < stored_before < 2 * questions * 3, "the kill should land mid-run"
        requests_before = server.request_count

        finished = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
        assert finished.returncode == 0, finished.stderr
        with Store(db) as store:
            samples = store.samples()
        keys = [(s.model, s.question_id, s.sample) for s in samples]
        assert len(keys) == len(set(keys)) == 2 * questions * 3
        # The second run asked only for questions that were not complete.
        missing_questions = 2 * questions - stored_before // 3
        assert server.request_count - requests_before <= missing_questions
        assert all(s.correct for s in samples if s.model == "good")


def test_run_collects_both_splits_then_evaluates(tmp_path: Path) -> None:
    def questions(name: str, count: int) -> Path:
        path = tmp_path / f"{name}.jsonl"
        path.write_text(
            "".join(
                json.dumps({"id": f"{name}{i}", "question": f"What is {i} + {i}?",
                            "answer": f"#### {2 * i}"}) + "\n"
                for i in range(count)
            )
        )  # fmt: skip
        return path

    with run_fake_server(FakeServerConfig(answers={"*": _numbers})) as (base_url, _):
        pool = tmp_path / "pool.yaml"
        _write_pool(pool, base_url, ["noisy", "good"])
        result = subprocess.run(
            [sys.executable, "-m", "slm_mux", "run", "--pool", str(pool), "--task", "gsm8k",
             "--data", str(questions("t", 5)), "--validation-data", str(questions("v", 4)),
             "--store", str(tmp_path / "s.db"), "--quiet", "--json"],
            capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["questions"] == 5
    assert out["methods"]["sc:good"]["accuracy"] == 1.0
    assert out["methods"]["slm-mux"]["accuracy"] == 1.0
    with Store(tmp_path / "s.db") as store:
        assert store.count(split="validation") == 2 * 4 * 3


def test_a_dataset_id_without_the_datasets_package_is_a_clear_error(tmp_path: Path) -> None:
    pool = tmp_path / "pool.yaml"
    pool.write_text("models:\n  - {name: a, backend: scripted, script: {'*': ['#### 1']}}\n")
    # sys.modules["datasets"] = None makes `import datasets` fail as if it were not installed.
    without_datasets = (
        "import sys; sys.modules['datasets'] = None; from slm_mux.cli import main; "
        "sys.exit(main(sys.argv[1:]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", without_datasets, "collect", "--pool", str(pool),
         "--task", "gsm8k", "--data", "openai/gsm8k", "--store", str(tmp_path / "s.db")],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert "openai/gsm8k: no such file; to read it from the Hugging Face Hub install" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr


def test_collection_counts_tokens_and_cost_at_the_pool_prices(tmp_path: Path) -> None:
    priced = Member(ScriptedBackend("priced", {"*": ["so #### 2"]}), k=2, price=Price(1.0, 3.0))
    with Store(tmp_path / "s.db") as store:
        report = asyncio.run(
            collect([priced], get_task("gsm8k"), QUESTIONS[:3], split="test", store=store)
        )
        samples = store.samples()
    progress = report.models["priced"]
    assert progress.completion_tokens == sum(s.completion_tokens or 0 for s in samples) == 3 * 2 * 3
    assert progress.prompt_tokens == sum(s.prompt_tokens or 0 for s in samples) > 0
    expected = (progress.prompt_tokens * 1.0 + progress.completion_tokens * 3.0) / 1e6
    assert progress.cost_usd == pytest.approx(expected)


def test_collection_refuses_to_mix_generation_settings(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as store:
        _collect([_member("a", ["#### 2"])], store)
        changed = Member(ScriptedBackend("a", {"*": ["#### 2"]}), k=4, settings_hash="h-other")
        with pytest.raises(
            InputError, match="'a' has test samples drawn with other generation"
        ) as e:
            _collect([changed], store)
        assert "top_p, stop or server pins" in str(e.value)  # what the hash covers, pins too
        assert store.count() == len(QUESTIONS) * 3


def test_status_shows_samples_accuracy_and_failures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from slm_mux.cli import main

    flaky = Member(ScriptedBackend("flaky", {"1 + 1": ["#### 2"]}), k=2)
    with Store(tmp_path / "s.db") as store:
        _collect([flaky, _member("steady", ["#### 0", "nothing"])], store)
    assert main(["status", "--store", str(tmp_path / "s.db"), "--json"]) == 0
    holdings = {h["model"]: h for h in json.loads(capsys.readouterr().out)["holdings"]}
    assert holdings["flaky"] == {
        "task": "gsm8k", "split": "test", "model": "flaky", "questions": 1, "samples": 2,
        "no_answer": 0, "accuracy": 1.0, "failed": len(QUESTIONS) - 1,
    }  # fmt: skip
    steady = holdings["steady"]
    assert (steady["questions"], steady["samples"], steady["no_answer"]) == (6, 18, 6)
    assert steady["accuracy"] == pytest.approx(2 / 18)  # "#### 0" is right only for q0


class _Closing(ScriptedBackend):
    """A scripted backend that counts its loads (``warm``) and closes."""

    def __init__(self, name: str, responses: list[str]) -> None:
        super().__init__(name, {"*": responses})
        self.closed = 0

    async def aclose(self) -> None:
        self.closed += 1


def test_leaving_a_with_block_closes_what_aask_opened() -> None:
    backend = _Closing("a", ["#### 3"])
    with Mux([Member(backend, k=2)], task="gsm8k") as mux:
        found = asyncio.run(mux.aask("q"))  # aask on a loop of the caller's, not ask's
        assert backend.closed == 0
    assert found.answer == "3"
    assert backend.closed == 1


def test_an_unused_mux_closes_nothing_and_async_with_closes_once() -> None:
    backend = _Closing("a", ["#### 3"])
    with Mux([Member(backend, k=2)], task="gsm8k"):
        pass
    assert backend.closed == 0

    async def use() -> MuxAnswer:
        async with Mux([Member(backend, k=2)], task="gsm8k") as mux:
            return await mux.aask("q")

    assert asyncio.run(use()).answer == "3"
    assert backend.closed == 1


def test_a_with_block_inside_a_running_loop_schedules_the_release_on_it() -> None:
    backend = _Closing("a", ["#### 3"])

    async def use() -> None:
        with Mux([Member(backend, k=2)], task="gsm8k") as mux:
            await mux.aask("q")
        await asyncio.sleep(0)  # the scheduled release runs

    asyncio.run(use())
    assert backend.closed == 1


def test_samples_left_after_an_interruption_keep_their_own_seeds() -> None:
    from slm_mux.calls import sample_seed
    from slm_mux.engine import sample_stream

    backend = ScriptedBackend("m", {"*": ["#### 1"]})
    member = Member(backend, k=3, seed=7)
    question = QUESTIONS[0]

    async def drawn() -> list[int]:
        stream = sample_stream(member, get_task("gsm8k"), question, [0, 2, 3])
        return [number async for batch in stream for number, _ in batch]

    assert sorted(asyncio.run(drawn())) == [0, 2, 3]
    # Sample 2 is seeded as sample 2, not as the second of a request seeded by sample 0.
    assert [(r.seed, r.n) for r in backend.requests] == [
        (sample_seed(7, question.id, 0), 1),
        (sample_seed(7, question.id, 2), 2),
    ]


@pytest.mark.parametrize("question", ["", "  \n\t", Question("q", " ", "")])
def test_the_python_api_refuses_an_empty_question_before_any_request(
    question: str | Question,
) -> None:
    backend = ScriptedBackend("a", {"*": ["#### 3"]})
    with Mux([Member(backend, k=2)], task="gsm8k") as mux, pytest.raises(InputError) as refused:
        mux.ask(question)
    assert str(refused.value).startswith("the question is empty: ")
    assert backend.usage.completions == 0


def test_a_reply_that_only_repeats_the_question_states_no_answer(tmp_path: Path) -> None:
    # Gemma 3 270M base behind llama.cpp's chat template repeats the question (2026-12-05);
    # its last number, read as an answer, was unanimous and won the vote.
    asked = "Hana has 6 books. Fay has 3 more. How many books does Hana have now?"
    echo = _member("echo", [asked, f"  {asked}", asked])
    unsure = _member("unsure", ["#### 9", "#### 8", "#### 7"])
    found = _ask([echo, unsure], asked)
    assert (found.answer, found.model) == ("9", "unsure")
    assert found.votes["echo"] == {}
    question = Question("q", asked, "9")
    with Store(tmp_path / "s.db") as store:
        _collect([echo], store, [question])
        assert [s.answer for s in store.samples()] == [None, None, None]
    continued = f"{asked} Hana has 6 + 3 = 9 books."
    assert get_task("gsm8k").answer(question, continued) == "9"
    assert get_task("gsm8k").extract(asked) == "3"  # extract alone reads any text
