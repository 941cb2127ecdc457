"""Speed on a real model: slm-mux in process (batched) vs plain HF ``generate`` vs llama.cpp.

One model (SmolLM2-135M-Instruct from the fetched real pool), the same arith
questions, ``--samples`` samples each at temperature 0.3, in one run:

- ``slm-mux in process``: the transformers backend, every question's request
  sent at once, so the batcher decodes them together;
- ``HF generate``: ``AutoModelForCausalLM.generate`` on the same GGUF file, one
  question at a time, its samples as ``num_return_sequences`` (stopping at the
  chat template's end of turn, as the backend does);
- ``llama.cpp server``: ``python -m llama_cpp.server`` on the same file, through
  slm-mux's openai backend (the server ignores ``n``: one request per sample).

For each: start-up to the first sample (loading included: from constructing the
backend, loading the model or spawning the server, to one answered 1-sample
request), then samples/s and completion tokens/s over all questions. Prints a
Markdown table. Needs the ``gguf`` extra and ``llama-cpp-python[server]``.

    python bench/bench_real_speed.py [--pool-dir DIR] [--questions 8] [--samples 4]
        [--max-tokens 48] [--threads 2]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slm_mux.backends import GenerationRequest, OpenAICompatibleBackend, TransformersBackend
from slm_mux.backends.base import Completion
from slm_mux.backends.transformers_local import end_of_turn_ids
from slm_mux.tasks import get_task
from slm_mux.tasks.arith import generate_questions

FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
TEMPERATURE = 0.3


@dataclass(frozen=True)
class Result:
    """One way of sampling: start-up seconds, then samples and tokens over ``seconds``."""

    name: str
    startup_s: float
    samples: int
    tokens: int
    seconds: float

    def row(self) -> str:
        return (
            f"| {self.name} | {self.startup_s:.1f} | {self.samples} | {self.tokens} | "
            f"{self.seconds:.1f} | {self.samples / self.seconds:.2f} | "
            f"{self.tokens / self.seconds:.1f} |"
        )


def requests(questions: int, samples: int, max_tokens: int) -> list[GenerationRequest]:
    task = get_task("arith")
    return [
        GenerationRequest(task.messages(q), samples, TEMPERATURE, max_tokens, seed=i)
        for i, q in enumerate(generate_questions("test", questions))
    ]


async def through_backend(
    name: str, make: Callable[[], Any], asked: list[GenerationRequest]
) -> Result:
    """Start-up (construct + one 1-sample request), then every request at once."""
    started = time.perf_counter()
    backend = make()
    first = asked[0]
    await backend.generate(GenerationRequest(first.messages, 1, TEMPERATURE, first.max_tokens, 0))
    startup = time.perf_counter() - started
    started = time.perf_counter()
    replies = await asyncio.gather(*(backend.generate(request) for request in asked))
    seconds = time.perf_counter() - started
    await backend.aclose()
    done: list[Completion] = [c for reply in replies for c in reply]
    return Result(name, startup, len(done), sum(c.completion_tokens or 0 for c in done), seconds)


def hf_generate(path: Path, asked: list[GenerationRequest]) -> Result:
    """Plain transformers: load the GGUF file, then ``generate`` one question at a time."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    )
    stops = sorted({*end_of_turn_ids(tokenizer), tokenizer.eos_token_id})

    def sample(request: GenerationRequest, n: int) -> int:
        encoded: Any = tokenizer.apply_chat_template(
            request.messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        ids = encoded["input_ids"]
        torch.manual_seed(request.seed or 0)
        out = model.generate(
            ids,
            do_sample=True,
            temperature=TEMPERATURE,
            top_k=0,
            max_new_tokens=request.max_tokens,
            num_return_sequences=n,
            eos_token_id=stops,
            pad_token_id=stops[0],
        )
        new = out[:, ids.shape[1] :]
        # Tokens up to and including each row's first stop (later ones are padding).
        ended = torch.isin(new, torch.tensor(stops))
        first_stop = torch.where(ended.any(1), ended.int().argmax(1) + 1, new.shape[1])
        return int(first_stop.sum())

    sample(asked[0], 1)
    startup = time.perf_counter() - started
    started = time.perf_counter()
    tokens = sum(sample(request, request.n) for request in asked)
    seconds = time.perf_counter() - started
    return Result(
        "HF generate, one question at a time", startup, len(asked) * asked[0].n, tokens, seconds
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def llama_cpp(path: Path, asked: list[GenerationRequest], threads: int) -> Result:
    """llama.cpp's server through the openai backend; start-up includes spawning it."""
    port = free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(path)]
    command += ["--model_alias", "smollm2-135m", "--chat_format", "chatml"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--n_threads", str(threads)]
    started = time.perf_counter()
    with tempfile.TemporaryFile() as log:  # its load log would fill a pipe
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=2):
                    break
            except OSError:
                if server.poll() is not None:
                    raise SystemExit("llama_cpp.server exited") from None
                time.sleep(0.1)
        spawn = time.perf_counter() - started

        def make() -> OpenAICompatibleBackend:
            return OpenAICompatibleBackend(
                "smollm2-135m", base_url=url, model="smollm2-135m", max_concurrency=4
            )

        result = await through_backend("llama.cpp server (openai backend)", make, asked)
        return Result(
            result.name, spawn + result.startup_s, result.samples, result.tokens, result.seconds
        )
    finally:
        server.terminate()
        server.wait()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pool-dir", type=Path, default=Path("~/.cache/slm-mux/real-pool"))
    parser.add_argument("--questions", type=int, default=8)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    path = args.pool_dir.expanduser() / FILE
    asked = requests(args.questions, args.samples, args.max_tokens)

    def in_process() -> TransformersBackend:
        return TransformersBackend("smollm2-135m", str(path), dtype="float32", threads=args.threads)

    results = [
        await through_backend("slm-mux in process (batched)", in_process, asked),
        hf_generate(path, asked),
        await llama_cpp(path, asked, args.threads),
    ]
    print(
        f"{FILE}: {args.questions} arith questions x {args.samples} samples, "
        f"max_tokens {args.max_tokens}, temperature {TEMPERATURE}, {args.threads} threads"
    )
    print(
        "| how | start-up to first sample s | samples | completion tokens | s | samples/s |", end=""
    )
    print(" tokens/s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for result in results:
        print(result.row())


if __name__ == "__main__":
    asyncio.run(main())
