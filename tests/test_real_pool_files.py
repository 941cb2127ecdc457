"""The pool files ``scripts/fetch_real_pool.py`` writes load as written, without weights:
the llama.cpp pool pins the server's samplers off and stops each model as in process."""

from __future__ import annotations

from pathlib import Path

from tests.script_modules import load_script

from slm_mux.backends.openai.config import OpenAIConfig
from slm_mux.backends.transformers_local import TransformersConfig
from slm_mux.pool import load_pool

FETCH = load_script("fetch_real_pool")


def test_both_pool_files_load_and_sample_alike(tmp_path: Path) -> None:
    files = {model.name: tmp_path / model.file for model in FETCH.MODELS}
    (tmp_path / "in.yaml").write_text(FETCH.inprocess_pool(files))
    (tmp_path / "llama.yaml").write_text(FETCH.llamacpp_pool())
    in_process, llama = load_pool(tmp_path / "in.yaml"), load_pool(tmp_path / "llama.yaml")
    assert in_process.names == llama.names == [model.name for model in FETCH.MODELS]
    for local, served in zip(in_process.models, llama.models, strict=True):
        assert isinstance(local, TransformersConfig) and isinstance(served, OpenAIConfig)
        assert local.settings(in_process.defaults) == served.settings(llama.defaults)
        pinned = served.server_sampling()
        assert pinned.top_p and served.top_p == 1
        assert {key: pinned.fields[key] for key in ("top_k", "min_p", "repeat_penalty")} == {
            "top_k": 0,
            "min_p": 0,
            "repeat_penalty": 1,
        }
        assert local.stop == list(pinned.fields.get("stop", []))
    gemma = llama.model("gemma3-270m")
    assert isinstance(gemma, OpenAIConfig) and gemma.stop == ["\n\n"]  # stopped at a blank line
