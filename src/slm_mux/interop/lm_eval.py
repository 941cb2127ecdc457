"""lm-evaluation-harness logs: the folder ``lm-eval --output_path OUT --log_samples`` writes.

Each run writes ``results_<time>.json`` (the model, each task's config) beside one
``samples_<task>_<time>.jsonl`` per task: a line per document (one more per extra filter,
with the same generations) holding ``doc``, ``target``, ``doc_hash`` and ``resps``, the
raw generations (all ``repeats``, in order). Only ``generate_until`` tasks have
generations; a loglikelihood task is refused. Nothing of lm-eval is imported.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from slm_mux.errors import FormatError, InputError
from slm_mux.interop.common import (
    Answered,
    QuestionSets,
    Row,
    mapped_task,
    reference_of,
    sample_rows,
)
from slm_mux.jsonfile import read_json, read_json_lines
from slm_mux.store import Staging

_TEXT_KEYS = ("question", "problem", "Question", "input", "query", "prompt", "text")
"""Document fields holding the question text, tried in order (else the prompt sent)."""

QUESTION_ID_DIGITS = 16
"""Hex digits of lm-eval's ``doc_hash`` kept as the question id."""


def is_lm_eval_log(path: Path) -> bool:
    """Whether ``path`` is an lm-eval output folder (holding ``results_*.json`` at any depth)
    or one of its files: a ``samples_<task>_<time>.jsonl`` with its ``results_<time>.json``
    beside it, or a ``results_<time>.json`` with samples files of the same time."""
    if path.is_dir():
        return next(path.rglob("results_*.json"), None) is not None
    stamp = path.stem.rsplit("_", 1)[-1]
    if path.suffix == ".jsonl" and path.name.startswith("samples_"):
        return (path.parent / f"results_{stamp}.json").is_file()
    if path.suffix == ".json" and path.name.startswith("results_"):
        return next(path.parent.glob(f"samples_*_{stamp}.jsonl"), None) is not None
    return False


def _runs(path: Path) -> list[tuple[Path, list[Path]]]:
    """Each results file under ``path`` with the samples files of the same run."""
    if path.is_dir():
        results = sorted(path.rglob("results_*.json"))
    else:
        stamp = path.stem.rsplit("_", 1)[-1]
        results = [path.parent / f"results_{stamp}.json"]
    runs = []
    for result in results:
        stamp = result.stem.removeprefix("results_")
        samples = sorted(result.parent.glob(f"samples_*_{stamp}.jsonl"))
        if path.is_file() and path.name.startswith("samples_"):
            samples = [path]
        if not samples:
            raise InputError(
                f"{result}: no samples_*_{stamp}.jsonl beside it; run lm-eval with --log_samples"
            )
        runs.append((result, samples))
    return runs


def _model_name(results: Any, where: Path) -> str:
    """The model a results file names: ``model_name``, else ``model_args``' model."""
    if not isinstance(results, dict):
        raise FormatError(str(where), None, "expected an lm-eval results object")
    name = results.get("model_name")
    if isinstance(name, str) and name.strip():
        return name
    model_args = (results.get("config") or {}).get("model_args")
    if isinstance(model_args, dict):
        name = model_args.get("model") or model_args.get("pretrained")
        if isinstance(name, str) and name.strip():
            return name
    raise FormatError(str(where), None, "names no model (model_name); give --model")


def _task_of(samples: Path, stamp: str, results: dict[str, Any]) -> str:
    """The lm-eval task of a samples file, refused unless it generated text."""
    task = samples.name.removeprefix("samples_").removesuffix(f"_{stamp}.jsonl")
    config = (results.get("configs") or {}).get(task) or {}
    output_type = config.get("output_type", "generate_until")
    if output_type != "generate_until":
        raise FormatError(
            str(samples),
            None,
            f"lm-eval task {task!r} is {output_type}: it scores choices and generated no "
            "text to import (only generate_until tasks can be)",
        )
    return task


def _question_text(doc: dict[str, Any], arguments: Any) -> str:
    """The question: a known document field, else the last user message (or text) sent."""
    for key in _TEXT_KEYS:
        if isinstance(doc.get(key), str):
            return str(doc[key])
    first: dict[str, Any] = next(iter((arguments or {}).values()), {})
    prompt = first.get("arg_0", "")
    prompt = prompt[0] if isinstance(prompt, list) and prompt else prompt
    try:
        messages = json.loads(prompt)
    except (TypeError, ValueError, RecursionError):
        return str(prompt)
    users = [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    return str(users[-1]) if users else str(prompt)


def _generations(resps: Any, name: str, lineno: int) -> list[str]:
    """Every generation of a line's ``resps`` (one list per request), flattened in order."""
    if not (isinstance(resps, list) and all(isinstance(r, list) for r in resps)):
        raise FormatError(name, lineno, "'resps' must be a list of lists of generations")
    flat = [text for request in resps for text in request]
    if not flat or not all(isinstance(text, str) for text in flat):
        raise FormatError(
            name, lineno, "'resps' holds no generated text (a loglikelihood task's scores?)"
        )
    return flat


def _answered(record: Any, task: str, name: str, lineno: int) -> tuple[Any, Answered]:
    """The document id and the question of one samples line."""
    if not isinstance(record, dict):
        raise FormatError(name, lineno, "expected an lm-eval sample object")
    missing = next((k for k in ("doc", "target", "resps", "doc_hash") if k not in record), None)
    if missing is not None:
        raise FormatError(name, lineno, f"missing key {missing!r} (an lm-eval 0.4 samples line)")
    doc, doc_hash = record["doc"], record["doc_hash"]
    if not isinstance(doc, dict) or not isinstance(doc_hash, str) or not doc_hash:
        raise FormatError(name, lineno, "'doc' must be an object and 'doc_hash' a string")
    target = record["target"]
    target = target[0] if isinstance(target, list) and target else target
    answered = Answered(
        question_id=doc_hash[:QUESTION_ID_DIGITS],
        text=_question_text(doc, record.get("arguments")),
        reference=reference_of(task, str(target)),
        generations=_generations(record["resps"], name, lineno),
    )
    return record.get("doc_id", doc_hash), answered


def _samples_file(
    staging: Staging,
    samples: Path,
    *,
    model: str,
    task: str,
    split: str,
    questions: QuestionSets,
    texts: list[tuple[str, str, str, int]],
) -> Iterator[Row]:
    """The rows of one samples file; its questions go to ``texts`` as they are read."""
    name = str(samples)
    base = staging.source(name)
    seen: dict[Any, tuple[int, Answered]] = {}
    for lineno, record in read_json_lines(samples):
        doc_id, answered = _answered(record, task, name, lineno)
        if doc_id in seen:  # the same document under another filter
            first_line, first = seen[doc_id]
            if first.generations != answered.generations:
                raise FormatError(
                    name,
                    lineno,
                    f"document {doc_id!r} has other generations than on line {first_line}",
                )
            continue
        seen[doc_id] = (lineno, answered)
        questions.note(task, split, model, answered.question_id, f"{name}:{lineno}")
        texts.append((answered.question_id, answered.text, answered.reference, base + lineno))
        yield from sample_rows(model, task, split, answered, base + lineno)


def stage_lm_eval(
    staging: Staging,
    path: Path,
    *,
    task: str | None,
    split: str,
    model: str | None,
    questions: QuestionSets,
) -> int:
    """Stage every generation of an lm-eval output folder (or one of its files); returns
    the number of samples read. ``task`` overrides the mapped task, ``model`` the
    results file's model."""
    before = staging.read
    for result, samples_files in _runs(path):
        results = read_json(result)
        model_name = model or _model_name(results, result)
        stamp = result.stem.removeprefix("results_")
        for samples in samples_files:
            harness_task = _task_of(samples, stamp, results)
            graded_by = mapped_task(harness_task, task, str(samples))
            texts: list[tuple[str, str, str, int]] = []
            staging.add_samples(
                _samples_file(
                    staging,
                    samples,
                    model=model_name,
                    task=graded_by,
                    split=split,
                    questions=questions,
                    texts=texts,
                )
            )
            staging.add_questions(graded_by, split, texts)
    return staging.read - before
