"""The main command, ``slm-mux demo``, on a small slice of the bundled pool."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

from slm_mux.cli import main
from slm_mux.demo import POOL_DIR, bundled_models
from slm_mux.store import Store

pytestmark = [
    pytest.mark.skipif(
        not list(POOL_DIR.glob("*/config.json")),
        reason=f"no bundled models in {POOL_DIR}; run scripts/train_tiny_pool.py",
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("transformers") is None,
        reason="the demo needs the local extra: pip install 'slm-mux[local]'",
    ),
]


def test_demo_runs_end_to_end_and_reuses_its_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--questions", "8", "--validation-questions", "8",
            "--samples", "3", "--k", "2", "--trials", "2", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert "| SLM-MUX, all" in first and "| Agent Forest, all" in first
    for name in ("report.md", "report.html", "accuracy_vs_k.png", "accuracy_vs_models.png"):
        assert (out / name).stat().st_size > 0
    report = (out / "report.md").read_text()
    shown = re.findall(r"^\| arith-test-(\S+) \| (\S+) \|", report, re.M)
    assert len(shown) == 8 and all(qid == text for qid, text in shown)  # texts from the store
    models = len(bundled_models())
    with Store(out / "store.db") as store:
        assert store.count(split="validation") == store.count(split="test") == models * 8 * 3
        stamps = {(s.model, s.question_id, s.sample): s.created_at for s in store.samples()}

    assert main(argv) == 0
    assert capsys.readouterr().out == first  # the same numbers, from the same samples
    with Store(out / "store.db") as store:
        again = {(s.model, s.question_id, s.sample): s.created_at for s in store.samples()}
    assert again == stamps


def test_demo_rejects_k_above_the_samples(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--out", str(tmp_path), "--samples", "2", "--k", "3", "--quiet"]) == 1
    assert "--k 3 is larger than --samples 2" in capsys.readouterr().err


def test_the_demo_pool_file_answers_live_questions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["demo", "--out", str(tmp_path), "--questions", "4", "--validation-questions", "4",
            "--samples", "2", "--k", "2", "--trials", "1", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    pool = tmp_path / "pool.yaml"
    assert main(["ask", "23*7+5", "--pool", str(pool), "--task", "arith", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    names = {path.name for path in bundled_models()}
    assert set(answer["votes"]) == names
    assert answer["model"] in names
    assert answer["answer"].lstrip("-").isdigit()


def test_a_smaller_or_reseeded_rerun_reports_only_its_own_questions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["demo", "--out", str(tmp_path), "--samples", "2", "--k", "2", "--trials", "1",
              "--quiet", "--validation-questions", "6"]  # fmt: skip
    assert main([*common, "--questions", "8"]) == 0
    assert "arith test split, 8 questions" in capsys.readouterr().out
    assert main([*common, "--questions", "5"]) == 0
    assert "arith test split, 5 questions" in capsys.readouterr().out
    assert main([*common, "--questions", "5", "--seed", "1"]) == 0
    assert "arith test split, 5 questions" in capsys.readouterr().out
    with Store(tmp_path / "store.db") as store:
        texts = {s.question_id for s in store.samples(split="test")}
    assert 8 < len(texts) <= 13  # seed 1 drew new questions beside the first 8


def test_a_failing_demo_model_names_the_model_question_and_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models = tmp_path / "models"
    for name in ("broken-a", "broken-b"):
        (models / name).mkdir(parents=True)
        (models / name / "config.json").write_text("{}")
    code = main(["demo", "--out", str(tmp_path / "out"), "--models-dir", str(models),
                 "--questions", "2", "--validation-questions", "2", "--samples", "2",
                 "--k", "2", "--quiet"])  # fmt: skip
    assert code == 1
    [line] = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert line.startswith("slm-mux: error: collecting validation failed: model 'broken-a', ")
    assert "question arith-validation-" in line and "cannot load" in line
