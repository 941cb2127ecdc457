"""`collect --shard I/N`: a stable, disjoint share of the questions by a hash of their ids."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from slm_mux.cli import main
from slm_mux.errors import InputError
from slm_mux.store import Store
from slm_mux.tasks import Question
from slm_mux.tasks.loading import QuestionSet, Shard, load_question_set

POOL = """defaults: {k: 2}
models:
  - {name: a, backend: scripted, script: {'*': ['#### 1', '#### 2']}}
"""


def _question_set(ids: list[str]) -> QuestionSet:
    return QuestionSet({"exact": [Question(id=i, text=f"q {i}", reference="1") for i in ids]})


@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_the_shards_cover_every_question_once_whatever_the_order(count: int) -> None:
    ids = [f"id-{n}" for n in range(300)]
    shuffled = random.Random(count).sample(ids, len(ids))
    shares = [
        [q.id for q in _question_set(ids).share(Shard(i, count)).by_task["exact"]]
        for i in range(1, count + 1)
    ]
    reordered = [
        [q.id for q in _question_set(shuffled).share(Shard(i, count)).by_task["exact"]]
        for i in range(1, count + 1)
    ]
    assert sorted(i for share in shares for i in share) == sorted(ids)
    assert [sorted(share) for share in shares] == [sorted(share) for share in reordered]
    # each share keeps the given order, and no share is far from an even split
    assert all(share == [i for i in ids if i in set(share)] for share in shares)
    assert all(abs(len(share) - 300 / count) < 40 for share in shares)


def test_a_question_keeps_its_shard_in_any_subset() -> None:
    ids = [f"id-{n}" for n in range(100)]
    whole = set(q.id for q in _question_set(ids).share(Shard(2, 3)).by_task["exact"])
    part = {q.id for q in _question_set(ids[::3]).share(Shard(2, 3)).by_task["exact"]}
    assert part == whole & set(ids[::3])


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("0/2", "I must be from 1 to N"),
        ("3/2", "I must be from 1 to N"),
        ("a/b", "expected a shard I/N"),
        ("1/0", "N must be at least 1"),
        ("1", "expected a shard I/N"),
        ("-1/2", "expected a shard I/N"),
        ("1/2/3", "expected a shard I/N"),
        ("²/3", "expected a shard I/N"),
    ],
)
def test_bad_shards_are_one_error_line_at_parse_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, reason: str
) -> None:
    with pytest.raises(InputError, match=reason):
        Shard.parse(text)
    store = tmp_path / "s.db"
    with pytest.raises(SystemExit) as exited:
        main(["collect", "--pool", "missing.yaml", "--task", "arith", "--store", str(store),
              f"--shard={text}"])  # fmt: skip
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("slm-mux: error: argument --shard:")
    assert reason in err and not store.exists()


def test_shard_is_taken_after_limit_and_named_in_the_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pool = tmp_path / "pool.yaml"
    pool.write_text(POOL)
    first = load_question_set("arith", None, split="test", limit=30)
    wanted = {q.id for q in first.share(Shard(1, 2)).by_task["arith"]}
    store = tmp_path / "s.db"
    argv = ["collect", "--pool", str(pool), "--task", "arith", "--store", str(store)]
    assert main([*argv, "--limit", "30", "--shard", "1/2", "--quiet"]) == 0
    assert f"shard 1/2: {len(wanted)} of 30 test questions" in capsys.readouterr().err
    with Store(store) as opened:
        assert {s.question_id for s in opened.samples()} == wanted
        assert len(opened.question_texts("arith", "test")) == len(wanted)
    assert 0 < len(wanted) < 30


def test_run_collects_its_shard_of_both_splits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pool = tmp_path / "pool.yaml"
    pool.write_text(POOL)
    store = tmp_path / "s.db"
    argv = ["run", "--pool", str(pool), "--task", "arith", "--store", str(store), "--limit", "20"]
    assert main([*argv, "--shard", "2/3", "--quiet", "--json"]) == 0
    err = capsys.readouterr().err
    assert "shard 2/3: " in err and " of 20 validation questions" in err
    with Store(store) as opened:
        for split in ("validation", "test"):
            questions = load_question_set("arith", None, split=split, limit=20)
            wanted = {q.id for q in questions.share(Shard(2, 3)).by_task["arith"]}
            assert {s.question_id for s in opened.samples(split=split)} == wanted
