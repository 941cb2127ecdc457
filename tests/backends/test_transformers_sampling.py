"""The candidate-only sampler draws exactly the tokens the full-vocabulary one drew.

:func:`reference_choose_tokens` is the implementation before noise was
limited to candidates, kept verbatim as the reference. It had one defect: a
uniform of 1.0 (top 24 bits all set, rounded up in float32) gave infinite
noise, so that token won whatever its logit (about one step in 50 on a
262 k vocabulary). The new sampler clamps it; draws equal the reference's
everywhere else.
"""

from __future__ import annotations

from typing import Any

import pytest

from slm_mux.backends.sampling import choose_tokens, mix32, noise_range, uniform_noise

torch = pytest.importorskip("torch", reason="sampling needs the local extra")


def reference_uniform_noise(seeds: Any, step: int, vocab: int) -> Any:
    key = mix32(mix32(seeds & 0xFFFFFFFF) ^ step)
    tokens = mix32(torch.arange(vocab, device=seeds.device, dtype=torch.int64) + 0x9E3779B9)
    bits = mix32(key[:, None] ^ tokens[None, :])
    return ((bits >> 8).to(torch.float32) + 0.5) * (1.0 / (1 << 24))


def reference_nucleus(scaled: Any, top_p: Any) -> Any:
    ordered, order = torch.sort(scaled, dim=-1, descending=True)
    probabilities = torch.softmax(ordered, dim=-1)
    before = torch.cumsum(probabilities, dim=-1) - probabilities
    dropped = before >= top_p[:, None]
    masked = ordered.masked_fill(dropped, float("-inf"))
    return torch.empty_like(scaled).scatter_(-1, order, masked)


def reference_choose_tokens(
    logits: Any, temperature: Any, top_p: Any, seeds: Any, step: int
) -> tuple[Any, Any]:
    """The old draw, and which rows it won by infinite noise."""
    scores = logits.float()
    greedy = temperature <= 0
    scaled = scores / torch.where(greedy, 1.0, temperature)[:, None]
    if bool((top_p < 1).any()):
        scaled = reference_nucleus(scaled, top_p)
    uniform = reference_uniform_noise(seeds, step, scores.shape[-1])
    gumbel = -torch.log(-torch.log(uniform))
    sampled = torch.argmax(scaled + gumbel, dim=-1)
    chosen = torch.where(greedy, torch.argmax(scores, dim=-1), sampled)
    by_infinity = ~greedy & (uniform.gather(-1, sampled[:, None])[:, 0] == 1.0)
    return chosen, by_infinity


def settings(rows: int) -> tuple[Any, Any]:
    """Per-row temperatures (greedy rows among them) and top-p values (some below 1)."""
    temperature = torch.tensor([0.0, 0.3, 0.7, 1.0, 1.5, 0.3, 1.0, 0.05])[torch.arange(rows) % 8]
    top_p = torch.tensor([1.0, 1.0, 1.0, 0.9, 1.0, 0.5, 1.0, 1.0])[torch.arange(rows) % 8]
    return temperature, top_p


@pytest.mark.parametrize(
    ("vocab", "rows", "steps", "spread"),
    [(7, 64, 8, 1.0), (500, 48, 8, 4.0), (49152, 16, 6, 3.0), (262144, 8, 6, 3.0)],
)
def test_draws_equal_the_full_vocabulary_reference(
    vocab: int, rows: int, steps: int, spread: float
) -> None:
    generator = torch.Generator().manual_seed(vocab)
    temperature, top_p = settings(rows)
    seeds = torch.arange(rows, dtype=torch.int64) * 7919 + 3
    compared = 0
    for step in range(steps):
        logits = torch.randn(rows, vocab, generator=generator) * spread
        new = choose_tokens(logits, temperature, top_p, seeds, step)
        old, by_infinity = reference_choose_tokens(logits, temperature, top_p, seeds, step)
        assert torch.equal(new[~by_infinity], old[~by_infinity])
        compared += int((~by_infinity).sum())
    assert compared >= rows * steps - 2


def test_ties_resolve_to_the_lowest_token_id_as_argmax_does() -> None:
    """Flat logits: every token is a candidate and equal noise values tie."""
    rows, vocab = 4, 262144
    logits = torch.zeros(rows, vocab)
    logits[:, 1000:] = float("-inf")  # masked tokens never win
    temperature, top_p = torch.ones(rows), torch.ones(rows)
    seeds = torch.arange(rows, dtype=torch.int64)
    for step in range(3):
        new = choose_tokens(logits, temperature, top_p, seeds, step)
        old, by_infinity = reference_choose_tokens(logits, temperature, top_p, seeds, step)
        assert not bool(by_infinity.any())
        assert torch.equal(new, old)


def test_uniforms_equal_the_old_ones_but_the_top_one_stays_below_one() -> None:
    seeds = torch.tensor([4, 14, 55, 56, 0, 1], dtype=torch.int64)  # 4 to 56 hit 1.0 at step 5
    old = reference_uniform_noise(seeds, 5, 262144)
    new = uniform_noise(seeds, 5, 262144)
    top = old == 1.0
    assert bool(top.any())  # the old top uniform: infinite Gumbel noise
    assert torch.equal(new[~top], old[~top])
    assert bool((new[top] < 1).all())
    low, high = noise_range()
    assert -3 < low < -2.8 and 16 < high < 17


def test_the_old_sampler_picked_tokens_by_infinite_noise_on_a_large_vocabulary() -> None:
    """The defect the clamp fixes, shown on the reference: some steps are decided by infinity."""
    seeds = torch.tensor([4, 14, 55, 56, 0, 1], dtype=torch.int64)
    logits = torch.zeros(len(seeds), 262144)
    logits[:, 0] = 30.0  # a confident model: token 0 should always win
    ones = torch.ones(len(seeds))
    old, by_infinity = reference_choose_tokens(logits, ones, ones, seeds, 5)
    assert by_infinity.tolist() == [True] * 4 + [False] * 2
    assert (old != 0).tolist() == by_infinity.tolist()
    assert bool((choose_tokens(logits, ones, ones, seeds, 5) == 0).all())
