"""A pool entry pins the sampling settings its server uses (issue 19 §2): named keys,
``stop`` and ``extra_body`` reach the request body; keys slm-mux sets are refused; the in-process
backend refuses the server-only keys."""

from __future__ import annotations

from typing import Any

import pytest

from slm_mux.errors import InputError
from slm_mux.members import close_members
from slm_mux.pool import members_of, pool_from_dict
from slm_mux.testing import FakeServer, run_fake_server

MESSAGES = [{"role": "user", "content": "2+2?"}]


def _pool(url: str, defaults: dict[str, Any] | None = None, **entry: Any) -> Any:
    model = {"name": "m", "backend": "openai", "base_url": url, "model": "m", **entry}
    return pool_from_dict({"defaults": defaults or {}, "models": [model]})


async def _first_body(url: str, server: FakeServer, pool: Any) -> dict[str, Any]:
    members = members_of(pool)
    try:
        (member,) = members
        await member.backend.generate(member.request(MESSAGES, 1, 0))
    finally:
        await close_members(members)
    return server.requests[-1].body


async def test_pinned_settings_arrive_in_every_request_body() -> None:
    with run_fake_server() as (url, server):
        pool = _pool(
            url,
            top_p=1,
            top_k=0,
            min_p=0,
            repeat_penalty=1,
            stop=["\n\n", "Question:"],
            extra_body={"repetition_penalty": 1.0, "cache_prompt": False},
        )
        body = await _first_body(url, server, pool)
    assert body["top_p"] == 1
    assert body["stop"] == ["\n\n", "Question:"]
    assert (body["top_k"], body["min_p"], body["repeat_penalty"]) == (0, 0, 1)
    assert (body["repetition_penalty"], body["cache_prompt"]) == (1.0, False)
    assert (body["model"], body["temperature"]) == ("m", 0.3)  # ours, untouched


async def test_nothing_pinned_sends_no_sampling_field() -> None:
    with run_fake_server() as (url, server):
        body = await _first_body(url, server, _pool(url))
    assert not {"top_p", "top_k", "min_p", "repeat_penalty", "stop"} & set(body)


async def test_a_top_p_set_in_defaults_is_sent_even_at_one() -> None:
    with run_fake_server() as (url, server):
        body = await _first_body(url, server, _pool(url, defaults={"top_p": 1}))
    assert body["top_p"] == 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"temperature": 0.9}, "models[0].extra_body.temperature: model 'm': slm-mux sets it"),
        ({"n": 2}, "models[0].extra_body.n: model 'm': slm-mux sets it"),
        ({"top_k": 5}, "models[0].extra_body.top_k: model 'm': use the key top_k"),
        ({"stop": ["x"]}, "models[0].extra_body.stop: model 'm': use the key stop"),
        ({"when": float("nan")}, "models[0].extra_body.when: model 'm': not a JSON value"),
    ],
)
def test_extra_body_keys_that_slm_mux_sets_are_refused_naming_the_key(
    extra: dict[str, Any], message: str
) -> None:
    with pytest.raises(InputError) as refused:
        _pool("http://127.0.0.1:9/v1", extra_body=extra)
    assert str(refused.value).startswith(f"pool: {message}")
    assert "\n" not in str(refused.value)


def test_an_empty_stop_string_is_refused() -> None:
    with pytest.raises(InputError) as refused:
        _pool("http://127.0.0.1:9/v1", stop=["\n\n", ""])
    assert str(refused.value) == "pool: models[0].stop: model 'm': an empty stop string"


def test_a_yaml_date_in_extra_body_is_refused(tmp_path: Any) -> None:
    from slm_mux.pool import load_pool

    path = tmp_path / "pool.yaml"
    path.write_text(
        "models:\n  - {name: m, backend: openai, base_url: 'http://h/v1', model: m,\n"
        "     extra_body: {since: 2024-01-01}}\n"
    )
    with pytest.raises(InputError, match=r"extra_body\.since: model 'm': not a JSON value"):
        load_pool(path)


@pytest.mark.parametrize("key", ["top_k", "min_p", "repeat_penalty", "extra_body"])
@pytest.mark.parametrize("backend", ["transformers", "scripted"])
def test_in_process_backends_refuse_the_server_keys(key: str, backend: str) -> None:
    entry = {"path": "/abs/tiny"} if backend == "transformers" else {"script": {"*": ["x"]}}
    value = {"a": 1} if key == "extra_body" else 1
    with pytest.raises(InputError) as refused:
        pool_from_dict({"models": [{"name": "t", "backend": backend, key: value, **entry}]})
    assert str(refused.value) == f"pool: models[0].{key}: not used by backend {backend!r}"


def test_pinning_changes_the_settings_hash_and_nothing_else_does() -> None:
    url = "http://h/v1"
    plain = _pool(url)
    before = plain.models[0].settings_hash(plain.defaults)
    # top_p is hashed as a setting (1 left out, so older stores keep their hash).
    assert _pool(url, top_p=1).models[0].identity() == {"model": "m"}
    pins: list[dict[str, Any]] = [{"top_k": 0}, {"min_p": 0.0}, {"repeat_penalty": 1.0}]
    pins += [{"stop": ["\n\n"]}, {"extra_body": {"x": 1}}]
    for pinned in pins:
        pool = _pool(url, **pinned)
        assert pool.models[0].settings_hash(pool.defaults) != before, pinned
