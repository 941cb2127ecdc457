"""The live comparison runner: recorded calls, replay, the shared methods, the table."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import pytest

from slm_mux.backends.scripted import ScriptedBackend
from slm_mux.compare import compare, config_hash
from slm_mux.comparison import SHARED, Comparison, comparisons_of, method_names
from slm_mux.errors import StoreError
from slm_mux.members import Member
from slm_mux.methods import METHODS
from slm_mux.store import SCHEMA_VERSION, RecordedCall, Store
from slm_mux.tasks import Question, get_task

TASK = get_task("exact")

# Per question: reference, then each model's three answers.
SCRIPT: dict[str, tuple[str, list[str], list[str], list[str]]] = {
    # b is sure and right; the pooled vote is right; sc(b) and single(b) right.
    "Q1": ("1", ["1", "2", "2"], ["1", "1", "1"], ["3", "3", "2"]),
    # c is sure and wrong: slm-mux and the pooled vote wrong; a's majority right (oracle).
    "Q2": ("5", ["5", "5", "6"], ["7", "6", "6"], ["7", "7", "7"]),
    # a and b tie at 2/3: validation accuracy gives b ("9"), pool order a ("8").
    # The pooled vote ties 8 and 9 and takes a's "8" (earliest).
    "Q3": ("9", ["8", "8", "9"], ["9", "9", "8"], ["x", "y", "z"]),
    # Everyone wrong.
    "Q4": ("0", ["1", "1", "1"], ["2", "2", "2"], ["3", "3", "3"]),
    # b's first sample right, its majority wrong; c's majority right.
    "Q5": ("4", ["5", "5", "5"], ["4", "3", "3"], ["4", "4", "5"]),
}
QUESTIONS = [Question(qid, f"{qid}: what is it?", ref) for qid, (ref, *_) in SCRIPT.items()]
ACCURACY = {"a": 0.5, "b": 0.9, "c": 0.1}


def _members(latency_s: float = 0.0) -> list[Member]:
    members = []
    for position, name in enumerate("abc"):
        script = {
            f"{qid}:": [f"Answer: {a}" for a in answers[position + 1]]
            for qid, answers in SCRIPT.items()
        }
        members.append(Member(ScriptedBackend(name, script, latency_s=latency_s), k=3))
    return members


def _requests(members: Sequence[Member]) -> int:
    return sum(len(cast(ScriptedBackend, m.backend).requests) for m in members)


def _run(
    members: Sequence[Member],
    store: Store,
    methods: Sequence[str],
    accuracy: dict[str, float] | None = ACCURACY,
    questions: Sequence[Question] = QUESTIONS,
) -> Comparison:
    return asyncio.run(
        compare(
            members,
            TASK,
            questions,
            store=store,
            methods=methods,
            settings={},
            validation_accuracy=accuracy,
            show_progress=False,
        )
    )


SHARED_METHODS = ["slm-mux", "agent-forest", "sc", "single", "oracle"]


def test_the_shared_methods_follow_their_vote_rules_and_tie_breaks(tmp_path: Path) -> None:
    members = _members()
    with Store(tmp_path / "s.db") as store:
        result = _run(members, store, SHARED_METHODS)
    correct = {name: r.correct for name, r in result.methods.items()}
    assert correct == {"slm-mux": 2, "agent-forest": 1, "sc": 2, "single": 3, "oracle": 4}
    assert result.methods["sc"].model == result.methods["single"].model == "b"
    # One call of n=3 per model per question, shared by all five.
    assert _requests(members) == 3 * 5
    for row in result.methods.values():
        assert (row.calls, row.shared, row.questions) == (15, SHARED, 5)
        assert row.completion_tokens == 2 * 3 * 3 * 5  # "Answer: x" is two words


def test_without_validation_accuracy_ties_and_the_best_model_follow_pool_order(
    tmp_path: Path,
) -> None:
    with Store(tmp_path / "s.db") as store:
        result = _run(_members(), store, ["slm-mux", "sc", "single"], accuracy=None)
    assert result.methods["sc"].model == "a"
    # slm-mux: Q1 (b sure) only; Q3's tie now goes to a, Q4's too.
    # a's majorities are right on Q2 only, its first samples on Q1 and Q2.
    assert {n: r.correct for n, r in result.methods.items()} == {"slm-mux": 1, "sc": 1, "single": 2}


def test_a_finished_comparison_replays_without_a_request_and_prints_the_same_table(
    tmp_path: Path,
) -> None:
    members = _members()
    with Store(tmp_path / "s.db") as store:
        first = _run(members, store, method_names())
        sent = _requests(members)
        again = _run(members, store, method_names())
    assert _requests(members) == sent
    assert again.to_markdown() == first.to_markdown()
    assert again.to_json() == first.to_json()


def test_every_call_is_stored_with_its_prompt_replies_tokens_and_step(tmp_path: Path) -> None:
    members = _members()
    with Store(tmp_path / "s.db") as store:
        _run(members, store, ["slm-mux", "debate"])
        digest = config_hash("debate", METHODS["debate"].settings().to_json(), members)
        calls = store.calls("debate", digest, "exact", "test")
    assert sorted({step for _, step, _ in calls}) == ["round1", "round2"]
    call = calls[("Q2", "round2", "c")]
    assert call.replies == ["Answer: 7"]
    assert call.messages[0] == TASK.messages(QUESTIONS[1])[0]
    assert call.messages[1] == {"role": "assistant", "content": "Answer: 7"}
    assert (
        "Agent 1:" in call.messages[2]["content"] and "Agent 3:" not in call.messages[2]["content"]
    )
    assert call.requests == 1 and call.completion_tokens == 2 and call.latency_s >= 0


def test_calls_per_question_match_each_methods_formula(tmp_path: Path) -> None:
    members = _members()
    with Store(tmp_path / "s.db") as store:
        result = _run(members, store, method_names())
    for name, spec in METHODS.items():
        expected = spec.calls_per_question(3, spec.settings()) * len(QUESTIONS)
        assert result.methods[name].calls == expected, name
    assert result.methods["slm-mux"].calls == 3 * len(QUESTIONS)
    assert _requests(members) == sum(result.methods[name].calls for name in ["slm-mux", *METHODS])


def test_a_stored_call_with_another_prompt_is_a_conflict_naming_the_call(
    tmp_path: Path,
) -> None:
    members = _members()
    digest = config_hash(SHARED, {}, members)
    with Store(tmp_path / "s.db") as store:
        store.add_call(
            RecordedCall(
                SHARED,
                digest,
                "exact",
                "test",
                "Q3",
                "sample",
                "b",
                3,
                [{"role": "user", "content": "other"}],
                ["1", "2", "3"],
                None,
                None,
                0.0,
                1,
            )
        )
        with pytest.raises(
            StoreError,
            match=r"'independent', question 'Q3', step 'sample', "
            r"model 'b': the stored call had another prompt",
        ):
            _run(members, store, ["slm-mux"])


def test_a_failing_model_fails_only_its_questions_and_is_retried_next_run(
    tmp_path: Path,
) -> None:
    members = _members()
    broken = {f"{qid}:": ["Answer: 1"] for qid in ("Q1", "Q2")}  # no script for Q3..Q5
    members[2] = Member(ScriptedBackend("c", broken), k=3)
    with Store(tmp_path / "s.db") as store:
        result = _run(members, store, ["slm-mux", "debate"])
        assert result.failed
        assert result.methods["slm-mux"].failed == 3
        assert result.methods["debate"].failed == 3
        reasons = result.methods["debate"].reasons  # distinct, each once
        assert reasons and len(set(reasons)) == len(reasons)
        assert all(r.startswith("model 'c': no scripted answer for") for r in reasons)
        before = len(members[2].backend.requests)  # type: ignore[attr-defined]
        _run(members, store, ["slm-mux"])
    # Only the three failed sample calls are asked again.
    assert len(members[2].backend.requests) - before == 3  # type: ignore[attr-defined]


def test_a_phase_asks_every_question_at_once(tmp_path: Path) -> None:
    members = _members(latency_s=0.01)
    in_flight = peak = 0
    backend = members[0].backend
    original = backend.stream

    async def counting(request):  # type: ignore[no-untyped-def]
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            async for batch in original(request):
                yield batch
        finally:
            in_flight -= 1

    backend.stream = counting  # type: ignore[method-assign]
    with Store(tmp_path / "s.db") as store:
        _run(members, store, ["debate"])
    assert peak == len(QUESTIONS)


def test_results_are_kept_for_the_report_and_wall_time_only_grows_when_requests_are_sent(
    tmp_path: Path,
) -> None:
    members = _members(latency_s=0.001)
    with Store(tmp_path / "s.db") as store:
        first = _run(members, store, ["slm-mux", "moa"])
        runs = store.method_runs(task="exact")
        _run(members, store, ["slm-mux", "moa"])
        assert store.method_runs(task="exact") == runs
        (stored,) = comparisons_of(runs)
    assert stored.to_json() == first.to_json()
    assert first.methods["moa"].wall_s > 0


def test_a_version_2_store_gains_the_call_tables(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    Store(db).close()
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TABLE calls")
        conn.execute("DROP TABLE method_runs")
        conn.execute("UPDATE schema_version SET version = 2")
    conn.close()
    with Store(db) as store:
        assert store.calls("debate", "x", "exact", "test") == {}
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchone() == (SCHEMA_VERSION,)
    conn.close()
