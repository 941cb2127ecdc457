"""The in-process transformers backend, on a tiny random model built by the test."""

from __future__ import annotations

from pathlib import Path

import pytest

from slm_mux.backends import GenerationRequest, TransformersBackend
from slm_mux.backends.transformers_local import require_local_extra
from slm_mux.errors import BackendError, InputError
from slm_mux.pool import pool_from_dict
from slm_mux.testing.tiny_model import build_tiny_model

torch = pytest.importorskip("torch", reason="the transformers backend needs the local extra")
pytest.importorskip("transformers", reason="the transformers backend needs the local extra")

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]
# The tiny tokenizer is character-level, and its template wraps each message in role tokens.
PROMPT_TOKENS = len("Be brief.") + len("2+2?") + 5  # 2 x (role, end) + assistant


def ask(n: int, seed: int | None, temperature: float = 1.0) -> GenerationRequest:
    return GenerationRequest(MESSAGES, n=n, temperature=temperature, max_tokens=6, seed=seed)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def untemplated_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("plain"), chat_template=False)


async def test_generates_n_samples_with_token_counts(tiny_model: Path) -> None:
    backend = TransformersBackend("tiny", str(tiny_model), threads=torch.get_num_threads())
    completions = await backend.generate(ask(4, seed=1))
    assert len(completions) == 4
    assert all(1 <= (c.completion_tokens or 0) <= 6 for c in completions)
    assert all(c.finish_reason in ("stop", "length") for c in completions)
    assert all(c.latency_s > 0 for c in completions)
    assert sum(c.prompt_tokens or 0 for c in completions) == PROMPT_TOKENS
    assert len({c.text for c in completions}) > 1  # random weights, temperature 1
    assert backend.usage.completions == 4
    await backend.aclose()


async def test_equal_seeds_give_equal_samples(tiny_model: Path) -> None:
    backend = TransformersBackend("tiny", str(tiny_model))
    first = [c.text for c in await backend.generate(ask(3, seed=7))]
    again = [c.text for c in await backend.generate(ask(3, seed=7))]
    other = [c.text for c in await backend.generate(ask(3, seed=8))]
    assert first == again
    assert first != other
    reloaded = TransformersBackend("tiny-again", str(tiny_model))
    assert [c.text for c in await reloaded.generate(ask(3, seed=7))] == first


async def test_temperature_zero_is_greedy(tiny_model: Path) -> None:
    backend = TransformersBackend("tiny", str(tiny_model))
    greedy = [c.text for c in await backend.generate(ask(3, seed=None, temperature=0.0))]
    assert len(greedy) == 3 and len(set(greedy)) == 1
    assert [c.text for c in await backend.generate(ask(1, seed=5, temperature=0.0))] == greedy[:1]


async def test_without_a_chat_template_messages_are_joined(untemplated_model: Path) -> None:
    backend = TransformersBackend("plain", str(untemplated_model))
    completions = await backend.generate(ask(2, seed=3))
    # "Be brief.\n\n2+2?\n\n" plus the bos token.
    assert sum(c.prompt_tokens or 0 for c in completions) == len("Be brief.\n\n2+2?\n\n") + 1


async def test_the_pool_builds_it_from_a_relative_path(tiny_model: Path) -> None:
    pool = pool_from_dict(
        {"models": [{"name": "t", "backend": "transformers", "path": f"./{tiny_model.name}"}]},
        base_dir=tiny_model.parent,
    )
    backend = pool.models[0].build()
    assert isinstance(backend, TransformersBackend)
    assert len(await backend.generate(ask(2, seed=0))) == 2


async def test_a_missing_model_is_a_backend_error(tmp_path: Path) -> None:
    backend = TransformersBackend("ghost", str(tmp_path / "nothing-here"))
    with pytest.raises(BackendError, match=r"^model 'ghost': cannot load '.*nothing-here'"):
        await backend.generate(ask(1, seed=0))


def test_options_are_checked() -> None:
    with pytest.raises(InputError, match=r"^model 'x': dtype 'float8' is not one of auto, "):
        TransformersBackend("x", "somewhere", dtype="float8")


def test_missing_local_extra_is_an_input_error() -> None:
    with pytest.raises(InputError) as caught:
        require_local_extra("x", ("torch", "slm_mux_no_such_module"))
    assert str(caught.value) == "model 'x' needs the local extra: pip install 'slm-mux[local]'"
    require_local_extra("x", ("torch",))


USER_ONLY_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] != 'system' %}"
    "<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
REFUSING_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.mark.parametrize("template", [USER_ONLY_TEMPLATE, REFUSING_TEMPLATE])
async def test_a_template_without_system_turns_still_shows_the_system_text(
    tmp_path: Path, template: str
) -> None:
    model = build_tiny_model(tmp_path / "model", chat_template=template)
    backend = TransformersBackend("tiny", str(model))
    completions = await backend.generate(ask(2, seed=1))
    # The system text heads the user turn: "Be brief.\n\n2+2?" inside (user, end), then assistant.
    folded = len("Be brief.") + len("\n\n") + len("2+2?") + 3
    assert sum(c.prompt_tokens or 0 for c in completions) == folded
    await backend.aclose()


async def test_generation_stays_inside_the_models_context(tmp_path: Path) -> None:
    model = build_tiny_model(tmp_path / "short", max_position_embeddings=PROMPT_TOKENS + 2)
    backend = TransformersBackend("short", str(model))
    request = GenerationRequest(MESSAGES, n=3, temperature=1.0, max_tokens=50, seed=0)
    completions = await backend.generate(request)
    assert all((c.completion_tokens or 0) <= 2 for c in completions)
    too_long = [{"role": "user", "content": "9" * (PROMPT_TOKENS + 2)}]
    with pytest.raises(BackendError, match=r"model 'short': the prompt has \d+ tokens, more than"):
        await backend.generate(GenerationRequest(too_long, n=1, temperature=1.0, max_tokens=4))
    await backend.aclose()
