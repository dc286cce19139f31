"""The OpenAI-compatible HTTP API of a draft server (FastAPI).

/v1/completions, /v1/chat/completions (streamed as SSE or not; n choices per prompt, run concurrently),
/v1/models, /healthz, /readyz, /metrics, /openapi.json. Ready (/readyz, /v1/models) exactly while a request can
be served: the engine's `ready` event, kept true to the target by draft.monitoring. A client that disconnects
cancels its generations, streamed or not, and their target sessions are closed. Errors: api.errors.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from dsd_runtime.api import errors, responses
from dsd_runtime.api.auth import ApiKeyMiddleware, ApiKeys
from dsd_runtime.api.responses import Envelope
from dsd_runtime.api.schemas import ERROR_RESPONSES, GENERATION_RESPONSES, ChatCompletionRequest, CompletionRequest
from dsd_runtime.common import seeding
from dsd_runtime.draft.engine import Completion, DraftEngine, TextRequest
from dsd_runtime.draft.speculating import Cancelled, GenerationStats
from dsd_runtime.errors import DsdError, InvalidRequest, ModelNotFound, TargetUnavailable
from dsd_spec.sampling import SamplingParams

DEFAULT_MAX_TOKENS = 256
ROUTES = frozenset({"/v1/completions", "/v1/chat/completions", "/v1/models"})


@dataclass(frozen=True)
class Choice:
    """One generation of a response: its index, request and the text an echo puts before it."""

    index: int
    request: TextRequest
    prefix: str = ""


def create_app(engine: DraftEngine, max_body_bytes: int = errors.MAX_BODY_BYTES,
               api_keys: ApiKeys | None = None) -> FastAPI:
    """`api_keys`: require a bearer key on /v1/* (401 otherwise); None: the API is open."""
    app = FastAPI(title="DSD draft server", description="OpenAI-compatible API of a DSD draft server",
                  docs_url=None, redoc_url=None)
    errors.install(app)
    if api_keys is not None:  # added before the guard, so the guard (outermost) counts the 401s too
        app.add_middleware(ApiKeyMiddleware, keys=api_keys)
    app.add_middleware(errors.GuardMiddleware, requests=engine.metrics.requests, routes=ROUTES,
                       max_body_bytes=max_body_bytes)
    api = _Api(engine)

    @app.get("/healthz", response_class=PlainTextResponse)
    async def healthz() -> Response:
        if engine.batcher is not None and engine.batcher.failure is not None:  # fail-stop: a restart heals it
            return PlainTextResponse(f"unhealthy: the draft model's batcher failed ({engine.batcher.failure!r})",
                                     status_code=503)
        return PlainTextResponse("ok")

    @app.get("/readyz", response_class=PlainTextResponse)
    async def readyz() -> Response:
        if not engine.ready.is_set():
            return PlainTextResponse("not ready: not connected to a serving target", status_code=503)
        return PlainTextResponse("ok")

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(engine.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models", responses={503: ERROR_RESPONSES[503]})
    async def list_models() -> dict[str, Any]:
        api.require_ready()
        return {"object": "list", "data": [{"id": engine.model_name, "object": "model", "created": 0,
                                            "owned_by": "dsd"}]}

    @app.post("/v1/completions", responses=GENERATION_RESPONSES)
    async def completions(body: CompletionRequest, request: Request) -> Response:
        return await api.respond(api.completion_choices(body), body, request, chat=False)

    @app.post("/v1/chat/completions", responses=GENERATION_RESPONSES)
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        return await api.respond(api.chat_choices(body), body, request, chat=True)

    return app


class _Api:
    """Turns validated bodies into engine requests and engine output into OpenAI responses."""

    def __init__(self, engine: DraftEngine) -> None:
        self.engine = engine
        self.texts = responses.TokenTexts(engine.draft.tokenizer)
        # One thread per generation in flight (they mostly wait on the target); the target bounds how many.
        self.pool = futures.ThreadPoolExecutor(max_workers=512, thread_name_prefix="dsd-complete")

    def require_ready(self) -> None:
        if not self.engine.ready.is_set():
            raise TargetUnavailable("draft server is not connected to a serving target")

    # ---- requests

    def completion_choices(self, body: CompletionRequest) -> list[Choice]:
        tok = self.engine.draft.tokenizer
        choices = []
        for prompt in body.prompts():
            ids = list(prompt) if isinstance(prompt, list) else list(tok(prompt)["input_ids"])
            if not ids:
                raise InvalidRequest("prompt is empty after tokenization", "prompt")
            prefix = "" if not body.echo else prompt if isinstance(prompt, str) else tok.decode(ids)
            for req in self._requests(body, ids, body.max_tokens, logprobs=body.logprobs is not None,
                                      top_logprobs=body.logprobs or 0, first_index=len(choices)):
                choices.append(Choice(len(choices), req, prefix))
        return choices

    def chat_choices(self, body: ChatCompletionRequest) -> list[Choice]:
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        try:
            ids = self.engine.chat_prompt(messages)
        except Exception as e:  # the template's own checks (role order, ...) raise from Jinja
            raise InvalidRequest(f"messages cannot be rendered by the model's chat template: {e}",
                                 "messages") from None
        reqs = self._requests(body, ids, body.output_limit, logprobs=body.logprobs,
                              top_logprobs=body.top_logprobs or 0, first_index=0)
        return [Choice(i, r) for i, r in enumerate(reqs)]

    def _requests(self, body: CompletionRequest | ChatCompletionRequest, prompt_ids: list[int],
                  max_tokens: int | None, logprobs: bool, top_logprobs: int, first_index: int) -> list[TextRequest]:
        engine = self.engine
        if body.model is not None and body.model != engine.model_name:
            raise ModelNotFound(f"model {body.model!r} does not exist here; this server serves "
                                f"{engine.model_name!r}", "model")
        vocab = engine.vocab_size
        if any(not 0 <= t < vocab for t in prompt_ids):
            raise InvalidRequest(f"prompt contains token ids outside the vocabulary [0, {vocab})", "prompt")
        n = max_tokens or min(DEFAULT_MAX_TOKENS, max(1, engine.target_max_context - len(prompt_ids)))
        engine.check_length(len(prompt_ids), n)
        given, defaults = body.model_fields_set, engine.sampling_defaults
        params = SamplingParams(
            temperature=body.temperature if "temperature" in given and body.temperature is not None
            else defaults.temperature,
            top_k=body.top_k if "top_k" in given and body.top_k is not None else defaults.top_k,
            top_p=body.top_p if "top_p" in given and body.top_p is not None else defaults.top_p)
        stops = body.stop_strings()
        return [TextRequest(prompt_ids, n, params, _choice_seed(body.seed, first_index + i), stops, logprobs,
                            top_logprobs)
                for i in range(body.n)]

    # ---- responses

    async def respond(self, choices: list[Choice], body: CompletionRequest | ChatCompletionRequest,
                      request: Request, chat: bool) -> Response:
        self.require_ready()
        env = Envelope(f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}",
                       "chat.completion" if chat else "text_completion", int(time.time()), self.engine.model_name,
                       chat)
        wants_logprobs = choices[0].request.logprobs
        if body.stream:
            chunk_env = Envelope(env.id, "chat.completion.chunk" if chat else "text_completion", env.created,
                                 env.model, chat)
            usage_n = body.n if body.include_usage else 0
            run = _Generations(self.engine, choices, asyncio.get_running_loop())
            # The status line waits for the first token: a target that refuses the session (full) is a 429
            # with Retry-After, which clients retry, rather than an error event inside a 200 stream.
            first = await run.first(request)
            if first is None or isinstance(first[1], DsdError):
                run.cancel.set()
                return Response(status_code=499) if first is None else errors.from_dsd_error(first[1])
            return StreamingResponse(self._stream(run, first, chunk_env, wants_logprobs, usage_n),
                                     media_type="text/event-stream")
        done = await self._complete_all(choices, request)
        if done is None:  # the client went away: nobody reads this
            return Response(status_code=499)
        bodies = [responses.choice(env, c.index, c.prefix + d.text, d.finish_reason,
                                   responses.logprobs_field(env, wants_logprobs, d.logprobs, self.texts,
                                                            len(c.prefix)))
                  for c, d in zip(choices, done, strict=True)]
        return JSONResponse(env.body(bodies, usage=responses.usage(
            _prompt_tokens(choices, body.n), sum(d.completion_tokens for d in done), [d.stats for d in done])))

    async def _complete_all(self, choices: list[Choice], request: Request) -> list[Completion] | None:
        """All choices concurrently; None if the client disconnects first (every generation is cancelled)."""
        cancels = [threading.Event() for _ in choices]
        loop = asyncio.get_running_loop()
        # Not asyncio.to_thread: its default pool (a few threads) would queue requests here, unseen, instead of
        # letting them reach the target, which admits them or answers 429 at once.
        work = asyncio.ensure_future(asyncio.gather(*[
            loop.run_in_executor(self.pool, self.engine.complete, c.request, cancel)
            for c, cancel in zip(choices, cancels, strict=True)]))
        work.add_done_callback(_retrieve)
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for cancel in cancels:
                cancel.set()  # no-op for finished generations; stops the rest
            gone.cancel()
        return work.result() if work.done() else None

    async def _stream(self, run: _Generations, peeked: tuple[int, Any], env: Envelope, wants_logprobs: bool,
                      usage_n: int) -> AsyncIterator[str]:
        """SSE chunks; with usage_n (= n, when stream_options.include_usage) a final usage chunk."""
        include_usage = usage_n > 0
        choices, cancel, queue, stats = run.choices, run.cancel, run.queue, run.stats
        extra = {"usage": None} if include_usage else {}
        try:
            for c in choices:
                first = c.prefix if c.prefix else ("" if env.chat else None)
                if first is not None:
                    yield responses.sse(env.body([responses.chunk_choice(env, c.index, first, None, None,
                                                                         role=True)], **extra))
            offsets = [len(c.prefix) for c in choices]
            running = len(choices)
            upcoming: tuple[int, Any] | None = peeked  # what respond() waited for comes first
            while running:
                index, item = upcoming if upcoming is not None else await queue.get()
                upcoming = None
                if item is None:
                    running -= 1
                    continue
                if isinstance(item, BaseException):
                    yield responses.sse(errors.stream_error(item))
                    break
                lp = responses.logprobs_field(env, wants_logprobs, item.logprobs, self.texts, offsets[index])
                offsets[index] += len(item.text)
                yield responses.sse(env.body([responses.chunk_choice(env, index, item.text, item.finish_reason,
                                                                     lp)], **extra))
            if include_usage:
                yield responses.sse(env.body([], usage=responses.usage(
                    _prompt_tokens(choices, usage_n), sum(s.completion_tokens for s in stats), stats)))
            yield responses.SSE_DONE
        finally:
            cancel.set()  # client gone or stream finished: stop generating, close the target sessions


class _Generations:
    """The choices of one streamed request, each generating on its own thread into one queue of
    (choice index, TextChunk | exception | None at its end)."""

    def __init__(self, engine: DraftEngine, choices: list[Choice], loop: asyncio.AbstractEventLoop) -> None:
        self.choices = choices
        self.cancel = threading.Event()
        self.queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()
        self.stats = [GenerationStats() for _ in choices]

        def produce(c: Choice) -> None:
            try:
                for chunk in engine.stream(c.request, self.cancel, self.stats[c.index]):
                    loop.call_soon_threadsafe(self.queue.put_nowait, (c.index, chunk))
            except Cancelled:
                pass
            except Exception as e:  # surfaced to the client as an error (event)
                loop.call_soon_threadsafe(self.queue.put_nowait, (c.index, e))
            loop.call_soon_threadsafe(self.queue.put_nowait, (c.index, None))

        for c in choices:
            threading.Thread(target=produce, args=(c,), name=f"gen-{c.index}", daemon=True).start()

    async def first(self, request: Request) -> tuple[int, Any] | None:
        """The first item any choice produced; None if the client went away before it."""
        item = asyncio.ensure_future(self.queue.get())
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({item, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if item.done():
            return item.result()
        item.cancel()
        return None


def _choice_seed(seed: int | None, index: int) -> int | None:
    """Choice 0 keeps the request's seed (n=1 and n>1 agree on it); the others get seeds derived from it."""
    if seed is None or index == 0:
        return seed
    return int(seeding.position_generator(seed, index, "choice").initial_seed())


async def _disconnected(request: Request) -> None:
    """Returns when the client closes its connection (the body has been read, so only a disconnect is left)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # a cancelled generation's Cancelled is expected: mark it retrieved


def _prompt_tokens(choices: list[Choice], n: int) -> int:
    """Each prompt counts once, however many choices it has (choices are prompt-major, n per prompt)."""
    return sum(len(c.request.prompt_ids) for c in choices[::n])
