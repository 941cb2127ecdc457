"""Batched in-process generation: batch-independent samples, per-row settings, limits, errors."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from slm_mux.backends import GenerationRequest, TransformersBackend
from slm_mux.backends.batching import Batcher, OutOfMemory
from slm_mux.backends.decoding import Decoded, Row, decode
from slm_mux.backends.sampling import choose_tokens, mix32, uniform_noise
from slm_mux.backends.transformers_local import pick_device, pick_dtype, set_threads_once
from slm_mux.collect import collect
from slm_mux.demo import POOL_DIR
from slm_mux.errors import BackendError, InputError
from slm_mux.members import Member
from slm_mux.pool import pool_from_dict
from slm_mux.store import Store
from slm_mux.tasks import get_task
from slm_mux.tasks.arith import generate_questions
from slm_mux.testing.tiny_model import build_tiny_model

torch = pytest.importorskip("torch", reason="the transformers backend needs the local extra")
transformers = pytest.importorskip("transformers", reason="needs the local extra")

TRAINED = POOL_DIR / "tiny-mul"
"""A bundled model trained on arith: it ends its answers with a stop token."""


def ask(text: str, n: int = 2, temperature: float = 1.0, max_tokens: int = 6, **more: Any) -> Any:
    messages = [{"role": "user", "content": text}]
    return GenerationRequest(messages, n=n, temperature=temperature, max_tokens=max_tokens, **more)


def texts(completions: Sequence[Any]) -> list[str]:
    return [c.text for c in completions]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


def lowbias32(x: int) -> int:
    """The reference hash in plain Python integers."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


def test_the_hash_is_lowbias32_without_overflow() -> None:
    values = [0, 1, 2, 12345, 2**31 - 1, 2**31, 2**32 - 1]
    hashed = mix32(torch.tensor(values, dtype=torch.int64)).tolist()
    assert hashed == [lowbias32(v) for v in values]


def test_noise_depends_only_on_seed_step_and_token() -> None:
    seeds = torch.tensor([5, 6, 5], dtype=torch.int64)
    noise = uniform_noise(seeds, 3, 40)
    assert noise.shape == (3, 40) and bool((noise > 0).all() and (noise < 1).all())
    assert torch.equal(noise[0], noise[2]) and not torch.equal(noise[0], noise[1])
    assert torch.equal(uniform_noise(seeds[1:2], 3, 40)[0], noise[1])  # alone or not
    assert not torch.equal(uniform_noise(seeds, 4, 40), noise)


def test_gumbel_max_draws_from_the_softmax_and_top_p_cuts_the_tail() -> None:
    rows = 4000
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05])).repeat(rows, 1)
    seeds = torch.arange(rows, dtype=torch.int64)
    ones = torch.ones(rows)
    drawn = choose_tokens(logits, ones, ones, seeds, 0)
    frequencies = torch.bincount(drawn, minlength=4).float() / rows
    assert torch.allclose(frequencies, torch.tensor([0.5, 0.3, 0.15, 0.05]), atol=0.03)
    # top_p 0.7: the nucleus is {0, 1} (0.5 < 0.7 <= 0.8), renormalized to 5/8 and 3/8.
    nucleus = choose_tokens(logits, ones, torch.full((rows,), 0.7), seeds, 0)
    frequencies = torch.bincount(nucleus, minlength=4).float() / rows
    assert frequencies[2:].sum() == 0
    assert abs(float(frequencies[0]) - 0.625) < 0.03
    greedy = choose_tokens(logits, torch.zeros(rows), ones, seeds, 0)
    assert bool((greedy == 0).all())


async def test_first_50_questions_alone_equal_the_same_50_among_200(
    tiny_model: Path, tmp_path: Path
) -> None:
    """The issue's reproducibility check, through collect, at the level of sample texts.

    The random tiny model at temperature 1 writes 24 tokens of near-uniform
    noise per sample: every token is a chance for float rounding to flip a draw.
    """
    task = get_task("arith")
    questions = generate_questions("test", 200, seed=0)

    async def run(count: int, store: Path, **limits: Any) -> dict[tuple[str, int], str | None]:
        backend = TransformersBackend("tiny", str(tiny_model), **limits)
        member = Member(backend, k=3, temperature=1.0, max_tokens=24, seed=0)
        with Store(store) as opened:
            await collect([member], task, questions[:count], split="test", store=opened)
            found = {(s.question_id, s.sample): s.text for s in opened.samples()}
        await backend.aclose()
        return found

    alone = await run(50, tmp_path / "alone.db")
    among = await run(200, tmp_path / "among.db", max_batch_sequences=96)
    assert len(alone) == 150 and len(among) == 600
    assert alone == {key: text for key, text in among.items() if key in alone}
    assert len(set(alone.values())) > 100  # real, varied samples


async def test_rows_with_their_own_settings_share_a_batch(tiny_model: Path) -> None:
    requests = [
        ask("12+3", n=3, temperature=0.0, max_tokens=5),
        ask("9*9", n=2, temperature=1.0, max_tokens=3, seed=1),
        ask("a much longer prompt, padded less", n=2, temperature=0.7, max_tokens=8, seed=2,
            top_p=0.5),
        ask("9*9", n=4, temperature=1.3, max_tokens=7, seed=3),
    ]  # fmt: skip
    together = TransformersBackend("tiny", str(tiny_model), batch_window_ms=200)
    await together.generate(requests[0])  # loaded: the next ones arrive together
    shared = await asyncio.gather(*(together.generate(r) for r in requests))
    assert together.batch_stats.batches <= 2  # the warm-up, then (at most) one more
    alone = TransformersBackend("tiny-alone", str(tiny_model))
    for request, result in zip(requests, shared, strict=True):
        assert texts(result) == texts(await alone.generate(request))
        assert all((c.completion_tokens or 0) <= request.max_tokens for c in result)
    assert len(set(texts(shared[0]))) == 1  # greedy: one decoding, repeated
    assert len(set(texts(shared[3]))) > 1
    await together.aclose()
    await alone.aclose()


async def test_concurrent_requests_are_decoded_in_fewer_batches(tiny_model: Path) -> None:
    backend = TransformersBackend("tiny", str(tiny_model), batch_window_ms=100)
    await backend.generate(ask("warm up", n=1))
    requests = [ask(f"{i}+{i}", seed=i) for i in range(20)]
    results = await asyncio.gather(*(backend.generate(r) for r in requests))
    stats = backend.batch_stats
    assert stats.rows == 1 + 20 * 2
    assert stats.batches - 1 < len(requests)
    assert all(len(result) == 2 for result in results)
    await backend.aclose()


def test_batches_respect_the_sequence_and_token_limits() -> None:
    batcher = Batcher("m", lambda rows: [], window_s=0, max_sequences=3, max_tokens=40)
    lengths = [9, 2, 5, 2, 7, 30]
    rows = [Row(tuple(range(n)), 0, 1.0, 1.0, 4) for n in lengths]
    request: Any = type("Request", (), {"rows": rows})()
    planned = batcher.plan([(request, i) for i in range(len(rows))])
    sizes = [[len(rows[i].prompt) for _, i in batch] for batch in planned]
    # Sorted by length; 3 rows at most; rows x (longest + 4) <= 40 unless a row is alone.
    assert sizes == [[2, 2, 5], [7, 9], [30]]


@pytest.mark.skipif(not (TRAINED / "config.json").exists(), reason="no bundled models")
async def test_decoding_stops_when_every_row_has_stopped() -> None:
    tokenizer = transformers.AutoTokenizer.from_pretrained(TRAINED)
    model = transformers.AutoModelForCausalLM.from_pretrained(TRAINED).eval()
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "12+34"}], add_generation_prompt=True, tokenize=False
    )
    prompt = tuple(tokenizer(text, add_special_tokens=False)["input_ids"])
    rows = [Row(prompt, seed, 0.3, 1.0, 100) for seed in range(5)]
    decoded = decode(model, rows, pad_id=0, stop_ids={model.generation_config.eos_token_id})
    assert all(row.stopped for row in decoded)
    longest = max(len(row.tokens) for row in decoded)
    assert longest < 30
    assert len(calls) == longest  # the prompt, then one step per token but the last


async def test_an_out_of_memory_batch_is_split_and_retried(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    requests = [ask(f"{i}*7", n=3, seed=i) for i in range(3)]
    plain = TransformersBackend("tiny", str(tiny_model))
    expected = [texts(await plain.generate(r)) for r in requests]
    sizes: list[int] = []

    def small_memory(model: Any, rows: Sequence[Row], **options: Any) -> list[Decoded]:
        sizes.append(len(rows))
        if len(rows) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return decode(model, rows, **options)

    monkeypatch.setattr("slm_mux.backends.transformers_local.decode", small_memory)
    backend = TransformersBackend("tiny-oom", str(tiny_model), batch_window_ms=200)
    got = await asyncio.gather(*(backend.generate(r) for r in requests))
    assert [texts(result) for result in got] == expected
    assert backend.batch_stats.splits > 0 and max(sizes) > 2
    warnings = [r.getMessage() for r in caplog.records if r.name == "slm_mux"]
    assert any("'tiny-oom': out of device memory with" in w for w in warnings)
    await backend.aclose()
    await plain.aclose()


async def test_a_row_that_never_fits_fails_only_its_request(tiny_model: Path) -> None:
    def run(rows: list[Row]) -> list[Decoded]:
        if any(row.seed == 99 for row in rows):
            raise OutOfMemory("model 'm': out of device memory even for one sequence")
        return [Decoded([1], True) for _ in rows]

    batcher = Batcher("m", run, window_s=0.2, max_sequences=8, max_tokens=10_000)
    fits, too_big = Row((1, 2), 1, 1.0, 1.0, 4), Row((1, 2), 99, 1.0, 1.0, 4)
    results = await asyncio.gather(
        batcher.submit([fits, fits]), batcher.submit([too_big]), return_exceptions=True
    )
    assert results[0] == [Decoded([1], True)] * 2
    assert isinstance(results[1], OutOfMemory)
    assert batcher.stats.splits >= 1
    batcher.close()


async def test_a_failed_batch_fails_its_requests_and_the_worker_goes_on() -> None:
    def run(rows: list[Row]) -> list[Decoded]:
        if rows[0].seed == 0:
            raise BackendError("model 'm': generation failed: boom")
        return [Decoded([7], False) for _ in rows]

    batcher = Batcher("m", run, window_s=0, max_sequences=8, max_tokens=10_000)
    with pytest.raises(BackendError, match="boom"):
        await batcher.submit([Row((1,), 0, 1.0, 1.0, 4)])
    assert await batcher.submit([Row((1,), 1, 1.0, 1.0, 4)]) == [Decoded([7], False)]
    batcher.close()


async def test_closing_stops_the_worker_thread_before_it_returns() -> None:
    def run(rows: list[Row]) -> list[Decoded]:
        return [Decoded([7], True) for _ in rows]

    batcher = Batcher("m", run, window_s=0, max_sequences=8, max_tokens=10_000)
    await batcher.submit([Row((1,), 1, 1.0, 1.0, 4)])
    workers = [t for t in threading.enumerate() if t.name == "slm-mux batcher m"]
    assert len(workers) == 1
    batcher.close()
    assert not workers[0].is_alive()


async def test_a_prompt_too_long_fails_alone(tmp_path: Path) -> None:
    model = build_tiny_model(tmp_path / "short", max_position_embeddings=24)
    backend = TransformersBackend("short", str(model), batch_window_ms=100)
    results = await asyncio.gather(
        backend.generate(ask("1+1")),
        backend.generate(ask("9" * 40)),
        backend.generate(ask("2+2")),
        return_exceptions=True,
    )
    assert isinstance(results[1], BackendError)
    assert "model 'short': the prompt has" in str(results[1])
    assert all(isinstance(r, list) and len(r) == 2 for r in (results[0], results[2]))
    await backend.aclose()


@pytest.mark.parametrize(
    ("raised", "caught"),
    [
        (RuntimeError("CUDA error: device-side assert triggered"), BackendError),
        (TypeError("a bug in our decoding code"), TypeError),
        (ValueError("a bug in our decoding code"), ValueError),
    ],
)
async def test_a_device_failure_is_a_backend_error_and_our_bug_surfaces(
    tiny_model: Path,
    monkeypatch: pytest.MonkeyPatch,
    raised: Exception,
    caught: type[Exception],
) -> None:
    def failing(model: Any, rows: Sequence[Row], **options: Any) -> list[Decoded]:
        raise raised

    monkeypatch.setattr("slm_mux.backends.transformers_local.decode", failing)
    backend = TransformersBackend("tiny-failing", str(tiny_model))
    try:
        with pytest.raises(caught) as error:
            await backend.generate(ask("2+2"))
    finally:
        await backend.aclose()
    if caught is BackendError:
        assert str(error.value) == (
            "model 'tiny-failing': generation failed: CUDA error: device-side assert triggered"
        )


def test_devices_dtypes_and_threads(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = (
        "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available()
        else "cpu"
    )  # fmt: skip
    assert pick_device("auto") == expected
    assert pick_device("cpu") == "cpu"
    assert pick_dtype("auto", "cpu") == torch.float32
    assert pick_dtype("bfloat16", "cpu") == torch.bfloat16
    set_threads_once("first", None)  # settles the process's count (if no model did yet)
    threads = torch.get_num_threads()
    set_threads_once("later", threads + 1)
    assert torch.get_num_threads() == threads
    [warning] = [r for r in caplog.records if r.name == "slm_mux"]
    assert warning.levelname == "WARNING"
    assert warning.getMessage().startswith(f"model 'later': threads {threads + 1} ignored;")
    assert capsys.readouterr().err == ""  # the library logs; it does not print


def test_the_pool_entry_carries_the_batching_knobs() -> None:
    entry = {"name": "t", "backend": "transformers", "path": "/somewhere",
             "batch_window_ms": 5, "max_batch_sequences": 32, "max_batch_tokens": 4096}  # fmt: skip
    backend = pool_from_dict({"models": [entry]}).models[0].build()
    assert isinstance(backend, TransformersBackend)
    assert (backend.batch_window_ms, backend.max_batch_sequences, backend.max_batch_tokens) == (
        5, 32, 4096
    )  # fmt: skip
    assert backend.device == "auto"
    with pytest.raises(InputError, match=r"models\[0\]\.max_batch_sequences: "):
        pool_from_dict({"models": [{**entry, "max_batch_sequences": 0}]})
