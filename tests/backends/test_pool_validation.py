"""Pool files are checked strictly when they load: server URLs, types, bounds, names,
and nesting, each a one-line error naming the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from slm_mux.backends.config import Defaults
from slm_mux.backends.openai.config import OpenAIConfig
from slm_mux.defaults import MAX_K, MAX_SEED
from slm_mux.errors import FormatError, InputError
from slm_mux.pool import load_pool, pool_from_dict

OPENAI = {"name": "q", "backend": "openai", "base_url": "http://h:8000/v1", "model": "m"}


def refusal(data: object) -> str:
    with pytest.raises(InputError) as caught:
        pool_from_dict(data, source="pool.yaml")
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://h:99999/v1", "the port must be a number from 1 to 65535"),
        ("http://h:0/v1", "the port must be a number from 1 to 65535"),
        ("http://[::1/v1", "not a valid URL: invalid ipv6 url"),
        ("127.0.0.1:8000/v1", "must start with http:// or https://"),
        ("h:8000/v1", "must start with http:// or https://"),
        ("ftp://h/v1", "must start with http:// or https://"),
        ("", "must start with http:// or https://"),
        ("http:///v1", "needs a host, as in http://host:8000/v1"),
    ],
)
def test_a_bad_server_url_is_refused_at_load(url: str, reason: str) -> None:
    assert refusal({"models": [{**OPENAI, "base_url": url}]}) == (
        f"pool.yaml: models[0].base_url: model 'q': {reason}"
    )
    replicas = {**OPENAI, "base_url": None, "base_urls": ["http://a/v1", {"url": url}]}
    assert refusal({"models": [replicas]}) == (
        f"pool.yaml: models[0].base_urls[1]: model 'q': {reason}"
    )


def test_a_bad_url_with_credentials_never_shows_the_password() -> None:
    message = refusal({"models": [{**OPENAI, "base_url": "http://u:hunter2@h:99999/v1"}]})
    assert "hunter2" not in message


def test_url_credentials_are_accepted_and_stay_out_of_the_hash() -> None:
    signed = pool_from_dict({"models": [{**OPENAI, "base_url": "http://u:hunter2@h:8000/v1"}]})
    plain = pool_from_dict({"models": [OPENAI]})
    (entry,) = signed.models
    assert isinstance(entry, OpenAIConfig)
    assert entry.settings_hash(Defaults()) == plain.models[0].settings_hash(Defaults())
    assert "hunter2" not in repr(entry.build())


def test_url_credentials_and_an_api_key_variable_are_one_or_the_other() -> None:
    entry = {**OPENAI, "base_url": "http://u:pw@h/v1", "api_key_env": "KEY"}
    assert refusal({"models": [entry]}) == (
        "pool.yaml: models[0].base_url: model 'q': "
        "give api_key_env or credentials in the URL, not both"
    )


def test_the_same_server_with_and_without_credentials_is_listed_twice() -> None:
    entry = {**OPENAI, "base_url": None, "base_urls": ["http://h/v1", "http://u:pw@h/v1"]}
    assert refusal({"models": [entry]}) == (
        "pool.yaml: models[0].base_urls[1]: model 'q': http://h/v1 is listed twice"
    )


def test_k_and_seed_have_the_clis_bounds() -> None:
    assert refusal({"defaults": {"k": 1_000_000_000_000}, "models": [OPENAI]}).startswith(
        "pool.yaml: defaults.k: Input should be less than or equal to 1000"
    )
    assert refusal({"models": [{**OPENAI, "k": MAX_K + 1}]}).startswith("pool.yaml: models[0].k:")
    assert refusal({"defaults": {"seed": -1}, "models": [OPENAI]}).startswith(
        "pool.yaml: defaults.seed: Input should be greater than or equal to 0"
    )
    assert refusal({"models": [{**OPENAI, "seed": 2**32}]}).startswith(
        "pool.yaml: models[0].seed: Input should be less than or equal to 4294967295"
    )
    pool = pool_from_dict({"defaults": {"k": MAX_K, "seed": MAX_SEED}, "models": [OPENAI]})
    assert (pool.defaults.k, pool.defaults.seed) == (MAX_K, MAX_SEED)


@pytest.mark.parametrize(
    ("where", "key", "value", "message"),
    [
        ("defaults", "k", True, "defaults.k: Input should be a valid integer (got True)"),
        ("defaults", "k", 3.0, "defaults.k: Input should be a valid integer (got 3.0)"),
        ("model", "k", "3", "models[0].k: Input should be a valid integer (got '3')"),
        (
            "defaults",
            "temperature",
            "0.5",
            "defaults.temperature: Input should be a valid number (got '0.5')",
        ),
        ("defaults", "seed", 1e23, "defaults.seed: Input should be a valid integer (got 1e+23)"),
        ("model", "max_concurrency", 8.0, "models[0].max_concurrency: Input should be a valid"),
        ("model", "supports_n", "yes", "models[0].supports_n: Input should be a valid boolean"),
        ("model", "timeout_s", float("nan"), "models[0].timeout_s: Input should be a finite"),
    ],
)
def test_types_are_strict(where: str, key: str, value: object, message: str) -> None:
    data: dict[str, object] = {"models": [{**OPENAI, key: value}] if where == "model" else [OPENAI]}
    if where == "defaults":
        data["defaults"] = {key: value}
    assert refusal(data).startswith(f"pool.yaml: {message}")


def test_an_integer_is_still_a_float() -> None:
    pool = pool_from_dict({"defaults": {"temperature": 1}, "models": [{**OPENAI, "timeout_s": 5}]})
    assert pool.defaults.temperature == 1.0


@pytest.mark.parametrize("name", ["a,b", "a\nb", "tab\there", "nul\x00"])
def test_a_model_name_with_commas_or_line_breaks_is_refused(name: str) -> None:
    assert refusal({"models": [{**OPENAI, "name": name}]}) == (
        "pool.yaml: models[0].name: a model name cannot hold commas, line breaks or control "
        f"characters (got {name!r})"
    )


def test_names_with_spaces_and_other_scripts_are_fine() -> None:
    pool = pool_from_dict({"models": [{**OPENAI, "name": "Qwen 2.5 · 小"}]})
    assert pool.names == ["Qwen 2.5 · 小"]


DEEP = 5000


@pytest.mark.parametrize(
    ("name", "text"),
    [
        pytest.param("deep.yaml", "models: " + "[" * DEEP + "]" * DEEP + "\n", id="yaml"),
        pytest.param("deep.toml", "models = " + "[" * DEEP + "]" * DEEP + "\n", id="toml"),
        pytest.param(
            "script.yaml",
            "models:\n  - {name: s, backend: scripted, script: "
            + "{a: " * DEEP
            + "1"
            + "}" * DEEP
            + "}\n",
            id="yaml-in-a-model",
        ),
    ],
)
def test_a_deeply_nested_pool_is_one_line_naming_the_file(
    tmp_path: Path, name: str, text: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(FormatError) as caught:
        load_pool(path)
    assert str(caught.value) == f"{path}: nested too deeply to be a pool file"
