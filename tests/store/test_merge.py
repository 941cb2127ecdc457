"""`slm-mux import OTHER.db --store DB`: merged shards equal one whole collection, exactly."""

from __future__ import annotations

import hashlib
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from slm_mux.cli import main
from slm_mux.sample import Sample
from slm_mux.store import SCHEMA_VERSION, RecordedCall, Store, is_store_file
from slm_mux.testing.fake_server import FakeServerConfig, run_fake_server

QUESTIONS = 24


def _scripted_pool(path: Path, temperature: float = 0.3) -> Path:
    a = "{'*': ['#### 1', '#### 2 words', '#### 1']}"
    b = "{'1': ['#### 3'], '*': ['no answer', '#### 5']}"
    path.write_text(
        f"defaults: {{k: 3, temperature: {temperature}}}\n"
        "models:\n"
        f"  - {{name: a, backend: scripted, script: {a}}}\n"
        f"  - {{name: b, backend: scripted, script: {b}}}\n"
    )
    return path


def _collect(pool: Path, store: Path, *flags: str) -> int:
    common = ["--task", "arith", "--limit", str(QUESTIONS), "--quiet"]
    return main(["collect", "--pool", str(pool), "--store", str(store), *common, *flags])


def _rows(path: Path) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """Every sample column but the wall-clock ones, and the questions table, in key order."""
    with sqlite3.connect(path) as conn:
        samples = conn.execute(
            "SELECT model, task, split, question_id, sample, answer, reference, correct, text, "
            "prompt_tokens, completion_tokens, finish_reason, settings_hash FROM samples "
            "ORDER BY model, task, split, question_id, sample"
        ).fetchall()
        questions = conn.execute(
            "SELECT * FROM questions ORDER BY task, split, question_id"
        ).fetchall()
    return samples, questions


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _sharded(pool: Path, folder: Path, count: int) -> list[Path]:
    shards = [folder / f"shard{i}.db" for i in range(1, count + 1)]
    for i, shard in enumerate(shards, start=1):
        assert _collect(pool, shard, "--shard", f"{i}/{count}") == 0
    return shards


@pytest.mark.parametrize("count", [2, 3])
def test_merged_shards_equal_the_whole_collection(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], count: int
) -> None:
    pool = _scripted_pool(tmp_path / "pool.yaml")
    whole = tmp_path / "whole.db"
    assert _collect(pool, whole) == 0
    shards = _sharded(pool, tmp_path, count)
    merged = tmp_path / "new" / "folder" / "merged.db"  # a new store path
    capsys.readouterr()
    assert main(["import", *map(str, shards), "--store", str(merged)]) == 0
    err = capsys.readouterr().err
    assert f"{QUESTIONS * 2 * 3} samples read, {QUESTIONS * 2 * 3} new" in err
    assert _rows(merged) == _rows(whole)
    assert len(_rows(whole)[0]) == QUESTIONS * 2 * 3 and len(_rows(whole)[1]) == QUESTIONS
    # the merged store passes collect's settings check and needs nothing more
    assert _collect(pool, merged) == 0
    assert "0 new samples, 72 already stored" in capsys.readouterr().err
    assert _rows(merged) == _rows(whole)


def test_merged_shards_of_a_loopback_openai_model_equal_the_whole(tmp_path: Path) -> None:
    def answer(model: str, prompt: str, seed: int | None, index: int) -> str:
        return f"I think #### {(len(prompt) + index) % 5}"

    with run_fake_server(FakeServerConfig(answers={"*": answer})) as (base_url, server):
        pool = tmp_path / "pool.yaml"
        pool.write_text(
            "defaults: {k: 2, seed: 7}\nmodels:\n"
            f"  - {{name: m, backend: openai, base_url: '{base_url}', model: m}}\n"
        )
        whole = tmp_path / "whole.db"
        assert _collect(pool, whole) == 0
        shards = _sharded(pool, tmp_path, 2)
        assert server.answered == 2 * QUESTIONS * 2
    merged = tmp_path / "merged.db"
    assert main(["import", *map(str, shards), "--store", str(merged)]) == 0
    assert _rows(merged) == _rows(whole)
    assert _rows(whole)[0][0][9] is not None  # tokens were compared, not two NULLs


def test_a_merge_twice_changes_nothing_and_leaves_the_source_as_it_was(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pool = _scripted_pool(tmp_path / "pool.yaml")
    (shard,) = _sharded(pool, tmp_path, 1)
    folder = tmp_path / "ro"
    folder.mkdir()
    source = folder / "shard.db"
    shard.rename(source)
    source.chmod(stat.S_IRUSR)
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    before = _digest(source)
    try:
        target = tmp_path / "t.db"
        for new in (144, 0):
            capsys.readouterr()
            assert main(["import", str(source), "--store", str(target)]) == 0
            assert f"144 samples read, {new} new" in capsys.readouterr().err
        assert _digest(source) == before
        # a read-only reader may leave SQLite's shared-memory index, but writes no log
        wal = folder / "shard.db-wal"
        assert not wal.exists() or wal.stat().st_size == 0
        with sqlite3.connect(target) as conn:
            changes = conn.execute("SELECT COUNT(*) FROM samples").fetchone()
        assert changes == (144,)
    finally:
        folder.chmod(stat.S_IRWXU)


def _sample(question_id: str, answer: str | None, reference: str = "1") -> Sample:
    return Sample("m", "exact", question_id, "test", 0, answer, reference)


def _single(path: Path, answer: str | None, reference: str = "1", question_id: str = "q1") -> Path:
    with Store(path) as store:
        store.add([_sample(question_id, answer, reference)])
        store.add_questions("exact", "test", [(question_id, "what?", reference)])
    return path


def _counts(path: Path) -> list[object]:
    """Every row of the samples, questions and failures tables."""
    with sqlite3.connect(path) as conn:
        return [
            conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2, 3, 4").fetchall()
            for table in ("samples", "questions", "failures")
        ]


def test_a_conflicting_answer_writes_nothing_and_replace_overwrites(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = _single(tmp_path / "t.db", "1")
    with Store(target) as store:
        store.add([_sample("q2", "5", "5")])
    source = _single(tmp_path / "other.db", "2")
    with Store(source) as store:
        store.add([_sample("q3", "7", "7")])
        store.record_failure("m", "exact", "q9", "test", "boom")
    before = _counts(target)
    capsys.readouterr()
    assert main(["import", str(source), "--store", str(target)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{source}: sample 0 of 'm' on question 'q1' (exact, test)" in err
    assert "stored with answer '1', this file says '2'; nothing imported" in err
    assert _counts(target) == before
    assert main(["import", str(source), "--store", str(target), "--replace"]) == 0
    assert "2 samples read, 1 new, 1 replaced; merged 1 failed questions\n" in (
        capsys.readouterr().err
    )
    with Store(target) as store:
        assert [(s.question_id, s.answer) for s in store.samples()] == [
            ("q1", "2"),
            ("q2", "5"),
            ("q3", "7"),
        ]
        assert [f.question_id for f in store.failures()] == ["q9"]


def test_two_references_for_one_question_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = _single(tmp_path / "t.db", "1", reference="1")
    source = _single(tmp_path / "other.db", "1", reference="2")
    before = _counts(target)
    assert main(["import", str(source), "--store", str(target), "--replace"]) == 1
    err = capsys.readouterr().err
    assert f"{source}: question 'q1' (exact, test) has reference '2', but {target} holds" in err
    assert _counts(target) == before
    # also between two sources of one import, into a new store
    fresh = tmp_path / "fresh.db"
    assert main(["import", str(target), str(source), "--store", str(fresh)]) == 1
    assert "a question id names one question" in capsys.readouterr().err
    assert not fresh.exists()


def test_shards_drawn_with_other_settings_are_refused_naming_the_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hot = _scripted_pool(tmp_path / "hot.yaml", temperature=0.9)
    cold = _scripted_pool(tmp_path / "cold.yaml")
    one, two = tmp_path / "one.db", tmp_path / "two.db"
    assert _collect(cold, one, "--shard", "1/2") == 0
    assert _collect(hot, two, "--shard", "2/2") == 0
    before = _counts(one)
    capsys.readouterr()
    assert main(["import", str(two), "--store", str(one)]) == 1
    err = capsys.readouterr().err
    assert f"{two}: model 'a' has test samples (arith) drawn with other generation settings" in err
    assert f"than {one} holds; nothing imported" in err
    assert _counts(one) == before
    merged = tmp_path / "merged.db"
    assert main(["import", str(one), str(two), "--store", str(merged)]) == 1
    assert "model 'a' has test samples (arith) drawn with other generation settings" in (
        capsys.readouterr().err
    )
    assert not merged.exists()


def test_failures_are_carried_once_unless_the_store_collected_the_question(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "shard.db"
    with Store(source) as store:
        store.add([_sample("q1", "1")])
        store.record_failure("m", "exact", "q1", "test", "got 1 of 3 samples")
        store.record_failure("m", "exact", "q2", "test", "timeout")
    target = _single(tmp_path / "t.db", "9", reference="2", question_id="q2")
    capsys.readouterr()
    assert main(["import", str(source), "--store", str(target)]) == 0
    assert "1 samples read, 1 new; merged 1 failed questions\n" in capsys.readouterr().err
    assert main(["import", str(source), "--store", str(target)]) == 0
    assert "1 samples read, 0 new\n" in capsys.readouterr().err
    with Store(target) as store:
        (failure,) = store.failures()
    assert (failure.question_id, failure.error, failure.attempts) == ("q1", "got 1 of 3 samples", 1)


def _call(question_id: str, reply: str = "#### 1") -> RecordedCall:
    return RecordedCall(
        "debate", "cfg", "exact", "test", question_id, "round1", "m", 1,
        [{"role": "user", "content": "?"}], [reply], 3, 4, 0.1, 1,
    )  # fmt: skip


def _compare_store(path: Path, question_id: str, reply: str, result: int) -> Path:
    _single(path, "1")
    with Store(path) as store:
        store.add_call(_call(question_id, reply))
        key = ("debate", "cfg", "exact", "test", f"set-{question_id}")
        store.add_method_wall(key, 1.5)
        store.save_method_result(key, {"accuracy": result})
    return path


def _records(path: Path) -> list[list[tuple[object, ...]]]:
    with sqlite3.connect(path) as conn:
        return [
            conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2, 3, 4, 5").fetchall()
            for table in ("calls", "method_runs")
        ]


def test_compare_records_merge_with_the_same_conflict_rules_as_samples(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one = _compare_store(tmp_path / "one.db", "q1", "#### 1", 1)
    two = _compare_store(tmp_path / "two.db", "q2", "#### 2", 0)
    merged = tmp_path / "merged.db"
    capsys.readouterr()
    for added in ("merged 2 compare calls, 2 method runs", "0 new\n"):
        assert main(["import", str(one), str(two), "--store", str(merged)]) == 0
        assert added in capsys.readouterr().err
    calls, runs = _records(merged)
    assert calls == _records(one)[0] + _records(two)[0]
    assert runs == _records(one)[1] + _records(two)[1]
    # another reply under a stored key: nothing written, the key named; --replace overwrites
    other = _compare_store(tmp_path / "other.db", "q1", "#### 9", 1)
    before = _records(merged)
    assert main(["import", str(other), "--store", str(merged)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert (
        f"{other}: compare call (method 'debate', config_hash 'cfg', task 'exact', split 'test', "
        "question_id 'q1', step 'round1', model 'm') is stored with other n or messages or "
        "replies; nothing imported (--replace overwrites)"
    ) in err
    assert _records(merged) == before
    assert main(["import", str(other), "--store", str(merged), "--replace"]) == 0
    assert "merged 1 compare calls" in capsys.readouterr().err
    with Store(merged) as store:
        replies = store.calls("debate", "cfg", "exact", "test")[("q1", "round1", "m")].replies
    assert replies == ["#### 9"]
    # two sources of one import that disagree: refused before the store is made
    fresh = tmp_path / "fresh.db"
    assert main(["import", str(one), str(other), "--store", str(fresh)]) == 1
    assert f"{other}: compare call (method 'debate'" in capsys.readouterr().err
    assert not fresh.exists()


def test_a_method_run_with_another_result_is_a_conflict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one = _compare_store(tmp_path / "one.db", "q1", "#### 1", 1)
    two = _compare_store(tmp_path / "two.db", "q1", "#### 1", 0)
    assert main(["import", str(two), "--store", str(one)]) == 1
    assert (
        "method run (method 'debate', config_hash 'cfg', task 'exact', split 'test', "
        "questions_hash 'set-q1') is stored with other result"
    ) in capsys.readouterr().err


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    yield _single(tmp_path / "source.db", "1"), tmp_path / "target.db"


def test_a_store_of_another_schema_version_is_one_clear_error(
    stores: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = stores
    with sqlite3.connect(source) as conn:
        conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    assert main(["import", str(source), "--store", str(target)]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"slm-mux: error: {source}: store schema version {SCHEMA_VERSION + 1}, "
        f"this slm-mux reads version {SCHEMA_VERSION}\n"
    )
    assert not target.exists()


def test_a_store_of_an_older_schema_version_is_read_from_an_upgraded_copy(
    stores: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = stores
    with sqlite3.connect(source) as conn:  # back to the first layout, with a stale verdict
        names = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        for (name,) in names:
            if name not in ("samples", "questions", "failures", "schema_version"):
                conn.execute(f"DROP TABLE {name}")
        conn.execute("UPDATE schema_version SET version = 1")
        conn.execute("UPDATE samples SET correct = 0")
    before = _digest(source)
    assert main(["import", str(source), "--store", str(target)]) == 0
    assert "1 samples read, 1 new" in capsys.readouterr().err
    assert _digest(source) == before
    with Store(target) as store:
        assert [(s.answer, s.correct) for s in store.samples()] == [("1", True)]


def test_an_sqlite_file_that_is_no_store_and_misplaced_flags_are_refused(
    stores: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = stores
    other = source.parent / "other.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    assert is_store_file(other) and is_store_file(source)
    assert not is_store_file(source.parent / "missing.db")
    assert main(["import", str(other), "--store", str(target)]) == 1
    assert "not a sample store (no schema_version table)" in capsys.readouterr().err
    assert main(["import", str(source), "--store", str(target), "--split", "test"]) == 1
    assert "a store is merged whole; --split and --model do not apply" in (capsys.readouterr().err)
    assert not target.exists()
