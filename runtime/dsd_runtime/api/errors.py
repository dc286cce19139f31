"""Every HTTP error in OpenAI's shape {"error": {"message", "type", "param", "code"}}, and the request guards.

Installed by `api.app.create_app`: handlers for validation errors (400 naming the parameter), DSD errors
(their own status), framework errors (404 unknown route, 405 wrong method, ...) and anything unexpected (500),
plus a pure-ASGI middleware that caps the body size (413) and counts requests per route and status.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import Counter
from starlette.exceptions import HTTPException as StarletteHTTPException

from dsd_runtime.errors import DsdError, TargetUnavailable

log = logging.getLogger(__name__)
RETRY_AFTER_S = "2"
MAX_BODY_BYTES = 1 << 20  # 1 MiB: far above any prompt that fits the context, small enough to refuse floods

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_HTTP_CODES = {400: "invalid_request", 401: "invalid_api_key", 404: "not_found", 405: "method_not_allowed",
               413: "request_too_large", 415: "unsupported_media_type", 422: "unprocessable_entity",
               429: "rate_limit_exceeded", 500: "internal_error", 503: "service_unavailable"}


_TYPES = frozenset({"str", "int", "float", "bool", "list", "dict", "function-after", "none"})


def error_body(message: str, err_type: str, param: str | None, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": err_type, "param": param, "code": code}}


def error_response(status: int, message: str, err_type: str, param: str | None = None, code: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, err_type, param, code or _HTTP_CODES.get(status)), status_code=status,
                        headers=headers)


def from_dsd_error(e: DsdError) -> JSONResponse:
    headers = {"Retry-After": RETRY_AFTER_S} if e.http_status in (429, 503) else None
    return error_response(e.http_status, str(e), e.openai_type, getattr(e, "param", None), e.openai_code, headers)


def stream_error(e: BaseException) -> dict[str, Any]:
    """The error event of a stream that fails after its 200 header went out."""
    err = e if isinstance(e, DsdError) else TargetUnavailable(f"generation failed: {e}")
    return error_body(str(err), err.openai_type, getattr(err, "param", None), err.openai_code)


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        # Union members add their type to the location (prompt.constrained-str, stop.list[str]): keep field
        # names and list indices only.
        loc = [str(p) for p in first["loc"][1:] if isinstance(p, int) or (p.isidentifier() and p not in _TYPES)]
        param = ".".join(loc) or None
        kind = first.get("type", "")
        if kind == "json_invalid":
            return error_response(400, f"malformed JSON body: {first['msg']}", "invalid_request_error",
                                  code="invalid_json")
        code = "unsupported_parameter" if kind == "unsupported_parameter" else "invalid_value"
        where = f"invalid parameter {param}: " if param else "invalid request: "
        return error_response(400, where + first["msg"], "invalid_request_error", param, code)

    @app.exception_handler(DsdError)
    async def _dsd(request: Request, exc: DsdError) -> JSONResponse:
        return from_dsd_error(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = f"{request.method} {request.url.path}: {exc.detail}"
        return error_response(exc.status_code, message, "invalid_request_error",
                              headers=dict(exc.headers) if exc.headers else None)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error serving %s %s", request.method, request.url.path)
        return error_response(500, f"internal error: {type(exc).__name__}", "server_error")


class GuardMiddleware:
    """Refuses bodies over `max_body_bytes` with 413 (declared or streamed) and counts /v1 requests by status."""

    def __init__(self, app: ASGIApp, requests: Counter, routes: frozenset[str],
                 max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.requests = requests
        self.routes = routes  # label values are bounded: unknown paths count as "other"
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        status = {"code": 500}

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            declared = int(dict(scope["headers"]).get(b"content-length", b"0"))
        except ValueError:
            declared = 0
        if declared > self.max_body_bytes:
            await self._too_large(counting_send)
        else:
            await self._call_limited(scope, receive, counting_send)
        if path.startswith("/v1/"):
            self.requests.labels(endpoint=path if path in self.routes else "other", code=str(status["code"])).inc()

    async def _call_limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        seen = {"bytes": 0}

        async def limited_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                seen["bytes"] += len(message.get("body", b""))
                if seen["bytes"] > self.max_body_bytes:  # a chunked body that declared no length
                    # Raised inside the body read: FastAPI passes HTTPExceptions on to the handler above.
                    raise StarletteHTTPException(413, f"request body over {self.max_body_bytes} bytes")
            return message

        await self.app(scope, limited_receive, send)

    async def _too_large(self, send: Send) -> None:
        response = error_response(413, f"request body over {self.max_body_bytes} bytes", "invalid_request_error")
        await send({"type": "http.response.start", "status": 413, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})
