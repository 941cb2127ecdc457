"""In-process throughput: ``slm-mux collect`` on one bundled model vs plain ``generate``.

One bundled tiny model (default ``tiny-mul``), 200 arith test questions x k = 5,
temperature 0.3, max_tokens 48, in one run:

* plain Hugging Face ``generate``, one question (``num_return_sequences=5``) per call;
* plain ``generate``, all questions in one padded call (the reference ceiling);
* ``slm-mux collect`` into a fresh SQLite store through the transformers backend
  (micro-batching, per-row seeded sampling, grading and storing included);

then, unless ``--no-demo``, the wall time of a first ``slm-mux demo`` run in a
fresh folder (a subprocess: imports and model loads included). Every model is
loaded and warmed up before its timing; all paths run with the same torch
thread count (``--threads``, default 1, as the demo's pool sets it). Prints a
Markdown table on stdout.

    python bench/bench_inprocess.py [--questions 200] [--k 5] [--device cpu] [--threads 1]
                                    [--no-demo]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import transformers

from slm_mux.backends.base import GenerationRequest
from slm_mux.backends.transformers_local import TransformersBackend, pick_device
from slm_mux.collect import collect
from slm_mux.demo import POOL_DIR
from slm_mux.members import Member, close_members
from slm_mux.store import Store
from slm_mux.tasks import Question, get_task
from slm_mux.tasks.arith import generate_questions

TEMPERATURE = 0.3
MAX_TOKENS = 48


def plain_model(path: Path, device: str) -> tuple[Any, Any]:
    """The model and tokenizer as a plain Hugging Face user would load them."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model: Any = transformers.AutoModelForCausalLM.from_pretrained(path)
    return model.to(device).eval(), tokenizer


def plain_generate(
    model: Any, tokenizer: Any, prompts: list[str], k: int, device: str
) -> tuple[float, int]:
    """Seconds and samples for one padded ``generate`` over ``prompts``, ``k`` samples each."""
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    started = time.perf_counter()
    with torch.inference_mode():
        output = model.generate(
            **batch.to(device),
            do_sample=True,
            temperature=TEMPERATURE,
            max_new_tokens=MAX_TOKENS,
            num_return_sequences=k,
            pad_token_id=tokenizer.pad_token_id,
        )
    return time.perf_counter() - started, int(output.shape[0])


def plain_loop(
    model: Any, tokenizer: Any, prompts: list[str], k: int, device: str
) -> tuple[float, int]:
    """Seconds and samples for ``generate`` called once per question."""
    seconds, samples = 0.0, 0
    for prompt in prompts:
        spent, made = plain_generate(model, tokenizer, [prompt], k, device)
        seconds += spent
        samples += made
    return seconds, samples


async def collect_run(path: Path, questions: list[Question], k: int, device: str) -> float:
    """Wall seconds of ``collect`` (one model, fresh store), after one warm-up request."""
    task = get_task("arith")
    backend = TransformersBackend(path.name, str(path), device=device)
    warm_up = GenerationRequest(task.messages(questions[0]), n=1, temperature=0.0, max_tokens=4)
    await backend.generate(warm_up)
    member = Member(backend, k=k, temperature=TEMPERATURE, max_tokens=MAX_TOKENS, seed=0)
    with tempfile.TemporaryDirectory() as folder, Store(Path(folder) / "s.db") as store:
        started = time.perf_counter()
        report = await collect([member], task, questions, split="test", store=store)
        seconds = time.perf_counter() - started
        assert report.complete and store.count() == len(questions) * k
    print(f"collect: {backend.batch_stats}", file=sys.stderr)
    await close_members([member])
    return seconds


def demo_seconds() -> float:
    """Wall seconds of a first ``slm-mux demo`` in a fresh folder."""
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "slm_mux", "demo", "--out", folder, "--quiet"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-mul", help="a bundled model's name")
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads for every path (0: default)"
    )
    parser.add_argument("--no-demo", action="store_true", help="skip the demo timing")
    args = parser.parse_args()
    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    path = POOL_DIR / args.model
    questions = generate_questions("test", args.questions, seed=0)
    task = get_task("arith")
    transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    model, tokenizer = plain_model(path, device)
    prompts = [
        tokenizer.apply_chat_template(task.messages(q), add_generation_prompt=True, tokenize=False)
        for q in questions
    ]
    plain_generate(model, tokenizer, prompts[:2], args.k, device)  # warm-up
    print(f"plain loop ({device}) ...", file=sys.stderr)
    loop_s, loop_n = plain_loop(model, tokenizer, prompts, args.k, device)
    print("plain, one call ...", file=sys.stderr)
    batch_s, batch_n = plain_generate(model, tokenizer, prompts, args.k, device)
    print("collect ...", file=sys.stderr)
    collect_s = asyncio.run(collect_run(path, questions, args.k, device))
    samples = args.questions * args.k
    loop_rate = loop_n / loop_s
    rows = [
        ("plain `generate`, one question per call", loop_s, loop_n / loop_s),
        (f"plain `generate`, {args.questions} questions in one call", batch_s, batch_n / batch_s),
        ("`slm-mux collect` (batched, graded, stored)", collect_s, samples / collect_s),
    ]
    print(
        f"{args.model}, {args.questions} questions x k={args.k}, {device}, "
        f"{torch.get_num_threads()} torch threads"
    )
    print("| path | seconds | samples/s | vs one-per-call |")
    print("|---|---:|---:|---:|")
    for label, seconds, rate in rows:
        print(f"| {label} | {seconds:.2f} | {rate:.0f} | {rate / loop_rate:.1f}x |")
    if not args.no_demo:
        print("demo ...", file=sys.stderr)
        print(f"\nfirst `slm-mux demo` run: {demo_seconds():.1f} s")


if __name__ == "__main__":
    main()
