"""Runs of the real harnesses against ``slm-mux serve`` on the bundled tiny models.

Shared by the tests (:mod:`tests.interop.conftest`) and ``bench/harnesses.py``: serve a
pool file on loopback, write an lm-eval task over a local JSON Lines file, run lm-eval
(``local-chat-completions``) and inspect_ai (``openai-api``) against the server.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from slm_mux.demo import bundled_pool_file
from slm_mux.tasks import Question

SERVICE = "SLMMUX"
"""inspect_ai's ``openai-api/<service>/<model>``: its URL comes from ``SLMMUX_BASE_URL``."""

LM_EVAL_TASK = "arith_local"


def write_pool(path: Path, models: Sequence[str]) -> Path:
    """A pool file of the named bundled models (as ``slm-mux demo`` writes them)."""
    pool = bundled_pool_file(k=3, temperature=0.3, seed=0)
    pool["models"] = [m for m in pool["models"] if m["name"] in models]
    path.write_text(yaml.safe_dump(pool, sort_keys=False), encoding="utf-8")
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(pool: Path, task: str = "arith") -> Iterator[str]:
    """``slm-mux serve --pool POOL --task TASK`` on a free loopback port; yields ``.../v1``."""
    port = _free_port()
    command = [sys.executable, "-m", "slm_mux", "serve", "--pool", str(pool)]
    command += ["--task", task, "--port", str(port)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    errors = process.stderr.read() if process.stderr else ""
                    raise RuntimeError(f"serve did not start: {errors}") from None
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def write_questions(path: Path, questions: Sequence[Question]) -> Path:
    """A JSON Lines file of ``{"question", "answer"}``, as lm-eval and inspect read it."""
    lines = [json.dumps({"question": q.text, "answer": q.reference}) for q in questions]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_lm_eval_task(
    folder: Path,
    data: Path,
    *,
    repeats: int,
    max_tokens: int = 48,
    name: str = LM_EVAL_TASK,
    prompt: str = "{{question}}",
    fewshot: bool = False,
) -> Path:
    """An lm-eval task YAML (``name``, by default ``arith_local``) over the local file
    ``data`` (JSON Lines or a JSON array of ``{"question", "answer"}``), asking ``prompt``
    (a Jinja template of the document); with ``fewshot`` its shots come from the same file."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data)}},
        "test_split": "test",
        "output_type": "generate_until",
        "doc_to_text": prompt,
        "doc_to_target": "{{answer}}",
        "generation_kwargs": {
            "until": ["\n\n"],
            "max_gen_toks": max_tokens,
            "do_sample": True,
            "temperature": 0.3,
        },
        "repeats": repeats,
        "filter_list": [
            {
                "name": "maj",
                "filter": [
                    {"function": "regex", "regex_pattern": "#### (-?[0-9]+)"},
                    {"function": "majority_vote"},
                    {"function": "take_first"},
                ],
            }
        ],
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
        **({"fewshot_split": "test"} if fewshot else {}),
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def run_lm_eval(
    url: str,
    model: str,
    tasks: Path,
    out: Path,
    *,
    name: str = LM_EVAL_TASK,
    limit: int | None = None,
    **options: Any,
) -> dict[str, Any]:
    """lm-eval's ``local-chat-completions`` on task ``name`` of ``model`` served at ``url``
    (the first ``limit`` documents; ``options`` go to ``simple_evaluate``), samples logged
    under ``out/<model>/``; returns its results."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import lm_eval
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.tasks import TaskManager

    tracker = EvaluationTracker(output_path=str(out))
    results: dict[str, Any] = lm_eval.simple_evaluate(
        model="local-chat-completions",
        model_args={
            "model": model,
            "base_url": f"{url}/chat/completions",
            "num_concurrent": 1,
            "max_retries": 1,
            "tokenized_requests": False,
        },
        tasks=[name],
        limit=limit,
        task_manager=TaskManager(include_path=str(tasks), include_defaults=False),
        apply_chat_template=True,
        log_samples=True,
        evaluation_tracker=tracker,
        **options,
    )
    tracker.save_results_aggregated(results=results, samples=results["samples"])
    for name, samples in results["samples"].items():
        tracker.save_results_samples(task_name=name, samples=samples)
    return results


def inspect_task(data: Path, name: str = "arith") -> Any:
    """An inspect_ai task over ``data``: generate, then match the number."""
    from inspect_ai import Task
    from inspect_ai.dataset import Sample, json_dataset
    from inspect_ai.scorer import match
    from inspect_ai.solver import generate

    def record(row: dict[str, Any]) -> Sample:
        return Sample(input=row["question"], target=row["answer"])

    return Task(
        dataset=json_dataset(str(data), record),
        solver=generate(),
        scorer=match(numeric=True),
        name=name,
    )


def run_inspect(
    url: str, model: str, data: Path, out: Path, *, epochs: int, log_format: str = "eval"
) -> Any:
    """inspect_ai's ``openai-api`` provider on ``model`` served at ``url``; returns its log."""
    from inspect_ai import eval as inspect_eval

    os.environ[f"{SERVICE}_BASE_URL"] = url
    os.environ[f"{SERVICE}_API_KEY"] = "unused"
    (log,) = inspect_eval(
        inspect_task(data),
        model=f"openai-api/{SERVICE.lower()}/{model}",
        epochs=epochs,
        log_dir=str(out),
        log_format=log_format,  # type: ignore[arg-type]
        display="none",
        temperature=0.3,
        max_tokens=48,
    )
    return log
