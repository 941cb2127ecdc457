"""Sampling's share of in-process decode time on a real model: candidates only vs full vocabulary.

Loads one model (a ``.gguf`` file or a checkpoint folder), then decodes the
same rows (``--rows`` samples of one arith prompt, ``--steps`` new tokens,
temperature 0.3) twice through :func:`slm_mux.backends.decoding.decode`: with
:func:`~slm_mux.backends.sampling.choose_tokens` (noise for candidates only)
and with the full-vocabulary draw it replaced (noise for every token, the
old cost). Prints a Markdown row per sampler: decode seconds, sampling seconds
and share, and whether both drew the same tokens.

    python bench/bench_real_sampling.py MODEL.gguf [--rows 16] [--steps 32] [--threads 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from slm_mux.backends import decoding
from slm_mux.backends.sampling import _nucleus, choose_tokens, gumbel, uniform_noise
from slm_mux.backends.transformers_local import TransformersBackend, _render_chat


def full_vocabulary(logits: Any, temperature: Any, top_p: Any, seeds: Any, step: int) -> Any:
    """The draw with noise for every token (the cost before candidates)."""
    scores = logits.float()
    greedy = temperature <= 0
    scaled = scores / torch.where(greedy, 1.0, temperature)[:, None]
    if bool((top_p < 1).any()):
        scaled = _nucleus(scaled, top_p)
    noise = gumbel(uniform_noise(seeds, step, scores.shape[-1]))
    return torch.where(greedy, scores.argmax(-1), (scaled + noise).argmax(-1))


def timed_decode(loaded: Any, rows: list[decoding.Row], sampler: Any) -> tuple[float, float, Any]:
    """Decode seconds, seconds inside ``sampler``, and the tokens."""
    spent = [0.0]

    def timed(*args: Any) -> Any:
        started = time.perf_counter()
        chosen = sampler(*args)
        spent[0] += time.perf_counter() - started
        return chosen

    decoding.choose_tokens = timed  # type: ignore[assignment]
    started = time.perf_counter()
    out = decoding.decode(loaded.model, rows, pad_id=0, stop_ids=set())
    total = time.perf_counter() - started
    decoding.choose_tokens = choose_tokens
    return total, spent[0], [row.tokens for row in out]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", type=Path)
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    backend = TransformersBackend("bench", str(args.model), dtype="float32", threads=args.threads)
    loaded = backend._load()
    messages = [{"role": "user", "content": "What is 23*4+7? End with '#### <number>'."}]
    if loaded.tokenizer.chat_template:
        text = _render_chat(loaded.tokenizer, messages)
    else:
        text = messages[0]["content"] + "\n\n"
    prompt = tuple(loaded.tokenizer(text)["input_ids"])
    rows = [decoding.Row(prompt, seed, 0.3, 1.0, args.steps) for seed in range(args.rows)]
    vocab = loaded.model.config.vocab_size
    print(f"{args.model.name}: vocabulary {vocab}, {args.rows} rows x {args.steps} steps")
    print("| sampler | decode s | sampling s | sampling share |")
    print("|---|---:|---:|---:|")
    drawn = []
    for name, sampler in (("full vocabulary", full_vocabulary), ("candidates", choose_tokens)):
        total, sampling, tokens = timed_decode(loaded, rows, sampler)
        drawn.append(tokens)
        print(f"| {name} | {total:.2f} | {sampling:.2f} | {sampling / total:.0%} |")
    print(f"same tokens: {drawn[0] == drawn[1]}")


if __name__ == "__main__":
    main()
