"""An in-process Hugging Face model (needs the ``local`` extra: torch, transformers).

torch and transformers are imported only when a model loads. The model loads
on the first request; every generation then runs in a worker thread, so the
event loop stays free.

Determinism: generation runs under one process-wide lock, and with a seed
torch's RNG is seeded for the call (and restored afterwards), so equal seeds
give equal samples for the same model, device, dtype, thread count and
library versions.
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from slm_mux.backends.base import (
    Batch,
    Completion,
    GenerationRequest,
    Usage,
    gather_stream,
    split_tokens,
)
from slm_mux.backends.config import ModelBase
from slm_mux.errors import BackendError, InputError

_GENERATE_LOCK = threading.Lock()
"""Serializes loading and generation: torch's RNG and CPU threads are process-wide."""

DTYPES = ("auto", "float32", "float16", "bfloat16")


def require_local_extra(name: str, modules: Sequence[str] = ("torch", "transformers")) -> None:
    """Raise ``InputError`` for model ``name`` unless ``modules`` are importable."""
    if any(importlib.util.find_spec(module) is None for module in modules):
        raise InputError(f"model {name!r} needs the local extra: pip install 'slm-mux[local]'")


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


class TransformersBackend:
    """A causal LM from a local directory or hub id, sampled with ``generate``.

    ``device`` is a torch device (``"cpu"``, ``"cuda:0"``, ...), ``dtype`` one
    of :data:`DTYPES` and ``threads`` sets torch's (process-wide) CPU thread
    count when the model loads. The prompt is the tokenizer's chat template
    with the generation prompt added, or the messages' contents joined by
    blank lines when there is none. All ``n`` samples come from one batched
    ``generate``; temperature 0 decodes greedily once and repeats the result.
    Prompt tokens are split across the samples, as for the other backends.
    """

    def __init__(
        self,
        name: str,
        path: str,
        *,
        device: str = "cpu",
        dtype: str = "auto",
        threads: int | None = None,
    ) -> None:
        require_local_extra(name)
        if dtype not in DTYPES:
            raise InputError(f"model {name!r}: dtype {dtype!r} is not one of {', '.join(DTYPES)}")
        self.name = name
        self.path = path
        self.device = device
        self.dtype = dtype
        self.threads = threads
        self.usage = Usage()
        self._model: Any = None
        self._tokenizer: Any = None

    def __repr__(self) -> str:
        return (
            f"TransformersBackend(name={self.name!r}, path={self.path!r}, device={self.device!r})"
        )

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        """Exactly ``request.n`` sampled completions, or raise ``BackendError``."""
        return await gather_stream(self.stream(request), request.n)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Batch]:
        """All ``request.n`` samples in one batch: they come from one batched ``generate``."""
        if request.n < 1:
            raise ValueError("n must be at least 1")
        completions = await asyncio.to_thread(self._generate, request)
        self.usage.add(completions)
        yield list(enumerate(completions))

    async def aclose(self) -> None:
        """Drop the model and tokenizer (their memory is freed once unreferenced)."""
        self._model = None
        self._tokenizer = None

    def _load(self) -> tuple[Any, Any]:
        """The model and tokenizer, loaded on first use (call with the lock held)."""
        if self._model is None:
            import torch
            import transformers

            # Loading bars would tear through slm-mux's own progress display.
            transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
            if self.threads is not None:
                torch.set_num_threads(self.threads)
            dtype_key = (
                "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
            )
            dtype = self.dtype if self.dtype == "auto" else getattr(torch, self.dtype)
            try:
                tokenizer = transformers.AutoTokenizer.from_pretrained(self.path)
                model: Any = transformers.AutoModelForCausalLM.from_pretrained(
                    self.path, **{dtype_key: dtype}
                )
            except (OSError, ValueError) as error:
                raise BackendError(
                    f"model {self.name!r}: cannot load {self.path!r}: {_one_line(error)}"
                ) from None
            tokenizer.padding_side = "left"
            if tokenizer.pad_token_id is None:
                tokenizer.pad_token = tokenizer.eos_token
            self._tokenizer = tokenizer
            self._model = model.to(self.device).eval()
        return self._model, self._tokenizer

    def _prompt_ids(self, tokenizer: Any, messages: list[dict[str, str]]) -> Any:
        """Token ids of the prompt, shape ``[1, length]``, on the model's device."""
        if tokenizer.chat_template:
            text = _render_chat(tokenizer, messages)
            special = False  # the template writes its own special tokens
        else:
            text = "\n\n".join(m.get("content", "") for m in messages) + "\n\n"
            special = True
        encoded = tokenizer(text, return_tensors="pt", add_special_tokens=special)
        return encoded["input_ids"].to(self.device)

    def _new_tokens(self, model: Any, prompt_length: int, max_tokens: int) -> int:
        """``max_tokens``, capped to the room the model's context leaves after the prompt.

        A prompt that fills the context is a :class:`BackendError`: the model
        cannot read it, and a silently garbled answer would pass for its own.
        """
        context = getattr(model.config, "max_position_embeddings", None)
        if not isinstance(context, int):
            return max_tokens
        if prompt_length >= context:
            raise BackendError(
                f"model {self.name!r}: the prompt has {prompt_length} tokens, more than its "
                f"context of {context} positions leaves room for"
            )
        return min(max_tokens, context - prompt_length)

    def _generate(self, request: GenerationRequest) -> list[Completion]:
        import torch

        with _GENERATE_LOCK:
            model, tokenizer = self._load()
            prompt = self._prompt_ids(tokenizer, request.messages)
            sample = request.temperature > 0
            options: dict[str, Any] = {
                "max_new_tokens": self._new_tokens(model, prompt.shape[1], request.max_tokens),
                "do_sample": sample,
                "num_return_sequences": request.n if sample else 1,
                "pad_token_id": tokenizer.pad_token_id,
                "attention_mask": torch.ones_like(prompt),
            }
            if sample:
                options["temperature"] = request.temperature
            started = time.monotonic()
            try:
                with (
                    torch.random.fork_rng(enabled=request.seed is not None),
                    torch.inference_mode(),
                ):
                    if request.seed is not None:
                        torch.manual_seed(request.seed)
                    output = model.generate(prompt, **options)
            except (RuntimeError, ValueError) as error:
                raise BackendError(
                    f"model {self.name!r}: generation failed: {_one_line(error)}"
                ) from None
            latency = time.monotonic() - started
        eos = model.generation_config.eos_token_id
        stop_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        rows = output[:, prompt.shape[1] :].tolist()
        if not sample:
            rows = rows * request.n
        prompt_shares = split_tokens(int(prompt.shape[1]), [1] * request.n)
        completions = []
        for row, prompt_share in zip(rows, prompt_shares, strict=True):
            end = next((i for i, token in enumerate(row) if token in stop_ids), None)
            kept = row if end is None else row[: end + 1]
            text = tokenizer.decode(kept, skip_special_tokens=True)
            finish = "length" if end is None else "stop"
            completions.append(Completion(text, prompt_share, len(kept), latency, finish))
        return completions


def _render_chat(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The prompt text through the model's chat template.

    Many templates drop or refuse a ``system`` message (the bundled tiny
    models' writes only user and assistant turns; Gemma's raises). Then the
    system text is put at the head of the first user message instead, so the
    model still reads every instruction it was given.
    """
    from jinja2 import TemplateError

    systems = [m["content"] for m in messages if m["role"] == "system"]
    try:
        text: str = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        if all(system in text for system in systems):
            return text
    except TemplateError:  # also what a template's own raise_exception raises
        if not systems:
            raise
    rest = [m for m in messages if m["role"] != "system"]
    head = "\n\n".join(systems)
    first_user = next((i for i, m in enumerate(rest) if m["role"] == "user"), None)
    if first_user is None:
        rest.insert(0, {"role": "user", "content": head})
    else:
        merged = f"{head}\n\n{rest[first_user]['content']}"
        rest[first_user] = {**rest[first_user], "content": merged}
    folded: str = tokenizer.apply_chat_template(rest, add_generation_prompt=True, tokenize=False)
    return folded


class TransformersConfig(ModelBase):
    """A pool entry with ``backend: transformers``: a model run in-process."""

    backend: Literal["transformers"] = Field(description="transformers: run in-process.")
    path: str = Field(
        description="Hub id or directory; ./, ../ and ~ paths are relative to the pool file."
    )
    device: str = Field(default="cpu", description="Torch device, e.g. cpu or cuda:0.")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        default="auto", description="Weight dtype."
    )
    threads: int | None = Field(default=None, ge=1, description="Torch CPU threads.")

    def identity(self) -> dict[str, Any]:
        """Where the weights are and how they are loaded."""
        return {"path": self.path, "dtype": self.dtype}

    def relative_to(self, base_dir: Path | None) -> TransformersConfig:
        """``./``, ``../`` and ``~`` paths made absolute (relative ones against ``base_dir``)."""
        if not self.path.startswith(("./", "../", "~")):
            return self
        resolved = Path(self.path).expanduser()
        if base_dir is not None and not resolved.is_absolute():
            resolved = base_dir / resolved
        return self.model_copy(update={"path": str(resolved.resolve())})

    def build(self) -> TransformersBackend:
        """The backend (the model loads on its first request)."""
        return TransformersBackend(
            self.name, self.path, device=self.device, dtype=self.dtype, threads=self.threads
        )
