"""``slm-mux import`` of lm-eval ``--log_samples`` folders written by the real lm-eval
against ``slm-mux serve`` on two tiny models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from slm_mux.cli import main
from slm_mux.store import Store
from slm_mux.tasks import get_task

from .conftest import MODELS, QUESTIONS, REPEATS


def _samples_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("samples_*.jsonl"))


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_two_models_import_into_one_store_that_eval_reads(
    lm_eval_runs: dict[str, Any],
    harness_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    db = tmp_path / "s.db"
    assert (
        main(["import", str(harness_dir / "lm-eval"), "--store", str(db), "--task", "arith"]) == 0
    )
    arith = get_task("arith")
    with Store(db, create=False) as store:
        samples = list(store.each_sample())
    assert {s.model for s in samples} == set(MODELS)
    assert len(samples) == len(MODELS) * QUESTIONS * REPEATS
    for path in _samples_files(harness_dir / "lm-eval"):
        model = path.parent.name
        for line in _lines(path):
            stored = [
                s
                for s in samples
                if s.model == model and line["doc_hash"].startswith(s.question_id)
            ]
            assert [s.text for s in sorted(stored, key=lambda s: s.sample)] == line["resps"][0]
            assert all(s.answer == arith.extract(s.text or "") for s in stored)
            assert {s.reference for s in stored} == {line["target"]}
    # The same document has the same id in both models' logs, so the models line up.
    ids = {m: {s.question_id for s in samples if s.model == m} for m in MODELS}
    assert ids[MODELS[0]] == ids[MODELS[1]] and len(ids[MODELS[0]]) == QUESTIONS
    capsys.readouterr()
    assert main(["eval", "--store", str(db), "--k", str(REPEATS), "--trials", "2"]) == 0
    assert "slm-mux" in capsys.readouterr().out.lower()


def test_model_override_and_mapped_task_refusal(
    lm_eval_runs: dict[str, Any],
    harness_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    one = _samples_files(harness_dir / "lm-eval")[0]
    db = tmp_path / "s.db"
    assert main(["import", str(one), "--store", str(db), "--task", "arith", "--model", "mine"]) == 0
    with Store(db, create=False) as store:
        assert {h.model for h in store.summary()} == {"mine"}
    capsys.readouterr()
    assert main(["import", str(one), "--store", str(tmp_path / "t.db")]) == 1
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "'arith_local' has no slm-mux grader" in error
    assert "--task" in error


def _copy(harness_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(harness_dir / "lm-eval", tmp_path / "logs"))


def _refused(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    db = tmp_path / "s.db"
    capsys.readouterr()
    assert main(["import", str(folder), "--store", str(db), "--task", "arith"]) == 1
    assert not db.exists()  # nothing half-imported
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0
    return error


def test_a_truncated_line_is_named(
    lm_eval_runs: dict[str, Any],
    harness_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    logs = _copy(harness_dir, tmp_path)
    last = _samples_files(logs)[-1]
    text = last.read_text(encoding="utf-8")
    last.write_text(text[: len(text) - 40], encoding="utf-8")
    assert f"{last}:{QUESTIONS}:" in _refused(logs, tmp_path, capsys)


def test_models_that_answered_other_questions_are_refused(
    lm_eval_runs: dict[str, Any],
    harness_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    logs = _copy(harness_dir, tmp_path)
    first, second = _samples_files(logs)
    lines = second.read_text(encoding="utf-8").splitlines()
    second.write_text("\n".join(lines[:-1]) + "\n", encoding="utf-8")
    error = _refused(logs, tmp_path, capsys)
    assert error.startswith(f"slm-mux: error: {first}:{QUESTIONS}: ")
    assert "different questions" in error


def test_a_loglikelihood_task_is_refused(
    lm_eval_runs: dict[str, Any],
    harness_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    logs = _copy(harness_dir, tmp_path)
    results = sorted(logs.rglob("results_*.json"))[0]
    data = json.loads(results.read_text(encoding="utf-8"))
    data["configs"]["arith_local"]["output_type"] = "multiple_choice"
    results.write_text(json.dumps(data), encoding="utf-8")
    error = _refused(logs, tmp_path, capsys)
    assert "is multiple_choice" in error and "samples_arith_local_" in error


def test_a_prompt_nested_too_deeply_is_kept_as_text(
    lm_eval_runs: dict[str, Any],
    harness_dir: Path,
    tmp_path: Path,
) -> None:
    logs = _copy(harness_dir, tmp_path)
    deep = "[" * 100_000
    for samples in _samples_files(logs):
        lines = _lines(samples)
        for line in lines[:1]:
            line["doc"] = {}  # the question text then comes from the prompt sent
            line["arguments"] = {"gen_args_0": {"arg_0": deep}}
        samples.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    db = tmp_path / "s.db"
    assert main(["import", str(logs), "--store", str(db), "--task", "arith"]) == 0
    with Store(db, create=False) as store:
        assert deep in {text for _, _, _, text, _ in store.questions()}
