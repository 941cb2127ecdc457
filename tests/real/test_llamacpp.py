"""llama.cpp's OpenAI-compatible server as an upstream (opt-in, marker ``real``).

What ``llama_cpp.server`` (llama-cpp-python 0.3) does with the sampling fields, as
found here: it answers ``n > 1`` with one choice, honours ``seed`` (the same seed
gives the same text), ``max_tokens`` and ``stop``, and takes the pins that turn its own
samplers off. So the openai backend learns after two
short replies that the endpoint does not honour ``n`` and sends one request per
sample, sample ``i`` seeded ``base + i``.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from slm_mux.calls import sample_seed
from slm_mux.tasks import get_task
from slm_mux.tasks.arith import generate_questions

pytestmark = pytest.mark.real
SAMPLES = 3
QUESTIONS = 5


def chat(base_url: str, **fields: object) -> dict[str, object]:
    """One chat completion from the server, as JSON."""
    body = {"model": "smollm2-135m", "temperature": 0.8, "max_tokens": 24}
    body |= {"messages": [{"role": "user", "content": "What is 12+7?"}], **fields}
    request = urllib.request.Request(
        f"{base_url}/chat/completions",
        json.dumps(body).encode(),
        {"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as reply:
        result: dict[str, object] = json.load(reply)
        return result


def texts(reply: dict[str, object]) -> list[str]:
    choices = reply["choices"]
    assert isinstance(choices, list)
    return [choice["message"]["content"] for choice in choices]


def test_the_server_ignores_n_and_honours_seed_and_max_tokens(llamacpp_smollm2: str) -> None:
    assert len(texts(chat(llamacpp_smollm2, n=3, seed=1))) == 1  # n is ignored, not refused
    assert texts(chat(llamacpp_smollm2, seed=1)) == texts(chat(llamacpp_smollm2, seed=1))
    short = chat(llamacpp_smollm2, seed=1, max_tokens=5)
    assert short["usage"]["completion_tokens"] == 5  # type: ignore[index]
    assert short["choices"][0]["finish_reason"] == "length"  # type: ignore[index]


def test_the_server_honours_stop_and_takes_the_pins_that_turn_its_samplers_off(
    llamacpp_smollm2: str,
) -> None:
    pins = {"top_p": 1, "top_k": 0, "min_p": 0, "repeat_penalty": 1}  # fetch_real_pool's
    counting = [{"role": "user", "content": "Count from 1 to 20, separated by commas."}]
    reply = chat(llamacpp_smollm2, messages=counting, seed=1, stop=[","], **pins)
    (text,) = texts(reply)
    assert "," not in text and text.strip()
    assert reply["choices"][0]["finish_reason"] == "stop"  # type: ignore[index]
    pinned = chat(llamacpp_smollm2, seed=1, **pins)
    assert texts(pinned) == texts(chat(llamacpp_smollm2, seed=1, **pins))


def write_pool(path: Path, base_url: str) -> Path:
    path.write_text(
        "defaults: {temperature: 0.8, k: 3, max_tokens: 24, seed: 0}\n"
        "models:\n"
        f"  - {{name: smollm2-135m, backend: openai, base_url: {base_url}, "
        "model: smollm2-135m, max_concurrency: 2}\n"
    )
    return path


def collect_command(pool: Path, store: Path) -> list[str]:
    return [
        *(sys.executable, "-m", "slm_mux", "collect", "--pool", str(pool), "--task", "arith"),
        *("--store", str(store), "--limit", str(QUESTIONS), "--samples", str(SAMPLES), "--quiet"),
    ]


def rows(store: Path) -> list[tuple[str, int, str]]:
    """Every stored sample's (question, sample number, text), in key order."""
    with sqlite3.connect(store) as db:
        found = db.execute(
            "SELECT question_id, sample, text FROM samples ORDER BY question_id, sample"
        ).fetchall()
    return [(question, number, text) for question, number, text in found]


def stored_count(store: Path) -> int:
    if not store.exists():
        return 0
    try:
        with sqlite3.connect(store, timeout=1) as db:
            count: int = db.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
            return count
    except sqlite3.OperationalError:  # not created yet
        return 0


def test_collect_through_llamacpp_stores_each_sample_once_with_its_own_seed(
    llamacpp_smollm2: str, tmp_path: Path
) -> None:
    pool = write_pool(tmp_path / "pool.yaml", llamacpp_smollm2)
    store = tmp_path / "llama.db"
    subprocess.run(collect_command(pool, store), check=True, capture_output=True)
    stored = rows(store)
    assert len(stored) == QUESTIONS * SAMPLES
    assert len({(question, number) for question, number, _ in stored}) == len(stored)
    cache = json.loads((Path(os.environ["XDG_CACHE_HOME"]) / "slm-mux/endpoints.json").read_text())
    assert cache[f"{llamacpp_smollm2} smollm2-135m"]["supports_n"] is False  # two short replies
    # Sample i of a question was drawn with seed base + i: asking for that seed again
    # (the server is deterministic per seed) gives the stored text.
    task, question = get_task("arith"), generate_questions("test", 1)[0]
    for number in range(SAMPLES):
        seed = sample_seed(0, question.id, number)
        again = texts(chat(llamacpp_smollm2, messages=task.messages(question), seed=seed))
        assert (question.id, number, again[0]) in stored


def test_a_collect_killed_with_sigkill_resumes_to_the_uninterrupted_store(
    llamacpp_smollm2: str, tmp_path: Path
) -> None:
    pool = write_pool(tmp_path / "pool.yaml", llamacpp_smollm2)
    whole, killed = tmp_path / "whole.db", tmp_path / "killed.db"
    subprocess.run(collect_command(pool, whole), check=True, capture_output=True)
    process = subprocess.Popen(collect_command(pool, killed), stderr=subprocess.DEVNULL)
    while stored_count(killed) < 2 and process.poll() is None:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    interrupted = stored_count(killed)
    assert 0 < interrupted < QUESTIONS * SAMPLES  # killed mid-run
    subprocess.run(collect_command(pool, killed), check=True, capture_output=True)
    resumed, expected = rows(killed), rows(whole)
    assert len(resumed) == len(expected) == QUESTIONS * SAMPLES
    assert [row[:2] for row in resumed] == [
        row[:2] for row in expected
    ]  # no duplicate, none missing
