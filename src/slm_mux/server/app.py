"""The Starlette app: OpenAI's chat-completions endpoint over :func:`slm_mux.live.answer`.

Routes: ``POST /v1/chat/completions``, ``GET /v1/models`` and ``GET /health``
(which calls no model). Every error is an OpenAI-style JSON body, never a
traceback. A request whose client disconnects before its answer is chosen
has its model calls cancelled. A model's failure reaches the client as our own
summary (:mod:`slm_mux.server.failures`), never as the upstream's text; the full
reason (secrets redacted) goes to the server log, as does a warning when a model's
replies are mostly empty or unreadable (:mod:`slm_mux.reply_health`).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive

from slm_mux.adaptive import Policy
from slm_mux.engine import Answer
from slm_mux.errors import BackendError, InputError
from slm_mux.live import answer, model_names
from slm_mux.members import Member, close_members
from slm_mux.methods import live_methods
from slm_mux.reply_health import ReplyHealth
from slm_mux.server.failures import public_message
from slm_mux.server.protocol import ApiError, ChatRequest, chunks, completion
from slm_mux.server.protocol import parse_request as parse
from slm_mux.server.stops import StoppedTask
from slm_mux.tasks import Task

log = logging.getLogger("slm_mux.server")

T = TypeVar("T")

DISCONNECTED = 499
"""Status logged for a request whose client left before its answer (nginx's convention)."""

UNAUTHORIZED = ApiError(
    401, "missing or wrong API key (Authorization: Bearer …)", code="invalid_api_key"
)


def _json(payload: Mapping[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def _error(error: ApiError) -> Response:
    headers = {"www-authenticate": "Bearer"} if error.status == 401 else None
    return Response(
        orjson.dumps(error.body()),
        status_code=error.status,
        media_type="application/json",
        headers=headers,
    )


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 past ``limit`` bytes (before reading it, when
    ``Content-Length`` tells)."""
    too_large = ApiError(
        413, f"the request body is over the limit of {limit} bytes", code="request_too_large"
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise too_large
    return bytes(body)


async def _disconnect(receive: Receive) -> None:
    """Return when the client disconnects (the body has been read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(receive: Receive, work: Awaitable[T]) -> T | None:
    """``work``'s result, or ``None`` with ``work`` cancelled if the client leaves first."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnect(receive))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
    if not task.done() or task.cancelled():
        await asyncio.gather(task, return_exceptions=True)
        return None
    return task.result()


def create_app(
    members: Sequence[Member],
    *,
    task: Task,
    validation_accuracy: Mapping[str, float] | None = None,
    api_key: str | None = None,
    max_body_bytes: int = 1_000_000,
    close: bool = False,
    adaptive: Policy | None = None,
) -> Starlette:
    """An OpenAI-compatible app answering with SLM-MUX, each method and each pool model.

    ``api_key`` (when given) must come as ``Authorization: Bearer <key>`` (the scheme in
    any case) on every request, to an unknown path too; bodies over ``max_body_bytes``
    get 413. With ``close`` the members' backends are closed when the app shuts down;
    ``adaptive`` is SLM-MUX's sampling policy (:func:`~slm_mux.live.answer`; default
    ``full``). A pool model named like a method is an :class:`~slm_mux.errors.InputError`.
    """
    names = [member.name for member in members]
    methods = live_methods()
    clash = next((name for name in names if name in methods), None)
    if clash is not None:
        raise InputError(f"model {clash!r}: the name of a method the server offers; rename it")
    models = model_names(members)
    replies = ReplyHealth()
    created = int(time.time())
    accuracy = dict(validation_accuracy or {})
    expected = None if api_key is None else api_key.encode()

    def authorized(request: Request) -> bool:
        """Whether the request sends the key (the scheme ``Bearer`` in any case, RFC 9110)."""
        if expected is None:
            return True
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), expected)

    async def chat(request: Request) -> Response:
        try:
            raw = await _read_body(request, max_body_bytes)
        except ClientDisconnect:
            return Response(status_code=DISCONNECTED)
        parsed = parse(raw, models)
        work = answer(
            parsed.model,
            parsed.messages,
            members,
            task=StoppedTask(task, parsed.stop) if parsed.stop else task,
            validation_accuracy=accuracy,
            k=parsed.k,
            temperature=parsed.temperature,
            max_tokens=parsed.max_tokens,
            seed=parsed.seed,
            n=parsed.n,
            adaptive=adaptive,
        )
        try:
            live = await unless_disconnected(request.receive, work)
        except InputError as error:
            raise ApiError(400, str(error)) from None
        except BackendError as error:
            log.warning("no answer to %s: %s", parsed.model, error)
            head = "every model failed" if str(error).startswith("every model") else "no answer"
            raise ApiError(
                502,
                f"{head}; {public_message(str(error), names)} (details in the server log)",
                code="upstream_failed",
                kind="upstream_error",
            ) from None
        if live is None:
            log.info(
                "client left before the answer to %s; its model calls were cancelled", parsed.model
            )
            return Response(status_code=DISCONNECTED)
        for model, reason in live.failed.items():
            log.warning("%s answered without %s: %s", parsed.model, model, reason)
        if parsed.model in methods:
            replies.add_answer(live)
        else:
            replies.add(parsed.model, live.texts)  # a pass-through: no task reads it
        replies.warn()
        return _reply(parsed, live)

    async def list_models(request: Request) -> Response:
        data = [
            {"id": name, "object": "model", "created": created, "owned_by": "slm-mux"}
            for name in models
        ]
        return _json({"object": "list", "data": data})

    async def health(request: Request) -> Response:
        return _json({"status": "ok", "models": len(names)})

    def guarded(
        handler: Callable[[Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            if not authorized(request):
                return _error(UNAUTHORIZED)
            try:
                return await handler(request)
            except ApiError as error:
                return _error(error)

        return endpoint

    async def http_error(request: Request, error: Exception) -> Response:
        """Starlette's own 404 and 405 (an unknown path or method), OpenAI-style; a request
        without the key learns nothing of which paths exist (401 first)."""
        if not authorized(request):
            return _error(UNAUTHORIZED)
        return _http_error(request, error)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        if close:
            await close_members(members)

    return Starlette(
        routes=[
            Route("/v1/chat/completions", guarded(chat), methods=["POST"]),
            Route("/v1/models", guarded(list_models), methods=["GET"]),
            Route("/health", guarded(health), methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error, Exception: _server_error},
        lifespan=lifespan,
    )


def _reply(parsed: ChatRequest, live: Answer) -> Response:
    if not parsed.stream:
        return _json(completion(parsed.model, live, parsed.stop))
    return StreamingResponse(
        chunks(parsed.model, live, include_usage=parsed.include_usage, stop=parsed.stop),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache"},
    )


def _http_error(request: Request, error: Exception) -> Response:
    """Starlette's own 404 and 405 (an unknown path or method), OpenAI-style."""
    status = error.status_code if isinstance(error, HTTPException) else 500
    message = f"{request.method} {request.url.path}: " + (
        "no such endpoint" if status == 404 else str(getattr(error, "detail", "refused"))
    )
    return _error(ApiError(status, message, code="not_found" if status == 404 else None))


async def _server_error(request: Request, error: Exception) -> Response:
    """A bug: logged with its traceback on the server, one line to the client."""
    log.error("%s %s failed", request.method, request.url.path, exc_info=error)
    message = f"internal error: {type(error).__name__}"
    return _error(ApiError(500, message, code="internal_error", kind="server_error"))
