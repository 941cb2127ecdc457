"""What a ``serve`` client learns of a model's failure: our own summary, never the upstream's text.

An upstream's error text may quote anything: a proxy echoing the request's
``Authorization`` header, an internal address, a stack trace. A client gets only the
model's name, the HTTP status the upstream answered (when there was one) and a short
reason class of ours; the full reason (secrets already redacted by the backend) goes
to the server log. The summary is built from a fixed vocabulary, so no character of
the upstream's text can reach it.

The reasons read are the ones the backends write (:mod:`slm_mux.backends.openai.client`):
``401 from URL: ...``, ``gave up after 5 attempts at URL: 503: ...``, ``... connection
error: ...``, ``... no response within 120s``, a malformed reply, too few replies, and
an in-process model's prompt too long for its context or memory. Any other reason is
summarized as ``failed``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

_RETRIED = r"gave up after \d+ attempts at \S+: "
_STATUS = re.compile(rf"^(?:{_RETRIED})?([1-5]\d\d)(?: from \S+)?: ")
_CLASSES = (
    (re.compile(rf"^{_RETRIED}connection error"), "connection failed"),
    (re.compile(rf"^{_RETRIED}no response within"), "timed out"),
    (re.compile(rf"^{_RETRIED}(?:malformed|response has empty)"), "malformed reply"),
    (re.compile(r"^got \d+ of \d+ (?:replies|samples)"), "too few replies"),
    (re.compile(r"^the prompt has \d+ tokens, more than its context"), "prompt too long"),
    (re.compile(r"^out of device memory"), "out of memory"),
)
_STATUS_CLASSES = {
    400: "request refused",
    401: "authentication failed",
    403: "forbidden",
    404: "not found",
    408: "timed out",
    413: "request too large",
    422: "request refused",
    429: "rate limited",
}


def reason_class(reason: str) -> str:
    """``upstream HTTP 401 (authentication failed)``, ``connection failed``, ``timed out``,
    ``malformed reply``, ``too few replies``, ``prompt too long``, ``out of memory`` or
    ``failed``, for one model's ``reason`` (without its ``model 'name': `` prefix)."""
    status = _STATUS.match(reason)
    if status is not None:
        code = int(status.group(1))
        kind = _STATUS_CLASSES.get(code, "server error" if code >= 500 else "refused")
        return f"upstream HTTP {code} ({kind})"
    return next((kind for pattern, kind in _CLASSES if pattern.match(reason)), "failed")


def public_reason(model: str, reason: str) -> str:
    """The summary of ``model``'s failure ``reason`` (:func:`reason_class`)."""
    return reason_class(reason.removeprefix(f"model {model!r}: "))


def public_failures(failed: Mapping[str, str]) -> dict[str, str]:
    """Each failed model's :func:`public_reason`."""
    return {model: public_reason(model, reason) for model, reason in failed.items()}


def public_message(message: str, models: Sequence[str]) -> str:
    """The summary of a failed request's ``message``: each of ``models`` it names, with its
    reason class (``model 'a': upstream HTTP 401 (authentication failed); model 'b':
    connection failed``), or ``the models failed`` when it names none."""
    marks = sorted(
        (at, model) for model in models for at in [message.find(f"model {model!r}: ")] if at >= 0
    )
    parts = []
    for i, (at, model) in enumerate(marks):
        end = marks[i + 1][0] if i + 1 < len(marks) else len(message)
        parts.append(f"model {model!r}: {public_reason(model, message[at:end])}")
    return "; ".join(parts) or "the models failed"
