"""The OpenAI-compatible HTTP API of a draft server (FastAPI).

/v1/completions, /v1/chat/completions (streaming via SSE or not), /v1/models, /healthz, /readyz, /metrics.
Errors use OpenAI's body {"error": {"message", "type", "param", "code"}}; a client that disconnects
mid-stream cancels its generation (and the target session is closed).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from dsd_runtime.api.schemas import ChatCompletionRequest, CompletionRequest
from dsd_runtime.draft.engine import DraftEngine, TextRequest
from dsd_runtime.draft.speculating import Cancelled, GenerationStats
from dsd_runtime.errors import DsdError, InvalidRequest, TargetUnavailable
from dsd_spec.sampling import SamplingParams

DEFAULT_MAX_TOKENS = 256
RETRY_AFTER_S = "2"


def _error(status: int, message: str, err_type: str, param: str | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": err_type, "param": param, "code": None}}
    return JSONResponse(body, status_code=status, headers=headers)


def _error_from(e: DsdError) -> JSONResponse:
    headers = {"Retry-After": RETRY_AFTER_S} if isinstance(e, TargetUnavailable) else None
    return _error(e.http_status, str(e), e.openai_type, getattr(e, "param", None), headers)


def create_app(engine: DraftEngine) -> FastAPI:
    app = FastAPI(title="DSD draft server", docs_url=None, redoc_url=None)
    metrics = engine.metrics

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        loc = [str(p) for p in first["loc"] if p != "body"]
        param = ".".join(loc) or None
        if first.get("type") == "json_invalid":
            return _error(400, f"malformed JSON body: {first['msg']}", "invalid_request_error")
        return _error(400, f"invalid parameter {param}: {first['msg']}", "invalid_request_error", param)

    @app.exception_handler(DsdError)
    async def _dsd(request: Request, exc: DsdError) -> JSONResponse:
        return _error_from(exc)

    @app.middleware("http")
    async def _count(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        if request.url.path.startswith("/v1/"):
            metrics.requests.labels(endpoint=request.url.path, code=str(response.status_code)).inc()
        return response

    @app.get("/healthz")
    async def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok")

    @app.get("/readyz")
    async def readyz() -> PlainTextResponse:
        if not engine.ready.is_set():
            return PlainTextResponse("target not connected", status_code=503)
        return PlainTextResponse("ok")

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(engine.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": engine.model_name, "object": "model", "created": 0,
                                            "owned_by": "dsd"}]}

    def _text_request(body: CompletionRequest | ChatCompletionRequest, prompt_ids: list[int],
                      max_tokens: int | None) -> TextRequest:
        if body.model is not None and body.model != engine.model_name:
            raise InvalidRequest(f"model {body.model!r} is not served here; this server serves "
                                 f"{engine.model_name!r}", "model")
        if any(not 0 <= t < engine.draft.lm.vocab_size for t in prompt_ids):
            raise InvalidRequest("prompt contains token ids outside the vocabulary", "prompt")
        n = max_tokens or min(DEFAULT_MAX_TOKENS, max(1, engine.target_max_context - len(prompt_ids)))
        engine.check_length(len(prompt_ids), n)
        given, defaults = body.model_fields_set, engine.sampling_defaults
        params = SamplingParams(
            temperature=body.temperature if "temperature" in given else defaults.temperature,
            top_k=body.top_k if "top_k" in given else defaults.top_k,
            top_p=body.top_p if "top_p" in given else defaults.top_p)
        return TextRequest(prompt_ids, n, params, body.seed, body.stop_strings())

    async def _respond(req: TextRequest, request: Request, stream: bool, chat: bool) -> Response:
        if not engine.ready.is_set():
            raise TargetUnavailable("draft server is not connected to its target yet")
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        if not stream:
            cancel = threading.Event()
            try:
                done = await asyncio.to_thread(engine.complete, req, cancel)
            finally:
                cancel.set()
            usage = {"prompt_tokens": done.prompt_tokens, "completion_tokens": done.completion_tokens,
                     "total_tokens": done.prompt_tokens + done.completion_tokens}
            choice: dict[str, Any] = {"index": 0, "finish_reason": done.finish_reason, "logprobs": None}
            if chat:
                choice["message"] = {"role": "assistant", "content": done.text}
            else:
                choice["text"] = done.text
            return JSONResponse({"id": rid, "object": "chat.completion" if chat else "text_completion",
                                 "created": created, "model": engine.model_name, "choices": [choice],
                                 "usage": usage})
        return StreamingResponse(_sse(req, request, rid, created, chat), media_type="text/event-stream")

    async def _sse(req: TextRequest, request: Request, rid: str, created: int, chat: bool) -> AsyncIterator[str]:
        cancel = threading.Event()
        stats = GenerationStats()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def produce() -> None:
            try:
                for chunk in engine.stream(req, cancel, stats):
                    loop.call_soon_threadsafe(queue.put_nowait, chunk)
            except Cancelled:
                pass
            except Exception as e:  # surfaced to the client as an error event
                loop.call_soon_threadsafe(queue.put_nowait, e)
            loop.call_soon_threadsafe(queue.put_nowait, None)

        worker = threading.Thread(target=produce, name=f"gen-{rid}", daemon=True)
        worker.start()
        obj = "chat.completion.chunk" if chat else "text_completion"
        try:
            if chat:
                yield _event(rid, obj, created, engine.model_name, {"delta": {"role": "assistant", "content": ""}})
            while True:
                item = await queue.get()
                if item is None:
                    break
                if isinstance(item, Exception):
                    err = item if isinstance(item, DsdError) else DsdError(str(item))
                    yield f"data: {json.dumps({'error': {'message': str(err), 'type': err.openai_type}})}\n\n"
                    break
                choice = {"delta": {"content": item.text}} if chat else {"text": item.text}
                yield _event(rid, obj, created, engine.model_name, choice, item.finish_reason)
                if await request.is_disconnected():
                    break
            usage = {"prompt_tokens": len(req.prompt_ids), "completion_tokens": stats.completion_tokens,
                     "total_tokens": len(req.prompt_ids) + stats.completion_tokens}
            yield f"data: {json.dumps({'id': rid, 'object': obj, 'created': created, 'model': engine.model_name, 'choices': [], 'usage': usage})}\n\n"  # noqa: E501
            yield "data: [DONE]\n\n"
        finally:
            cancel.set()  # client gone or stream finished: stop generating, close the target session

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> Response:
        tok = engine.draft.tokenizer
        ids = list(body.prompt) if isinstance(body.prompt, list) else tok(body.prompt)["input_ids"]
        if not ids:
            raise InvalidRequest("prompt is empty after tokenization", "prompt")
        return await _respond(_text_request(body, ids, body.max_tokens), request, body.stream, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        tok = engine.draft.tokenizer
        messages = [m.model_dump() for m in body.messages]
        ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
        if isinstance(ids, dict):
            ids = ids["input_ids"]
        max_tokens = body.max_completion_tokens or body.max_tokens
        return await _respond(_text_request(body, list(ids), max_tokens), request, body.stream, chat=True)

    return app


def _event(rid: str, obj: str, created: int, model: str, choice: dict[str, Any],
           finish_reason: str | None = None) -> str:
    payload = {"id": rid, "object": obj, "created": created, "model": model,
               "choices": [{"index": 0, "finish_reason": finish_reason, "logprobs": None, **choice}]}
    return f"data: {json.dumps(payload)}\n\n"
