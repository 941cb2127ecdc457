"""Per-row sampling for batched decoding: Gumbel-max with counter-based noise.

Every row of a batch carries its own seed (sample ``j`` of a request seeded
``s`` has seed ``s + j``, see :func:`slm_mux.engine.sample_seed`); the noise
added to its logits at a decoding step is a hash of (seed, step, token id),
computed vectorized on the model's device. A
row's samples therefore never depend on what else shares its batch, on the
order of the batch or on any global random state. Temperature and top-p are
per row; temperature 0 picks the most likely token.

The hash is Chris Wellons' ``lowbias32`` (an integer mixer in 32 bits),
evaluated in int64 with every product kept below 2**63, so it gives the same
bits on every device. Logits are compared in float32 whatever the model's dtype.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

_MASK32 = 0xFFFFFFFF


def _times(x: torch.Tensor, constant: int) -> torch.Tensor:
    """``x * constant`` modulo 2**32, for ``x`` below 2**32, without int64 overflow."""
    low = x * (constant & 0xFFFF)
    high = ((x * (constant >> 16)) & 0xFFFF) << 16
    return (low + high) & _MASK32


def mix32(x: torch.Tensor) -> torch.Tensor:
    """``lowbias32``: a bijective 32-bit integer hash of each element (int64 in, int64 out)."""
    x = x ^ (x >> 16)
    x = _times(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _times(x, 0x846CA68B)
    return x ^ (x >> 16)


def uniform_noise(seeds: torch.Tensor, step: int, vocab: int) -> torch.Tensor:
    """Uniform floats in (0, 1), shape ``[batch, vocab]``, fixed by (seed, step, token).

    ``seeds`` is an int64 tensor of shape ``[batch]`` (only its low 32 bits count).
    """
    import torch

    key = mix32(mix32(seeds & _MASK32) ^ step)
    tokens = mix32(torch.arange(vocab, device=seeds.device, dtype=torch.int64) + 0x9E3779B9)
    bits = mix32(key[:, None] ^ tokens[None, :])
    # 24 bits, centred in their interval: never exactly 0 or 1, exact in float32.
    return ((bits >> 8).to(torch.float32) + 0.5) * (1.0 / (1 << 24))


def choose_tokens(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_p: torch.Tensor,
    seeds: torch.Tensor,
    step: int,
) -> torch.Tensor:
    """The next token of every row, shape ``[batch]``.

    ``logits`` is ``[batch, vocab]``; ``temperature`` and ``top_p`` are float
    tensors ``[batch]``. A row with temperature 0 takes its most likely token;
    the others sample from the softmax at their temperature, restricted to the
    smallest set of most likely tokens whose probability reaches ``top_p``
    (the nucleus), by Gumbel-max: ``argmax(logits / T + G)`` with ``G`` from
    :func:`uniform_noise`, an exact draw from that distribution.
    """
    import torch

    scores = logits.float()
    greedy = temperature <= 0
    scaled = scores / torch.where(greedy, 1.0, temperature)[:, None]
    if bool((top_p < 1).any()):
        scaled = _nucleus(scaled, top_p)
    gumbel = -torch.log(-torch.log(uniform_noise(seeds, step, scores.shape[-1])))
    sampled = torch.argmax(scaled + gumbel, dim=-1)
    return torch.where(greedy, torch.argmax(scores, dim=-1), sampled)


def _nucleus(scaled: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """``scaled`` with every token outside each row's top-p nucleus set to -inf."""
    import torch

    ordered, order = torch.sort(scaled, dim=-1, descending=True)
    probabilities = torch.softmax(ordered, dim=-1)
    # A token is kept while the mass before it is below top_p: the first one always is.
    before = torch.cumsum(probabilities, dim=-1) - probabilities
    dropped = before >= top_p[:, None]
    masked = ordered.masked_fill(dropped, float("-inf"))
    return torch.empty_like(scaled).scatter_(-1, order, masked)
