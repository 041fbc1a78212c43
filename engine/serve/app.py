"""The FastAPI application: OpenAI's /v1 routes plus /v1/steering/vectors.

Every user error is a 4xx with OpenAI's JSON error shape and the server carries on: bodies over the size
limit (413, checked in an ASGI middleware before they are read), bytes that are not UTF-8 JSON, values out
of range, vectors that are unknown, for another model or named by path (400), a model that is not served
(404), a full queue (503 with Retry-After). Bearer auth, when a key is set, guards every route.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import anyio
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.errors import ActAddError
from engine.serve import prompts, responses
from engine.serve.batcher import Batcher, Job, QueueFullError, ServerClosingError
from engine.serve.schemas import ChatCompletionRequest, CompletionRequest
from engine.serve.steering_spec import SteeringRequest, UnknownModelError, VectorResolver, split_model_name

MAX_MODEL_PRESETS = 100  # steered "model+vector:coeff" ids listed by /v1/models


@dataclass
class RequestLog:
    """One line of the live request log (the GUI's Serve panel shows these)."""

    path: str
    model: str
    status: int
    steering: list[str] = field(default_factory=list)  # "love-hate:4.0@6 (front)"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = ""
    seconds: float = 0.0
    error: str = ""


@dataclass
class ServeState:
    resolver: VectorResolver
    batcher: Batcher
    model_id: str
    api_key: str | None = None
    default_max_tokens: int = 256
    retry_after_s: int = 1
    shutdown_grace_s: float = 8.0
    on_request: Callable[[RequestLog], None] | None = None


class APIError(HTTPException):
    """An HTTP error with OpenAI's error body; `kind` is OpenAI's error type."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", headers=None):
        super().__init__(status_code=status, detail=message, headers=headers)
        self.kind = kind


class BodyLimit:
    """Refuses request bodies over `max_bytes` (413), whether announced by Content-Length or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            body = responses.error_body(f"the request body is over {self.max_bytes} bytes", code="too_large")
            await JSONResponse(body, status_code=413)(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:  # chunked bodies carry no Content-Length
                raise APIError(413, f"the request body is over {self.max_bytes} bytes")
            return message

        await self.app(scope, limited, send)


def _error_response(status: int, message: str, kind: str, headers=None) -> JSONResponse:
    return JSONResponse(responses.error_body(message, kind), status_code=status, headers=headers)


def create_app(state: ServeState, max_body_bytes: int = 1024 * 1024) -> FastAPI:
    async def require_key(request: Request) -> None:
        if state.api_key is None:
            return
        given = request.headers.get("authorization", "")
        expected = f"Bearer {state.api_key}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise APIError(
                401, "missing or wrong API key", "authentication_error", {"WWW-Authenticate": "Bearer"}
            )

    app = FastAPI(title="ActAdd Studio", dependencies=[Depends(require_key)], docs_url=None, redoc_url=None)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        kind = getattr(exc, "kind", "invalid_request_error" if exc.status_code < 500 else "server_error")
        return _error_response(exc.status_code, str(exc.detail), kind, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error_response(400, str(exc.errors()[:1]), "invalid_request_error")

    def log(entry: RequestLog) -> None:
        if state.on_request is not None:
            try:
                state.on_request(entry)
            except Exception:  # the log's owner (e.g. the GUI) must not break serving
                logging.getLogger(__name__).exception("request log callback failed")

    async def parse(request: Request, model_cls):
        raw = await request.body()
        try:
            data = json.loads(raw)  # bytes: invalid UTF-8 raises UnicodeDecodeError, a ValueError
        except (ValueError, RecursionError) as exc:
            raise APIError(400, f"the body is not valid UTF-8 JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise APIError(400, "the body must be a JSON object")
        try:
            return model_cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise APIError(400, f"{where}: {first['msg']}") from exc

    def prepare(req, chat: bool) -> tuple[Job, list[str]]:
        """Everything that can fail for this request alone, checked before it joins a batch."""
        wanted = [
            *[SteeringRequest(s.vector, s.coeff, s.layer, s.mode) for s in req.steering],
            *split_model_name(req.model, state.model_id),
        ]
        steers = state.resolver.resolve(wanted)
        sampling = req.sampling(state.default_max_tokens)
        sampling.validate()
        loaded = state.resolver.loaded
        prompt = (
            prompts.chat_prompt(loaded, req.messages)
            if chat
            else prompts.completion_ids(loaded, req.prompt_text())
        )
        prompts.check_fits_model(loaded, prompt, steers)
        described = [
            f"{s.vector.name}:{s.coeff:g}{'' if s.at_layer is None else f'@{s.at_layer}'} ({s.resolved_mode})"
            for s in steers
        ]
        return Job(
            prompt=prompt, steers=steers, sampling=sampling, sink=lambda kind, payload: None
        ), described

    async def run(request: Request, chat: bool):
        started = time.perf_counter()
        path = request.url.path
        entry = RequestLog(path=path, model="", status=200)
        try:
            req = await parse(request, ChatCompletionRequest if chat else CompletionRequest)
            entry.model = req.model
            try:
                job, entry.steering = await run_in_threadpool(prepare, req, chat)
            except UnknownModelError as exc:
                raise APIError(404, str(exc)) from exc
            except (ActAddError, ValueError) as exc:
                raise APIError(400, str(exc)) from exc
            events = _Events(asyncio.get_running_loop())
            job.sink = events.put
            try:
                state.batcher.submit(job)
            except (QueueFullError, ServerClosingError) as exc:
                headers = {"Retry-After": str(state.retry_after_s)}
                raise APIError(503, str(exc), "server_overloaded", headers) from exc
        except APIError as exc:
            entry.status, entry.error = exc.status_code, str(exc.detail)
            entry.seconds = time.perf_counter() - started
            log(entry)
            raise
        rid = responses.new_id("chatcmpl" if chat else "cmpl")
        model = req.model
        n_prompt = len(job.prompt_ids)

        def finished() -> None:
            entry.prompt_tokens, entry.completion_tokens = n_prompt, len(job.token_ids)
            entry.finish_reason = job.finish_reason or "cancelled"
            if entry.finish_reason == "cancelled" and entry.status == 200:
                entry.status = 499  # nginx's "client closed request": the client left before the end
            entry.seconds = time.perf_counter() - started
            log(entry)

        if req.stream:
            return EventSourceResponse(
                _stream(events, job, rid, model, chat, req.include_usage, finished),
                ping=15,
                # On shutdown, open streams get this long to finish before they are cut.
                shutdown_event=anyio.Event(),
                shutdown_grace_period=state.shutdown_grace_s,
            )
        text: list[str] = []
        try:
            async for kind, payload in events.until_done(request):
                if kind == "delta":
                    text.append(str(payload))
                elif kind == "error":
                    status = 503 if isinstance(payload, ServerClosingError) else 500
                    entry.status, entry.error = status, str(payload)
                    raise APIError(status, str(payload), "server_error")
        finally:
            job.cancel()  # a client gone while waiting, or any failure: stop the row at its next token
            finished()
        use = responses.usage(n_prompt, len(job.token_ids))
        finish = job.finish_reason or "cancelled"
        if finish == "cancelled":  # not by this client, which is still here: the server is shutting down
            raise APIError(503, "the server shut down before this request finished", "server_error")
        body = (responses.chat_completion if chat else responses.completion)(
            rid, model, "".join(text), finish, use
        )
        return JSONResponse(body)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await run(request, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await run(request, chat=False)

    @app.get("/v1/models")
    async def models():
        entries = await run_in_threadpool(state.resolver.usable)
        presets = [f"{state.model_id}+{e.key}:{e.default_coeff:g}" for e in entries if "+" not in e.key]
        ids = [state.model_id, *presets[:MAX_MODEL_PRESETS]]
        created = int(time.time())
        return {
            "object": "list",
            "data": [
                {"id": i, "object": "model", "created": created, "owned_by": "actadd-studio"} for i in ids
            ],
        }

    @app.get("/v1/steering/vectors")
    async def vectors():
        entries = await run_in_threadpool(state.resolver.usable)
        return {
            "object": "list",
            "model": state.model_id,
            "data": [
                {
                    "id": e.key,
                    "method": e.method,
                    "layers": e.layers,
                    "default_coeff": e.default_coeff,
                    "default_mode": e.default_mode,
                    "n_tokens": e.shape[0] if e.is_positional else None,
                    "tags": list(e.tags),
                    "notes": e.notes,
                    "shorthand": None if "+" in e.key else f"{state.model_id}+{e.key}:{e.default_coeff:g}",
                }
                for e in entries
            ],
        }

    return app


class _Events:
    """A job's events, handed from the batcher's thread to the request's event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.queue: asyncio.Queue[tuple[str, object]] = asyncio.Queue()

    def put(self, kind: str, payload: object) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: the server stopped, nobody is listening
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (kind, payload))

    async def until_done(self, request: Request | None = None) -> AsyncIterator[tuple[str, object]]:
        """The events up to "done"; with `request`, also stops once its client has gone (checked 4x a second,
        however fast tokens come: a non-streamed request sends nothing that could fail earlier)."""
        checked = self.loop.time()
        while True:
            try:
                kind, payload = await asyncio.wait_for(self.queue.get(), timeout=0.25)
            except asyncio.TimeoutError:
                kind, payload = "", None
            if request is not None and self.loop.time() - checked >= 0.25:
                checked = self.loop.time()
                if await request.is_disconnected():
                    return
            if not kind:
                continue
            if kind == "done":
                return
            yield kind, payload
            if kind == "error":
                return


async def _stream(events: _Events, job: Job, rid: str, model: str, chat: bool, include_usage: bool, finished):
    """Server-sent events in OpenAI's chunk format, ending with `data: [DONE]`."""
    chunk = responses.chat_chunk if chat else responses.completion_chunk
    try:
        if chat:
            yield {"data": json.dumps(chunk(rid, model, {"role": "assistant", "content": ""}))}
        async for kind, payload in events.until_done():
            if kind == "error":
                yield {"data": json.dumps(responses.error_body(str(payload), "server_error"))}
                return
            delta = {"content": payload} if chat else payload
            yield {"data": json.dumps(chunk(rid, model, delta))}
        finish = job.finish_reason or "cancelled"
        if finish == "cancelled":  # the client is still reading, so the server cut it short (shutdown)
            yield {"data": json.dumps(responses.error_body("the server shut down", "server_error"))}
            return
        yield {"data": json.dumps(chunk(rid, model, {} if chat else "", finish))}
        if include_usage:
            use = responses.usage(len(job.prompt_ids), len(job.token_ids))
            yield {"data": json.dumps(chunk(rid, model, {} if chat else "", use=use, choices=False))}
        yield {"data": "[DONE]"}
    finally:
        job.cancel()  # the client went away (sse-starlette cancels this generator) or the stream ended
        finished()
