"""GGUF pool entries, stop strings and end-of-turn stops of the in-process backend."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from slm_mux.backends import GenerationRequest, TransformersBackend
from slm_mux.backends.transformers_local import (
    end_of_turn_ids,
    gguf_source,
    plain_prompt,
    require_gguf_extra,
)
from slm_mux.demo import POOL_DIR
from slm_mux.errors import BackendError, InputError
from slm_mux.pool import members_of, pool_from_dict
from slm_mux.testing.tiny_model import build_tiny_model

torch = pytest.importorskip("torch", reason="the transformers backend needs the local extra")
transformers = pytest.importorskip("transformers", reason="needs the local extra")

TRAINED = POOL_DIR / "tiny-mul"
"""Writes ``23*7=161 161+5=166 #### 166`` and ends with its stop token."""


def request(text: str, n: int = 3, temperature: float = 0.3) -> GenerationRequest:
    return GenerationRequest(
        [{"role": "user", "content": text}], n=n, temperature=temperature, max_tokens=40, seed=0
    )


def write_gguf(path: Path, architecture: str) -> Path:
    gguf = pytest.importorskip("gguf", reason="writing a GGUF file needs the gguf extra")
    numpy = pytest.importorskip("numpy")
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", numpy.zeros((4, 4), numpy.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_path_or_a_folder_and_file_names_the_gguf_file() -> None:
    assert gguf_source("/m/SmolLM2.Q4_1.gguf", None) == ("/m", "SmolLM2.Q4_1.gguf")
    assert gguf_source("org/repo", "model.gguf") == ("org/repo", "model.gguf")
    assert gguf_source("/m/checkpoint", None) == ("/m/checkpoint", None)


def test_a_missing_gguf_file_is_one_line_at_pool_load(tmp_path: Path) -> None:
    entry = {"name": "smol", "backend": "transformers", "path": "./absent.gguf"}
    with pytest.raises(InputError) as caught:
        members_of(pool_from_dict({"models": [entry]}, base_dir=tmp_path))
    assert str(caught.value) == f"model 'smol': no GGUF file at {tmp_path / 'absent.gguf'}"


def test_a_missing_package_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def without_accelerate(name: str, *args: Any) -> Any:
        return None if name == "accelerate" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_accelerate)
    with pytest.raises(InputError) as caught:
        require_gguf_extra("smol")
    assert str(caught.value) == (
        "model 'smol' loads a .gguf file, which needs accelerate: pip install 'slm-mux[gguf]'"
    )


async def test_an_unsupported_architecture_is_one_line(tmp_path: Path) -> None:
    pytest.importorskip("accelerate", reason="loading a GGUF file needs the gguf extra")
    path = write_gguf(tmp_path / "odd.gguf", "nonesuch")
    backend = TransformersBackend("odd", str(path))
    with pytest.raises(BackendError) as caught:
        await backend.warm()
    message = str(caught.value)
    assert message.startswith(f"model 'odd': cannot load {str(path)!r}: ")
    assert "architecture nonesuch is not supported" in message and "\n" not in message


async def test_stop_strings_end_samples_early_and_are_cut_from_the_text() -> None:
    plain = TransformersBackend("tiny", str(TRAINED))
    stopped = TransformersBackend("tiny", str(TRAINED), stop=["####"])
    full = await plain.generate(request("23*7+5"))
    cut = await stopped.generate(request("23*7+5"))
    for whole, short in zip(full, cut, strict=True):
        assert "####" in whole.text and whole.text.startswith(short.text)
        assert "####" not in short.text and short.text.strip()
        assert short.finish_reason == "stop"
        assert (short.completion_tokens or 0) < (whole.completion_tokens or 0)
    await plain.aclose()
    await stopped.aclose()


def test_the_end_of_turn_token_is_read_from_the_chat_template(tmp_path: Path) -> None:
    tokenizer = transformers.AutoTokenizer.from_pretrained(TRAINED)  # "A: ...<eos>"
    assert end_of_turn_ids(tokenizer) == [tokenizer.convert_tokens_to_ids("<eos>")]
    tiny = transformers.AutoTokenizer.from_pretrained(build_tiny_model(tmp_path / "t"))
    assert end_of_turn_ids(tiny) == [tiny.convert_tokens_to_ids("<|end|>")]
    tiny.chat_template = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    assert end_of_turn_ids(tiny) == []  # a newline is no special token
    tiny.chat_template = None
    assert end_of_turn_ids(tiny) == []


def test_a_base_model_reads_the_plain_template() -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]
    assert plain_prompt(messages) == "Be brief.\n\n2+2?\n\n"


def test_stop_strings_and_gguf_files_change_the_settings_hash() -> None:
    entry = {"name": "m", "backend": "transformers", "path": "org/repo"}
    variants: list[dict[str, Any]] = [{}, {"stop": []}, {"stop": ["\n\n"]}, {"gguf_file": "m.gguf"}]
    hashes = {
        pool_from_dict({"models": [{**entry, **more}]})
        .models[0]
        .settings_hash(pool_from_dict({"models": [entry]}).defaults)
        for more in variants
    }
    assert len(hashes) == 3  # an empty stop list is no stop list
