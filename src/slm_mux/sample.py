"""The unit of recorded data: one sampled answer of one model to one question."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Split = Literal["validation", "test"]
SPLITS: tuple[Split, ...] = ("validation", "test")


HASHED_SETTINGS = "model and its loading, temperature, max_tokens, seed, top_p, stop or server pins"
"""What a sample's ``settings_hash`` covers
(:meth:`~slm_mux.backends.config.ModelBase.settings_hash`), as error messages name it."""


@dataclass(frozen=True)
class Sample:
    """One sample of one model on one question.

    ``answer`` is the extracted answer (``None`` when the response had none);
    ``correct`` is the task grader's verdict against ``reference``.
    ``settings_hash`` identifies the generation settings that produced it.
    """

    model: str
    task: str
    question_id: str
    split: Split
    sample: int
    answer: str | None
    reference: str
    correct: bool | None = None
    text: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float | None = None
    finish_reason: str | None = None
    settings_hash: str | None = None
    created_at: str | None = None
