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

A row also ends when its text reaches one of its model's stop strings
(:class:`StopStrings`): each step the last few tokens of every unfinished row
are detokenized and searched, so the cost is per row and step, not per vocabulary.
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
    """A row's new tokens (its stop token included) and whether a stop token or string ended it."""

    tokens: list[int]
    stopped: bool


@dataclass(frozen=True)
class StopStrings:
    """Texts that end a row, found in the detokenized tail of its new tokens.

    ``window`` tokens are read back each step: enough for the longest string
    (a token holds at least one character) plus the tokens it may straddle.
    ``tokenizer`` is the model's Hugging Face tokenizer.
    """

    tokenizer: Any
    texts: tuple[str, ...]

    @property
    def window(self) -> int:
        return max(len(text) for text in self.texts) + 2

    def reached(self, tokens: list[int]) -> bool:
        """Whether the text of ``tokens`` holds a stop string ending in its last tokens."""
        tail = self.tokenizer.decode(tokens[-self.window :], skip_special_tokens=True)
        return any(text in tail for text in self.texts)

    def cut(self, text: str) -> str:
        """``text`` up to its first stop string (the stop string left out)."""
        ends = [found for found in (text.find(stop) for stop in self.texts) if found >= 0]
        return text[: min(ends)] if ends else text


def decode(
    model: Any,
    rows: Sequence[Row],
    *,
    pad_id: int,
    stop_ids: Collection[int],
    stop_strings: StopStrings | None = None,
) -> list[Decoded]:
    """Decode every row of ``rows`` in one batch; the results in the same order.

    ``model`` is a Hugging Face causal LM (on its device, in eval mode);
    ``stop_ids`` end a row (and are kept as its last token), and so does a
    text in ``stop_strings`` (its tokens kept; :meth:`StopStrings.cut` trims the text).
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
    written: list[list[int]] = [[] for _ in rows]  # each row's tokens, kept for stop strings
    by_text: set[int] = set()  # rows a stop string ended
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
            ended = done | torch.isin(tokens, stops) | (budget <= step + 1)
            if stop_strings is not None:
                ended = ended | _reached(stop_strings, written, live, tokens, done, by_text)
            done = ended
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
    return _split(steps, len(rows), set(stop_ids), by_text)


def _reached(
    stop_strings: StopStrings,
    written: list[list[int]],
    live: Any,
    tokens: Any,
    done: Any,
    by_text: set[int],
) -> Any:
    """Which batch positions a stop string ends now (their row numbers added to ``by_text``)."""
    import torch

    reached = []
    for row, token, finished in zip(live.tolist(), tokens.tolist(), done.tolist(), strict=True):
        written[row].append(token)
        ended = not finished and stop_strings.reached(written[row])
        if ended:
            by_text.add(row)
        reached.append(ended)
    return torch.tensor(reached, dtype=torch.bool, device=done.device)


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


def _split(
    steps: Sequence[tuple[Any, Any]], count: int, stop_ids: set[int], by_text: set[int]
) -> list[Decoded]:
    """Each row's tokens from the per-step (unfinished row numbers, their tokens) pairs."""
    tokens: list[list[int]] = [[] for _ in range(count)]
    for live, chosen in steps:
        for row, token in zip(live.tolist(), chosen.tolist(), strict=True):
            tokens[row].append(token)
    return [
        Decoded(row, number in by_text or (bool(row) and row[-1] in stop_ids))
        for number, row in enumerate(tokens)
    ]
