"""Per-row sampling for batched decoding: Gumbel-max with counter-based noise.

Every row of a batch carries its own seed (sample ``j`` of a request seeded
``s`` has seed ``s + j``, see :func:`slm_mux.engine.sample_seed`); the noise
added to its logits at a decoding step is a hash of (seed, step, token id),
computed vectorized on the model's device. A row's samples therefore never
depend on what else shares its batch, on the order of the batch or on any
global random state. Temperature and top-p are per row; temperature 0 picks
the most likely token.

The hash is Chris Wellons' ``lowbias32`` (an integer mixer in 32 bits),
evaluated in int64 with every product kept below 2**63, so it gives the same
bits on every device. Logits are compared in float32 whatever the model's dtype.

Cost: the noise is bounded (:data:`NOISE_RANGE`), so a token whose scaled
logit lies further below its row's best than that range can never win the
argmax; :func:`choose_tokens` hashes noise only for the tokens that can
(a few dozen on a real model's logits, instead of the whole vocabulary), and
picks exactly the token a full-vocabulary draw would. Its memory is one
float32 and one boolean ``[batch, vocab]`` tensor besides the logits.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

_MASK32 = 0xFFFFFFFF
_TOKEN_SALT = 0x9E3779B9
_LARGEST_BELOW_ONE = 1.0 - 2.0**-24
"""The largest float32 below 1: the top uniform, which ``+ 0.5`` alone would round up to 1.0
(and 1.0 is infinite Gumbel noise: a uniformly random token wins; fixed here)."""


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


def step_keys(seeds: torch.Tensor, step: int) -> torch.Tensor:
    """Each row's noise key at ``step``, from its int64 seed (only the low 32 bits count)."""
    return mix32(mix32(seeds & _MASK32) ^ step)


def token_uniforms(keys: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Uniform floats in (0, 1) for token ids ``tokens`` under ``keys`` (broadcast together)."""
    import torch

    bits = mix32(keys ^ mix32(tokens + _TOKEN_SALT))
    # 24 bits, centred in their interval; float32 rounds the top one to 1.0: clamp it below.
    uniform = ((bits >> 8).to(torch.float32) + 0.5) * (1.0 / (1 << 24))
    return uniform.clamp(max=_LARGEST_BELOW_ONE)


def uniform_noise(seeds: torch.Tensor, step: int, vocab: int) -> torch.Tensor:
    """Uniform floats in (0, 1), shape ``[batch, vocab]``, fixed by (seed, step, token).

    ``seeds`` is an int64 tensor of shape ``[batch]`` (only its low 32 bits count).
    """
    import torch

    tokens = torch.arange(vocab, device=seeds.device, dtype=torch.int64)
    return token_uniforms(step_keys(seeds, step)[:, None], tokens[None, :])


def gumbel(uniform: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel noise from uniforms in (0, 1)."""
    import torch

    return -torch.log(-torch.log(uniform))


@cache
def noise_range() -> tuple[float, float]:
    """The least and the greatest Gumbel noise :func:`token_uniforms` can give (float32)."""
    import torch

    extremes = torch.tensor([0.5 / (1 << 24), _LARGEST_BELOW_ONE], dtype=torch.float32)
    low, high = gumbel(extremes).tolist()
    return low, high


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

    Only the candidates get noise: token ``i`` can win (or tie) only if
    ``scaled[i] + high >= best + low`` for the noise range ``(low, high)``,
    both sides rounded in float32 as the sum itself is (rounding is monotone),
    so the winner, lowest id first among equals, is the full draw's.
    """
    import torch

    scores = logits.float()
    greedy = temperature <= 0
    chosen = torch.argmax(scores, dim=-1)
    if bool(greedy.all()):
        return chosen
    scaled = scores / torch.where(greedy, 1.0, temperature)[:, None]
    if bool((top_p < 1).any()):
        scaled = _nucleus(scaled, top_p)
    low, high = noise_range()
    best, best_token = scaled.max(dim=-1)
    candidate = (scaled + high >= best[:, None] + low) & ~greedy[:, None]
    rows, tokens = torch.nonzero(candidate, as_tuple=True)  # row-major: ids ascend in a row
    uniforms = token_uniforms(step_keys(seeds, step)[rows], tokens)
    values = scaled[rows, tokens] + gumbel(uniforms)
    top = torch.full_like(best, float("-inf")).scatter_reduce(0, rows, values, "amax")
    reached = values == top[rows]
    vocab = scores.shape[-1]
    first = torch.full_like(chosen, vocab).scatter_reduce(0, rows[reached], tokens[reached], "amin")
    # A row whose best is NaN (a broken model) has no candidate: it takes the NaN, as argmax does.
    first = torch.where(first == vocab, best_token, first)
    return torch.where(greedy, chosen, first)


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
