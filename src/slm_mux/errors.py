"""Exceptions raised by slm-mux.

The hierarchy::

    SlmMuxError                 anything slm-mux raises on purpose
    ├── InputError              bad user input: a file, a flag, a config key
    │   └── FormatError         a malformed data file (carries file and line)
    ├── StoreError              the store lacks what was asked for, or holds conflicting data
    └── BackendError            a model server or in-process model failed

Every message is one line that names the culprit (file:line, model, key or
question), so the CLI can print it without a traceback. A message that quotes a
server passes through :func:`redact` first.
"""

from __future__ import annotations

from collections.abc import Iterable

REDACTED = "***"


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each non-empty secret replaced by ``***``
    (longest first, so a secret that contains another goes whole)."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


class SlmMuxError(Exception):
    """Base class of every error slm-mux raises on purpose."""


class InputError(SlmMuxError):
    """Bad user input: an unknown model, a bad flag value, a config key."""


class FormatError(InputError):
    """A malformed data file; the message starts with ``file:line:``."""

    def __init__(self, path: str, line: int | None, reason: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {reason}")
        self.path = path
        self.line = line
        self.reason = reason


class StoreError(SlmMuxError):
    """The store lacks what was asked for (empty, missing split, too few samples)
    or already holds conflicting data (a question id stored with another text)."""


class BackendError(SlmMuxError):
    """A model backend failed in a way this run's retries cannot fix.

    ``retryable`` says whether running again later may succeed (a server that was down
    or overloaded); ``False`` for a request that can never succeed (a prompt longer
    than the model's context, a request the server rejects as invalid).
    """

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable
