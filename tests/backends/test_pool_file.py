"""Pool files: parsing YAML and TOML, one-line errors, settings, building backends."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import asdict
from pathlib import Path

import pytest

from slm_mux.backends import OpenAICompatibleBackend, ScriptedBackend, TransformersBackend
from slm_mux.backends.config import Defaults, GenerationSettings
from slm_mux.backends.openai.config import OpenAIConfig
from slm_mux.backends.transformers_local import TransformersConfig
from slm_mux.cli import main
from slm_mux.errors import FormatError, InputError
from slm_mux.pool import (
    load_pool,
    members_of,
    pool_from_dict,
)
from slm_mux.testing import FakeServerConfig, run_fake_server

POOL_YAML = """\
defaults: {temperature: 0.3, k: 3, max_tokens: 1024, seed: 0}
models:
  - name: qwen-1.5b
    backend: openai
    base_url: http://127.0.0.1:8000/v1
    model: Qwen/Qwen2.5-1.5B-Instruct
    headers: {X-Foo: bar}
    max_concurrency: 8
    price: {input_per_million: 0.1, output_per_million: 0.2}
    temperature: 0.7
  - name: tiny
    backend: transformers
    path: ./models/tiny
    k: 5
  - name: fake
    backend: scripted
    script: {"*": ["#### 4", "#### 5"]}
    validation_accuracy: 0.5
"""

POOL_TOML = """\
[defaults]
temperature = 0.3
k = 3
max_tokens = 1024
seed = 0

[[models]]
name = "qwen-1.5b"
backend = "openai"
base_url = "http://127.0.0.1:8000/v1"
model = "Qwen/Qwen2.5-1.5B-Instruct"
headers = { X-Foo = "bar" }
max_concurrency = 8
price = { input_per_million = 0.1, output_per_million = 0.2 }
temperature = 0.7

[[models]]
name = "tiny"
backend = "transformers"
path = "./models/tiny"
k = 5

[[models]]
name = "fake"
backend = "scripted"
script = { "*" = ["#### 4", "#### 5"] }
validation_accuracy = 0.5
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def test_yaml_and_toml_describe_the_same_pool(tmp_path: Path) -> None:
    from_yaml = load_pool(write(tmp_path, "pool.yaml", POOL_YAML))
    from_toml = load_pool(write(tmp_path, "pool.toml", POOL_TOML))
    assert from_yaml == from_toml
    assert from_yaml.names == ["qwen-1.5b", "tiny", "fake"]
    qwen = from_yaml.model("qwen-1.5b")
    assert isinstance(qwen, OpenAIConfig)
    assert (qwen.base_url, qwen.headers, qwen.max_concurrency) == (
        "http://127.0.0.1:8000/v1",
        {"X-Foo": "bar"},
        8,
    )
    assert from_yaml.model("fake").validation_accuracy == 0.5
    # ./ paths are relative to the pool file.
    tiny = from_yaml.model("tiny")
    assert isinstance(tiny, TransformersConfig)
    assert tiny.path == str(tmp_path / "models" / "tiny")


def test_effective_settings_override_defaults(tmp_path: Path) -> None:
    pool = load_pool(write(tmp_path, "pool.yaml", POOL_YAML))
    assert pool.model("qwen-1.5b").settings(pool.defaults) == GenerationSettings(0.7, 3, 1024, 0)
    assert pool.model("tiny").settings(pool.defaults) == GenerationSettings(0.3, 5, 1024, 0)


def test_defaults_are_the_papers() -> None:
    pool = pool_from_dict(
        {"models": [{"name": "f", "backend": "scripted", "script": {"*": ["x"]}}]}
    )
    assert pool.models[0].settings(pool.defaults) == GenerationSettings(0.3, 3, 1024, 0)


OPENAI = {"name": "q", "backend": "openai", "base_url": "http://h/v1", "model": "m"}


@pytest.mark.parametrize(
    ("change", "same"),
    [
        ({"temperature": 0.9}, False),
        ({"max_tokens": 10}, False),
        ({"seed": 7}, False),
        ({"top_p": 0.9}, False),
        ({"top_p": 1.0}, True),  # the default: stores from before the key keep their hash
        ({"model": "other"}, False),
        ({"k": 9}, True),
        ({"base_url": "http://elsewhere:9000/v1"}, True),
        ({"headers": {"X-Team": "a"}}, True),
        ({"api_key_env": "SOME_KEY", "max_concurrency": 2, "timeout_s": 5}, True),
        ({"name": "renamed"}, True),
    ],
)
def test_settings_hash_covers_what_changes_samples(change: dict[str, object], same: bool) -> None:
    base = pool_from_dict({"models": [OPENAI]})
    changed = pool_from_dict({"models": [{**OPENAI, **change}]})
    first = base.models[0].settings_hash(base.defaults)
    assert len(first) == 64
    assert (first == changed.models[0].settings_hash(changed.defaults)) is same


def test_the_hash_without_top_p_is_the_one_before_the_key_existed() -> None:
    pool = pool_from_dict({"models": [OPENAI]})
    payload = {"backend": "openai", "model": "m", "temperature": 0.3, "max_tokens": 1024, "seed": 0}
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    assert pool.models[0].settings_hash(pool.defaults) == digest


def test_settings_hash_follows_the_defaults() -> None:
    one = pool_from_dict({"models": [OPENAI]})
    two = pool_from_dict({"defaults": {"temperature": 0.5}, "models": [OPENAI]})
    assert one.models[0].settings_hash(one.defaults) != two.models[0].settings_hash(two.defaults)


BAD_POOLS = [
    (
        {"models": [OPENAI, {**OPENAI, "name": "b", "temprature": 0.5}]},
        "models[1].temprature: unknown key",
    ),
    ({"models": [OPENAI], "default": {}}, "default: unknown key"),
    (
        {"models": [{**OPENAI, "price": {"input_per_million": 1, "output": 2}}]},
        "models[0].price.output: unknown key (and 1 more)",
    ),
    (
        {"models": [OPENAI, {**OPENAI, "name": "b"}, {**OPENAI, "name": "q"}]},
        "models[2].name: duplicate model name 'q'",
    ),
    (
        {"models": [{"name": "q", "backend": "openai", "model": "m"}]},
        "models[0].base_url: required",
    ),
    ({"models": [{"name": "t", "backend": "transformers"}]}, "models[0].path: required"),
    (
        {"models": [{"name": "s", "backend": "scripted", "script": {}, "path": "x"}]},
        "models[0].path: not used by backend 'scripted'",
    ),
    (
        {"models": [{**OPENAI, "backend": "vllm"}]},
        "models[0].backend: unknown backend 'vllm'; choose from openai, scripted, transformers",
    ),
    (
        {"models": [{"name": "q", "base_url": "http://h/v1"}]},
        "models[0].backend: missing key; choose from openai, scripted, transformers",
    ),
    ({"models": [{**OPENAI, "script": {}}]}, "models[0].script: not used by backend 'openai'"),
    ({"models": [{**OPENAI, "headers": []}]}, "models[0].headers: Input should be a valid dict"),
    ({"models": [{**OPENAI, "k": 0}]}, "models[0].k: Input should be greater than or equal to 1"),
    ({"models": [{"backend": "openai"}]}, "models[0].name: missing key"),
    ({"models": []}, "models: List should have at least 1 item"),
    ({"defaults": {"k": 3}}, "models: missing key"),
    ([OPENAI], "expected a mapping with a 'models' list"),
]


@pytest.mark.parametrize(("data", "message"), BAD_POOLS)
def test_errors_name_the_file_and_the_key(data: object, message: str) -> None:
    with pytest.raises(InputError) as caught:
        pool_from_dict(data, source="pool.yaml")
    text = str(caught.value)
    assert text.startswith(f"pool.yaml: {message}")
    assert "\n" not in text


def test_unknown_key_in_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "pool.yaml", POOL_YAML.replace("    k: 5", "    temprature: 0.5"))
    with pytest.raises(InputError) as caught:
        load_pool("pool.yaml")
    assert str(caught.value) == "pool.yaml: models[1].temprature: unknown key"


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("pool.yaml", "models:\n  - name: a\n   backend: [\n", "pool.yaml:3: "),
        ("pool.toml", "[defaults]\nk = 3\nk = 4\n", "pool.toml:3: "),
        ("pool.toml", "[defaults]\nk = 3\nmodels = [\n", "pool.toml: Invalid value"),
        ("pool.toml", "[defaults\n", "pool.toml:1: "),
    ],
)
def test_malformed_files_are_format_errors_with_a_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, text: str, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, name, text)
    with pytest.raises(FormatError) as caught:
        load_pool(name)
    assert str(caught.value).startswith(message)


def test_other_file_problems(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"must end in \.yaml, \.yml or \.toml$"):
        load_pool(write(tmp_path, "pool.json", "{}"))
    with pytest.raises(InputError, match=r"cannot read pool file: No such file"):
        load_pool(tmp_path / "absent.yaml")
    with pytest.raises(InputError, match=r"expected a mapping"):
        load_pool(write(tmp_path, "empty.yml", ""))


def test_each_entry_builds_its_backend(tmp_path: Path) -> None:
    pytest.importorskip("transformers", reason="the transformers backend needs the local extra")
    pool = load_pool(write(tmp_path, "pool.yaml", POOL_YAML))
    qwen, tiny, fake = (model.build() for model in pool.models)
    assert isinstance(qwen, OpenAICompatibleBackend)
    assert (qwen.name, qwen.base_urls, qwen.model) == (
        "qwen-1.5b",
        ["http://127.0.0.1:8000/v1"],
        "Qwen/Qwen2.5-1.5B-Instruct",
    )
    assert qwen.price is not None and qwen.price.output_per_million == 0.2
    assert isinstance(tiny, TransformersBackend) and tiny.path == str(tmp_path / "models/tiny")
    assert isinstance(fake, ScriptedBackend) and fake.script == {"*": ["#### 4", "#### 5"]}


def test_a_missing_api_key_variable_is_an_error_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SLM_MUX_POOL_KEY", raising=False)
    pool = pool_from_dict({"models": [{**OPENAI, "api_key_env": "SLM_MUX_POOL_KEY"}]})
    with pytest.raises(InputError) as caught:
        pool.models[0].build()
    assert str(caught.value) == "model 'q': environment variable SLM_MUX_POOL_KEY is not set"


SECRET = "sk-very-secret-4711"


def test_the_api_key_is_sent_but_never_stored_logged_hashed_or_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SLM_MUX_POOL_KEY", SECRET)
    data = tmp_path / "q.jsonl"
    data.write_text('{"id": "q1", "question": "Say hi", "reference": "hi"}\n')
    for required, db in ((SECRET, "ok.db"), ("another-key", "refused.db")):
        with run_fake_server(FakeServerConfig(api_key=required)) as (url, server):
            pool_file = write(
                tmp_path,
                "pool.yaml",
                f"models:\n  - {{name: q, backend: openai, base_url: '{url}', model: m,"
                " api_key_env: SLM_MUX_POOL_KEY, max_retries: 0}\n",
            )
            argv = ["collect", "--pool", str(pool_file), "--task", "exact", "--data", str(data),
                    "--store", str(tmp_path / db), "--samples", "2", "--quiet"]  # fmt: skip
            status = main(argv)
            sent = {r.headers["authorization"] for r in server.requests}
        assert sent == {f"Bearer {SECRET}"}
        assert status == (0 if required == SECRET else 3)
        assert SECRET.encode() not in (tmp_path / db).read_bytes()
    logs = capsys.readouterr()
    assert "401" in logs.err  # the refused run says why, without the key
    assert SECRET not in logs.out + logs.err
    model = load_pool(pool_file).models[0]
    backend = model.build()
    hashed = {"identity": model.identity(), "settings": asdict(model.settings(Defaults()))}
    for text in (repr(model), repr(backend), json.dumps(hashed), model.settings_hash(Defaults())):
        assert SECRET not in text


def test_members_of_picks_models_and_overrides_k(tmp_path: Path) -> None:
    pool = load_pool(write(tmp_path, "pool.yaml", POOL_YAML))
    members = members_of(pool, models=["fake", "qwen-1.5b"], k=4)
    assert [(m.name, m.k, m.temperature) for m in members] == [
        ("fake", 4, 0.3),
        ("qwen-1.5b", 4, 0.7),
    ]
    assert members[0].settings_hash == pool.model("fake").settings_hash(pool.defaults)
    if importlib.util.find_spec("transformers") is not None:  # 'tiny' needs the local extra
        assert [m.k for m in members_of(pool)] == [3, 5, 3]
    with pytest.raises(InputError, match=r"^unknown model 'gpt'; the pool has qwen-1.5b, tiny"):
        members_of(pool, models=["gpt"])


def test_top_p_reaches_each_member() -> None:
    scripted = {"backend": "scripted", "script": {"*": ["x"]}}
    pool = pool_from_dict(
        {
            "defaults": {"top_p": 0.8},
            "models": [{"name": "a", **scripted}, {"name": "b", "top_p": 0.5, **scripted}],
        }
    )
    assert [member.top_p for member in members_of(pool)] == [0.8, 0.5]
    with pytest.raises(InputError, match="top_p"):
        pool_from_dict({"defaults": {"top_p": 0}, "models": [{"name": "a", **scripted}]})
