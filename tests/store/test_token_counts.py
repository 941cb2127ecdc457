"""One rule for token counts (slm_mux.tokens): a server's impossible count is unknown, the
store keeps and gives back only counts, an import refuses a file that gives another, and so
export then import always round-trips."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from slm_mux.backends.openai.wire import parse_completions
from slm_mux.cli import main
from slm_mux.sample import Sample
from slm_mux.store import RecordedCall, Store

IMPOSSIBLE = [-25, -1, 2**63, 10**30, 1.5, "12", True]


def reply(prompt: object, completion: object) -> bytes:
    body = {
        "choices": [{"message": {"content": "Answer: 1"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion},
    }
    return json.dumps(body).encode()


@pytest.mark.parametrize("count", IMPOSSIBLE)
def test_a_server_reporting_an_impossible_count_reads_as_unknown(count: object) -> None:
    (got,) = parse_completions(reply(count, count), 0.1)
    assert (got.prompt_tokens, got.completion_tokens) == (None, None)
    (got,) = parse_completions(reply(0, 2**63 - 1), 0.1)
    assert (got.prompt_tokens, got.completion_tokens) == (0, 2**63 - 1)


def sample(tokens: int | None) -> Sample:
    return Sample(
        model="m",
        task="exact",
        question_id="q1",
        split="test",
        sample=0,
        answer="1",
        reference="1",
        prompt_tokens=tokens,
        completion_tokens=tokens,
    )


@pytest.mark.parametrize("count", [-25, 2**63, 10**30])
def test_the_store_keeps_an_impossible_count_as_unknown(tmp_path: Path, count: int) -> None:
    with Store(tmp_path / "s.db") as store:
        assert store.add([sample(count)]) == 1
        (kept,) = store.samples()
    assert (kept.prompt_tokens, kept.completion_tokens) == (None, None)


def test_a_recorded_call_keeps_an_impossible_count_as_unknown(tmp_path: Path) -> None:
    call = RecordedCall(
        method="m",
        config_hash="h",
        task="exact",
        split="test",
        question_id="q1",
        step="sample",
        model="a",
        n=1,
        messages=[{"role": "user", "content": "hi"}],
        replies=["1"],
        prompt_tokens=-3,
        completion_tokens=-25,
        latency_s=0.1,
        requests=1,
    )
    with Store(tmp_path / "s.db") as store:
        store.add_call(call)
        (kept,) = store.calls("m", "h", "exact", "test").values()
    assert (kept.prompt_tokens, kept.completion_tokens) == (None, None)


def test_a_store_holding_negative_counts_exports_a_file_import_takes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A store written before the rule (raw rows with -25) round-trips all the same."""
    old = tmp_path / "old.db"
    with Store(old) as store:
        store.add([sample(7)])
    with sqlite3.connect(old) as conn:
        conn.execute("UPDATE samples SET prompt_tokens = -3, completion_tokens = -25")
    capsys.readouterr()
    assert main(["export", "--store", str(old)]) == 0
    exported = tmp_path / "exported.jsonl"
    exported.write_text(capsys.readouterr().out)
    assert "completion_tokens" not in json.loads(exported.read_text())  # unknown
    assert main(["import", str(exported), "--store", str(tmp_path / "new.db")]) == 0


def test_an_import_refuses_a_negative_count_naming_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    row = json.loads(json.dumps(sample(None).__dict__))
    row = {key: value for key, value in row.items() if value is not None}
    row["completion_tokens"] = -25
    data = tmp_path / "bad.jsonl"
    data.write_text(json.dumps(row) + "\n")
    assert main(["import", str(data), "--store", str(tmp_path / "s.db")]) == 1
    assert capsys.readouterr().err == (
        f"slm-mux: error: {data}:1: 'completion_tokens' must be an integer from 0 to "
        "2**63-1 or null, got -25\n"
    )
