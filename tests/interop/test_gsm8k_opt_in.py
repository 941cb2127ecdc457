"""Opt-in (``SLM_MUX_HARNESS_TESTS=1``): lm-eval on GSM8K from ``../shared/data/gsm8k_500.json``
against ``slm-mux serve --task gsm8k`` on two tiny models, imported under the gsm8k grader
the task's name maps to. The tiny models know only arithmetic: this checks the plumbing
(references from GSM8K targets, question texts, ids), not accuracy; and their context is
128 tokens, so they are asked only a question's first 40 characters."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from slm_mux.cli import main
from slm_mux.store import Store

from .conftest import MODELS
from .harness_runs import run_lm_eval, serving, write_lm_eval_task, write_pool

GSM8K = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "gsm8k_500.json"
LIMIT = 5

pytestmark = [
    pytest.mark.skipif(
        os.environ.get("SLM_MUX_HARNESS_TESTS") != "1",
        reason="opt-in: set SLM_MUX_HARNESS_TESTS=1 to run lm-eval on GSM8K",
    ),
    pytest.mark.skipif(not GSM8K.is_file(), reason=f"{GSM8K} is not here (../shared/data)"),
]


def test_lm_eval_gsm8k_logs_import_under_the_gsm8k_grader(tmp_path: Path) -> None:
    pytest.importorskip("lm_eval", reason="lm-eval is not installed (the lm-eval extra)")
    tasks = write_lm_eval_task(
        tmp_path / "tasks", GSM8K, repeats=2, name="gsm8k_local", prompt="{{question[:40]}}"
    ).parent
    with serving(write_pool(tmp_path / "pool.yaml", MODELS), task="gsm8k") as url:
        for model in MODELS:
            run_lm_eval(url, model, tasks, tmp_path / "out", name="gsm8k_local", limit=LIMIT)
    db = tmp_path / "s.db"
    assert main(["import", str(tmp_path / "out"), "--store", str(db)]) == 0
    docs = json.loads(GSM8K.read_text(encoding="utf-8"))[:LIMIT]
    with Store(db, create=False) as store:
        questions = list(store.questions(task="gsm8k", split="test"))
        samples = list(store.each_sample())
    assert {s.model for s in samples} == set(MODELS) and len(samples) == 2 * LIMIT * 2
    assert sorted(text for _, _, _, text, _ in questions) == sorted(d["question"] for d in docs)
    references = {d["answer"].rsplit("####", 1)[1].strip() for d in docs}
    assert {reference for *_, reference in questions} == references
