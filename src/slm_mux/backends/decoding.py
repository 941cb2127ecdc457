"""One padded, KV-cached decoding pass over a batch of independent rows.

Each :class:`Row` is one sample of one request: its prompt's token ids, its
own seed (the sampling noise, see :mod:`slm_mux.backends.sampling`), its
temperature, top-p and token budget.
Each distinct prompt is read once (a request's samples share theirs) and its
KV cache copied to its rows. Prompts are left-padded with an attention mask
and position ids counted from each row's first real token, so padding changes
a row's logits by float rounding at most. Rows that finish are dropped from the batch (and its KV
cache) once they are half of it, and decoding stops when every row has
finished.
"""

from __future__ import annotations

import inspect
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from slm_mux.backends.sampling import choose_tokens


@dataclass(frozen=True)
class Row:
    """One sample to decode: prompt ids, its seed and its settings."""

    prompt: tuple[int, ...]
    seed: int
    temperature: float
    top_p: float
    max_new: int


@dataclass(frozen=True)
class Decoded:
    """A row's new tokens (its stop token included) and whether a stop token ended it."""

    tokens: list[int]
    stopped: bool


def decode(
    model: Any, rows: Sequence[Row], *, pad_id: int, stop_ids: Collection[int]
) -> list[Decoded]:
    """Decode every row of ``rows`` in one batch; the results in the same order.

    ``model`` is a Hugging Face causal LM (on its device, in eval mode);
    ``stop_ids`` end a row (and are kept as its last token).
    """
    import torch

    device = model.device
    # Samples of one request share their prompt: read each distinct prompt once.
    distinct: dict[tuple[int, ...], int] = {}
    source = torch.tensor([distinct.setdefault(row.prompt, len(distinct)) for row in rows])
    ids, mask = _left_padded(list(distinct), pad_id)
    ids, mask, source = ids.to(device), mask.to(device), source.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    seeds = torch.tensor([row.seed for row in rows], dtype=torch.int64, device=device)
    temperature = torch.tensor([row.temperature for row in rows], device=device)
    top_p = torch.tensor([row.top_p for row in rows], device=device)
    budget = torch.tensor([row.max_new for row in rows], device=device)
    stops = torch.tensor(sorted(stop_ids), dtype=torch.int64, device=device)
    parameters = inspect.signature(model.forward).parameters
    cache_key = "cache" if "cache" in parameters else "past_key_values"  # the 5.x rename
    last_only = {"logits_to_keep": 1} if "logits_to_keep" in parameters else {}
    live = torch.arange(len(rows), device=device)  # batch position -> row number
    done = torch.zeros(len(rows), dtype=torch.bool, device=device)
    steps: list[tuple[torch.Tensor, torch.Tensor]] = []  # (row numbers, their tokens)
    with torch.inference_mode():
        out = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            **last_only,
        )
        cache = getattr(out, cache_key)
        cache.batch_select_indices(source)
        logits, mask, positions = out.logits[source, -1, :], mask[source], positions[source]
        for step in range(max(row.max_new for row in rows)):
            tokens = choose_tokens(logits, temperature, top_p, seeds, step)
            steps.append((live[~done], tokens[~done]))
            done = done | torch.isin(tokens, stops) | (budget <= step + 1)
            finished = int(done.sum())
            if finished == len(live):
                break
            if 2 * finished >= len(live):
                keep = torch.nonzero(~done).squeeze(-1)
                cache.batch_select_indices(keep)
                live, tokens, mask = live[keep], tokens[keep], mask[keep]
                positions, seeds, temperature = positions[keep], seeds[keep], temperature[keep]
                top_p, budget, done = top_p[keep], budget[keep], done[keep]
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=-1)
            positions = positions[:, -1:] + 1
            out = model(
                input_ids=tokens[:, None],
                attention_mask=mask,
                position_ids=positions,
                use_cache=True,
                **{cache_key: cache},
            )
            cache, logits = getattr(out, cache_key), out.logits[:, -1, :]
    return _split(steps, len(rows), set(stop_ids))


def _left_padded(prompts: Sequence[tuple[int, ...]], pad_id: int) -> tuple[Any, Any]:
    """Token ids and attention mask of ``prompts``, left-padded to the longest."""
    import torch

    longest = max(len(prompt) for prompt in prompts)
    ids = torch.full((len(prompts), longest), pad_id, dtype=torch.int64)
    mask = torch.zeros((len(prompts), longest), dtype=torch.int64)
    for i, prompt in enumerate(prompts):
        ids[i, longest - len(prompt) :] = torch.tensor(prompt)
        mask[i, longest - len(prompt) :] = 1
    return ids, mask


def _split(steps: Sequence[tuple[Any, Any]], count: int, stop_ids: set[int]) -> list[Decoded]:
    """Each row's tokens from the per-step (unfinished row numbers, their tokens) pairs."""
    tokens: list[list[int]] = [[] for _ in range(count)]
    for live, chosen in steps:
        for row, token in zip(live.tolist(), chosen.tolist(), strict=True):
            tokens[row].append(token)
    return [Decoded(row, bool(row) and row[-1] in stop_ids) for row in tokens]
