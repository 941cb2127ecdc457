"""``slm-mux import`` of inspect_ai logs (``.eval`` and ``.json``) written by the real
inspect_ai against ``slm-mux serve`` on two tiny models."""

from __future__ import annotations

from pathlib import Path

import pytest

from slm_mux.cli import main
from slm_mux.interop.inspect_log import model_name
from slm_mux.store import Store
from slm_mux.tasks import get_task

from .conftest import MODELS, QUESTIONS, REPEATS


def test_model_name_drops_the_provider() -> None:
    assert model_name("openai-api/slmmux/tiny-add") == "tiny-add"
    assert model_name("hf/Qwen/Qwen2.5-1.5B") == "Qwen/Qwen2.5-1.5B"


def test_eval_and_json_logs_import_one_sample_per_epoch(
    inspect_logs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from inspect_ai.log import read_eval_log

    db = tmp_path / "s.db"
    paths = [str(p) for p in inspect_logs.values()]
    assert main(["import", *paths, "--store", str(db), "--task", "arith"]) == 0
    with Store(db, create=False) as store:
        samples = list(store.each_sample())
    assert len(samples) == len(MODELS) * QUESTIONS * REPEATS
    arith = get_task("arith")
    for model, path in inspect_logs.items():
        log = read_eval_log(str(path))
        for logged in log.samples or []:
            (stored,) = [
                s
                for s in samples
                if s.model == model
                and s.sample == logged.epoch - 1
                and s.reference == logged.target
                and s.text == logged.output.completion
            ]
            assert stored.answer == arith.extract(logged.output.completion)
    capsys.readouterr()
    assert main(["eval", "--store", str(db), "--k", str(REPEATS), "--trials", "2"]) == 0


def test_a_folder_of_logs_imports_each(
    inspect_logs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (folder,) = {path.parent for path in inspect_logs.values()}
    db = tmp_path / "s.db"
    assert main(["import", str(folder), "--store", str(db), "--task", "arith"]) == 0
    with Store(db, create=False) as store:
        assert {h.model for h in store.summary()} == set(MODELS)


def test_a_truncated_json_log_is_named_and_nothing_imported(
    inspect_logs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    whole = inspect_logs[MODELS[1]]
    broken = tmp_path / whole.name
    text = whole.read_text(encoding="utf-8")
    broken.write_text(text[: len(text) // 2], encoding="utf-8")
    db = tmp_path / "s.db"
    capsys.readouterr()
    assert (
        main(
            [
                "import",
                str(inspect_logs[MODELS[0]]),
                str(broken),
                "--store",
                str(db),
                "--task",
                "arith",
            ]
        )
        == 1
    )
    error = capsys.readouterr().err.strip()
    assert (
        error.startswith(f"slm-mux: error: {broken}:") and "not a complete inspect_ai log" in error
    )
    assert not db.exists()


def test_a_task_without_a_grader_says_which_flag(
    inspect_logs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["import", str(inspect_logs[MODELS[0]]), "--store", str(tmp_path / "s.db")]) == 1
    assert "'arith' has no slm-mux grader of its own; give --task" in capsys.readouterr().err


def test_a_json_log_nested_too_deeply_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("inspect_ai", reason="inspect_ai is not installed (the inspect extra)")
    depth = 100_000
    deep = tmp_path / "deep.json"
    deep.write_text('{"status": "success", "samples": ' + "[" * depth + "]" * depth + "}")
    db = tmp_path / "s.db"
    capsys.readouterr()
    assert main(["import", str(deep), "--store", str(db), "--task", "arith"]) == 1
    assert capsys.readouterr().err == f"slm-mux: error: {deep}: invalid JSON (nested too deeply)\n"
    assert not db.exists()
