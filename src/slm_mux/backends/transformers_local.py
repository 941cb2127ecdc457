"""An in-process Hugging Face model (needs the ``local`` extra: torch, transformers).

torch and transformers are imported only when a model loads. The model loads
on the first request (in a worker thread, so the event loop stays free).
Concurrent requests are then decoded together: each model has a
:class:`~slm_mux.backends.batching.Batcher` with its own thread, which
gathers the samples of the requests that arrive while it is busy (or within
``batch_window_ms``) into padded, KV-cached batches
(:mod:`slm_mux.backends.decoding`).

Determinism: sample ``j`` of a request seeded ``s`` is drawn with seed
``s + j`` by Gumbel-max over noise hashed from (seed, step, token)
(:mod:`slm_mux.backends.sampling`), so equal seeds give equal samples for the
same model, device, dtype and library versions, whatever else shares the
batch: padding and batch size change a row's logits only by float rounding
(in float32 on CPU we found no sample that changed; see the tests).

GGUF: ``path`` may name a ``.gguf`` file (or ``gguf_file`` a file in the
``path`` folder or hub repository); transformers dequantizes it to torch
(the ``gguf`` extra: gguf and accelerate). The file's chat template, if it
has one, is the model's; a base model without one gets the plain template
(:func:`plain_prompt`). Stops: a row ends at the model's end-of-sequence
tokens, at its template's end-of-turn token (:func:`end_of_turn_ids`) and at
the entry's ``stop`` strings.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
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
from slm_mux.backends.batching import Batcher, BatchStats, OutOfMemory
from slm_mux.backends.config import ModelBase
from slm_mux.backends.decoding import Decoded, Row, StopStrings, decode
from slm_mux.errors import BackendError, InputError
from slm_mux.tasks.base import ANSWER_FORMAT

_log = logging.getLogger("slm_mux")
"""Warnings go here (the CLI prints them as ``slm-mux: warning: ...``)."""

_LOAD_LOCK = threading.Lock()
"""Serializes loading (and the one-time thread setting)."""

_threads_set: int | None = None
"""The CPU thread count this process settled on when its first model loaded."""

DTYPES = ("auto", "float32", "float16", "bfloat16")


def require_local_extra(name: str, modules: Sequence[str] = ("torch", "transformers")) -> None:
    """Raise ``InputError`` for model ``name`` unless ``modules`` are importable."""
    if any(importlib.util.find_spec(module) is None for module in modules):
        raise InputError(f"model {name!r} needs the local extra: pip install 'slm-mux[local]'")


GGUF_MODULES = ("torch", "transformers", "gguf", "accelerate")
"""What loading a ``.gguf`` file needs (the ``gguf`` extra)."""


def require_gguf_extra(name: str) -> None:
    """Raise ``InputError`` naming the packages a GGUF entry ``name`` lacks, if any."""
    missing = [module for module in GGUF_MODULES if importlib.util.find_spec(module) is None]
    if missing:
        raise InputError(
            f"model {name!r} loads a .gguf file, which needs {', '.join(missing)}: "
            "pip install 'slm-mux[gguf]'"
        )


def gguf_source(path: str, gguf_file: str | None) -> tuple[str, str | None]:
    """The folder (or hub id) to load from and the GGUF file in it, if any.

    ``path`` itself may name the file (``.../model.gguf``); else ``gguf_file``
    names a file inside ``path``.
    """
    if gguf_file is None and path.endswith(".gguf"):
        file = Path(path)
        return str(file.parent), file.name
    return path, gguf_file


def check_gguf_file(name: str, folder: str, gguf_file: str) -> None:
    """Raise ``InputError`` when ``folder`` is a local directory without ``gguf_file``."""
    directory = Path(folder).expanduser()
    local = directory.is_dir() or Path(folder).is_absolute() or folder.startswith((".", "~"))
    if local and not (directory / gguf_file).is_file():
        raise InputError(f"model {name!r}: no GGUF file at {directory / gguf_file}")


def _quiet_gguf_conversion() -> None:
    """Silence the GGUF dequantizing bar (plain tqdm, deaf to transformers' progress switch)."""
    import functools

    from tqdm.auto import tqdm
    from transformers import modeling_gguf_pytorch_utils as conversion

    conversion.tqdm = functools.partial(tqdm, disable=True)  # type: ignore[attr-defined]


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def pick_device(device: str) -> str:
    """``device``, or for ``auto`` CUDA when present, else MPS, else the CPU."""
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(dtype: str, device: str) -> Any:
    """The torch dtype: ``auto`` is bfloat16 on a CUDA GPU that supports it, else float32."""
    import torch

    if dtype != "auto":
        return getattr(torch, dtype)
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def set_threads_once(name: str, threads: int | None) -> None:
    """Set torch's process-wide CPU thread count once, when the first model loads.

    ``threads`` (when given) of the first model to load wins; without it torch
    keeps its default (the physical cores). A later model asking for another
    count gets a logged warning, not a change under the running models.
    """
    global _threads_set
    import torch

    if _threads_set is None:
        if threads is not None:
            torch.set_num_threads(threads)
        _threads_set = torch.get_num_threads()
    elif threads is not None and threads != _threads_set:
        _log.warning(
            "model %r: threads %d ignored; this process already uses %d CPU threads for "
            "in-process models",
            name,
            threads,
            _threads_set,
        )


@dataclass(frozen=True)
class _Loaded:
    """A loaded model, its tokenizer, and what decoding needs from them."""

    model: Any
    tokenizer: Any
    batcher: Batcher
    stop_ids: frozenset[int]
    context: int | None
    stop_strings: StopStrings | None


class TransformersBackend:
    """A causal LM from a local directory or hub id, decoded in batches.

    ``device`` is a torch device (``"cpu"``, ``"cuda:0"``, ...) or ``"auto"``,
    ``dtype`` one of :data:`DTYPES` (see :func:`pick_dtype`) and ``threads``
    torch's process-wide CPU thread count (:func:`set_threads_once`). The
    prompt is the tokenizer's chat template with the generation prompt added,
    or the messages' contents joined by blank lines when there is none.
    Requests arriving together share batches of at most
    ``max_batch_sequences`` samples and ``max_batch_tokens`` padded tokens;
    the batcher waits up to ``batch_window_ms`` for more. Temperature 0 decodes
    greedily once and repeats the result. Prompt tokens are split across the
    samples, as for the other backends. ``gguf_file`` (or a ``path`` ending in
    ``.gguf``) loads a GGUF file; ``stop`` strings end a sample (and are cut
    from its text, as the OpenAI API does).
    """

    def __init__(
        self,
        name: str,
        path: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        threads: int | None = None,
        batch_window_ms: float = 2.0,
        max_batch_sequences: int = 256,
        max_batch_tokens: int = 65536,
        gguf_file: str | None = None,
        stop: Sequence[str] = (),
    ) -> None:
        self.source, self.gguf_file = gguf_source(path, gguf_file)
        if self.gguf_file is None:
            require_local_extra(name)
        else:
            require_gguf_extra(name)
            check_gguf_file(name, self.source, self.gguf_file)
        if dtype not in DTYPES:
            raise InputError(f"model {name!r}: dtype {dtype!r} is not one of {', '.join(DTYPES)}")
        self.name = name
        self.path = path
        self.device = device
        self.dtype = dtype
        self.threads = threads
        self.batch_window_ms = batch_window_ms
        self.max_batch_sequences = max_batch_sequences
        self.max_batch_tokens = max_batch_tokens
        self.stop = tuple(text for text in stop if text)
        self.usage = Usage()
        self._loaded: _Loaded | None = None

    def __repr__(self) -> str:
        return (
            f"TransformersBackend(name={self.name!r}, path={self.path!r}, device={self.device!r})"
        )

    @property
    def batch_stats(self) -> BatchStats:
        """Batches and samples decoded so far, and out-of-memory splits."""
        return self._loaded.batcher.stats if self._loaded else BatchStats(0, 0, 0)

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        """Exactly ``request.n`` sampled completions, or raise ``BackendError``."""
        return await gather_stream(self.stream(request), request.n)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Batch]:
        """All ``request.n`` samples in one batch, once the last of them is decoded."""
        if request.n < 1:
            raise ValueError("n must be at least 1")
        started = time.monotonic()
        loaded = self._loaded if self._loaded is not None else await asyncio.to_thread(self._load)
        prompt = self._prompt_ids(loaded.tokenizer, request.messages)
        max_new = self._new_tokens(loaded.context, len(prompt), request.max_tokens)
        seed = secrets.randbits(32) if request.seed is None else request.seed
        sample = request.temperature > 0
        rows = [
            Row(prompt, (seed + j) & 0xFFFFFFFF, request.temperature, request.top_p, max_new)
            for j in range(request.n if sample else 1)
        ]
        decoded = await loaded.batcher.submit(rows)
        if not sample:
            decoded = decoded * request.n
        completions = self._completions(loaded, decoded, len(prompt), time.monotonic() - started)
        self.usage.add(completions)
        yield list(enumerate(completions))

    async def warm(self) -> None:
        """Load the model now (else it loads on first use)."""
        if self._loaded is None:
            await asyncio.to_thread(self._load)

    async def aclose(self) -> None:
        """Stop the batcher and drop the model and tokenizer (freed once unreferenced)."""
        if self._loaded is not None:
            await asyncio.to_thread(self._loaded.batcher.close)
        self._loaded = None

    def _load(self) -> _Loaded:
        """The model, tokenizer and batcher, loaded on first use."""
        with _LOAD_LOCK:
            if self._loaded is not None:
                return self._loaded
            import torch
            import transformers

            # Loading bars would tear through slm-mux's own progress display.
            transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
            if self.gguf_file is not None:
                _quiet_gguf_conversion()
            set_threads_once(self.name, self.threads)
            device = pick_device(self.device)
            gguf = {} if self.gguf_file is None else {"gguf_file": self.gguf_file}
            try:
                tokenizer = transformers.AutoTokenizer.from_pretrained(self.source, **gguf)
                model: Any = transformers.AutoModelForCausalLM.from_pretrained(
                    self.source, dtype=pick_dtype(self.dtype, device), **gguf
                )
            except (OSError, ValueError, ImportError, NotImplementedError) as error:
                raise BackendError(
                    f"model {self.name!r}: cannot load {self.path!r}: {_one_line(error)}"
                ) from None
            model = model.to(device).eval()
            pad = tokenizer.pad_token_id
            pad = tokenizer.eos_token_id if pad is None else pad
            eos = model.generation_config.eos_token_id
            eos_ids = eos if isinstance(eos, list) else [] if eos is None else [eos]
            stop_ids = frozenset([*eos_ids, *end_of_turn_ids(tokenizer)])
            stop_strings = StopStrings(tokenizer, self.stop) if self.stop else None
            context = getattr(model.config, "max_position_embeddings", None)

            def run(rows: list[Row]) -> list[Decoded]:
                try:
                    return decode(
                        model, rows, pad_id=pad or 0, stop_ids=stop_ids, stop_strings=stop_strings
                    )
                except torch.cuda.OutOfMemoryError:  # torch.OutOfMemoryError since 2.5
                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()
                    raise OutOfMemory(
                        f"model {self.name!r}: out of device memory even for one sequence"
                    ) from None
                except RuntimeError as error:  # torch's failures; ours (TypeError...) surface
                    raise BackendError(
                        f"model {self.name!r}: generation failed: {_one_line(error)}"
                    ) from None

            batcher = Batcher(
                self.name,
                run,
                window_s=self.batch_window_ms / 1000,
                max_sequences=self.max_batch_sequences,
                max_tokens=self.max_batch_tokens,
                on_split=self._report_split,
            )
            self._loaded = _Loaded(
                model,
                tokenizer,
                batcher,
                stop_ids,
                context if isinstance(context, int) else None,
                stop_strings,
            )
            return self._loaded

    def _report_split(self, rows: int) -> None:
        _log.warning(
            "model %r: out of device memory with %d samples in a batch; retrying them as "
            "two batches",
            self.name,
            rows,
        )

    def _prompt_ids(self, tokenizer: Any, messages: list[dict[str, str]]) -> tuple[int, ...]:
        """Token ids of the prompt."""
        if tokenizer.chat_template:
            text = _render_chat(tokenizer, messages)
            special = False  # the template writes its own special tokens
        else:
            text = plain_prompt(messages)
            special = True
        return tuple(tokenizer(text, add_special_tokens=special)["input_ids"])

    def _new_tokens(self, context: int | None, prompt_length: int, max_tokens: int) -> int:
        """``max_tokens``, capped to the room the model's context leaves after the prompt.

        A prompt that fills the context is a :class:`BackendError`: the model
        cannot read it, and a silently garbled answer would pass for its own.
        """
        if context is None:
            return max_tokens
        if prompt_length >= context:
            raise BackendError(
                f"model {self.name!r}: the prompt has {prompt_length} tokens, more than its "
                f"context of {context} positions leaves room for",
                retryable=False,
            )
        return min(max_tokens, context - prompt_length)

    def _completions(
        self, loaded: _Loaded, decoded: list[Decoded], prompt_tokens: int, latency: float
    ) -> list[Completion]:
        """Texts and token counts of the decoded rows (the prompt's tokens split across them)."""
        shares = split_tokens(prompt_tokens, [1] * len(decoded))
        cut = loaded.stop_strings.cut if loaded.stop_strings else str
        return [
            Completion(
                cut(loaded.tokenizer.decode(row.tokens, skip_special_tokens=True)),
                share,
                len(row.tokens),
                latency,
                "stop" if row.stopped else "length",
            )
            for row, share in zip(decoded, shares, strict=True)
        ]


def plain_prompt(messages: list[dict[str, str]]) -> str:
    """The prompt of a model without a chat template (a base model).

    Every message's content, in order, separated and followed by a blank
    line; the tokenizer adds its own start token. A base model continues the
    text, so its pool entry should name ``stop`` strings (the fetched pool's
    Gemma base entry stops at a blank line).
    """
    return "\n\n".join(m.get("content", "") for m in messages) + "\n\n"


_TURN_PROBE = "\u2063slm-mux-probe\u2063"
"""An assistant turn's text that no template writes by itself."""


def end_of_turn_ids(tokenizer: Any) -> list[int]:
    """The special token the chat template writes after an assistant turn, if any.

    ``<|im_end|>`` (ChatML, SmolLM2), ``<end_of_turn>`` (Gemma), ``<|eot_id|>``
    (Llama 3): found by rendering a probe turn and reading the token right after it.
    """
    from jinja2 import TemplateError

    if not tokenizer.chat_template:
        return []
    turns = [{"role": "user", "content": "?"}, {"role": "assistant", "content": _TURN_PROBE}]
    try:
        text: str = tokenizer.apply_chat_template(turns, tokenize=False)
    except TemplateError:
        return []
    after = text.partition(_TURN_PROBE)[2]
    ids: list[int] = tokenizer(after, add_special_tokens=False)["input_ids"][:1]
    special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}))
    return [token for token in ids if token in special]


def _render_chat(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The prompt text through the model's chat template.

    Many templates drop or refuse a ``system`` message (the bundled tiny
    models' writes only user and assistant turns; Gemma's raises). Then the
    system text is put at the head of the first user message instead, so the
    model still reads every instruction it was given; only a template that
    drops system turns silently also drops their answer-format paragraphs
    (:data:`~slm_mux.tasks.base.ANSWER_FORMAT`): models with such templates
    were trained on bare questions.
    """
    from jinja2 import TemplateError

    systems = [m["content"] for m in messages if m["role"] == "system"]
    refused = False
    try:
        text: str = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        if all(system in text for system in systems):
            return text
    except TemplateError:  # also what a template's own raise_exception raises
        if not systems:
            raise
        refused = True
    rest = [m for m in messages if m["role"] != "system"]
    paragraphs = [part for system in systems for part in system.split("\n\n")]
    if not refused:
        paragraphs = [part for part in paragraphs if not part.startswith(ANSWER_FORMAT)]
    if not paragraphs:
        return _apply_template(tokenizer, rest)
    head = "\n\n".join(paragraphs)
    first_user = next((i for i, m in enumerate(rest) if m["role"] == "user"), None)
    if first_user is None:
        rest.insert(0, {"role": "user", "content": head})
    else:
        merged = f"{head}\n\n{rest[first_user]['content']}"
        rest[first_user] = {**rest[first_user], "content": merged}
    return _apply_template(tokenizer, rest)


def _apply_template(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    text: str = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return text


class TransformersConfig(ModelBase):
    """A pool entry with ``backend: transformers``: a model run in-process."""

    backend: Literal["transformers"] = Field(description="transformers: run in-process.")
    path: str = Field(
        description="Hub id, directory or .gguf file; ./, ../ and ~ paths are relative to "
        "the pool file."
    )
    gguf_file: str | None = Field(
        default=None,
        description="A .gguf file inside path (a folder or hub id); needs the gguf extra.",
    )
    stop: list[str] = Field(
        default_factory=list,
        description="Stop strings: a sample ends at the first (cut from its text). The "
        "end-of-sequence and the chat template's end-of-turn tokens always stop.",
    )
    device: str = Field(
        default="auto",
        description="Torch device, e.g. cpu or cuda:0; auto: CUDA when present, else MPS, "
        "else cpu.",
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        default="auto",
        description="Weight dtype; auto: bfloat16 on CUDA GPUs that support it, else float32.",
    )
    threads: int | None = Field(
        default=None,
        ge=1,
        description="Torch CPU threads, for the whole process (the first model loaded sets "
        "them); null: torch's default, the physical cores.",
    )
    batch_window_ms: float = Field(
        default=2.0,
        ge=0,
        description="How long a batch waits for more concurrent requests before it starts.",
    )
    max_batch_sequences: int = Field(
        default=256, ge=1, description="Most samples (rows) decoded together in one batch."
    )
    max_batch_tokens: int = Field(
        default=65536,
        ge=1,
        description="Most padded tokens in one batch: rows x (longest prompt + largest "
        "max_tokens).",
    )

    def identity(self) -> dict[str, Any]:
        """Where the weights are, how they are loaded, and stop strings (when there are any)."""
        extra: dict[str, Any] = {} if self.gguf_file is None else {"gguf_file": self.gguf_file}
        if self.stop:
            extra["stop"] = self.stop
        return {"path": self.path, "dtype": self.dtype, **extra}

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
            self.name,
            self.path,
            device=self.device,
            dtype=self.dtype,
            threads=self.threads,
            batch_window_ms=self.batch_window_ms,
            max_batch_sequences=self.max_batch_sequences,
            max_batch_tokens=self.max_batch_tokens,
            gguf_file=self.gguf_file,
            stop=self.stop,
        )
