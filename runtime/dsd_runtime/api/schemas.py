"""Request bodies of the OpenAI-compatible API: what is supported, refused (400 naming the field) or ignored.

Validated by pydantic, so every refusal names its parameter. Parameters that would change the output
distribution in a way DSD cannot reproduce losslessly (penalties, logit_bias, tools, JSON modes) are refused,
never silently dropped; pure metadata (user, metadata, store, ...) is accepted and ignored. docs/api.md holds the
table generated from these rules.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

# Limits (a request over one gets a 400 or 413 naming it).
MAX_STOP_STRINGS = 4  # OpenAI's own limit
MAX_STOP_CHARS = 128  # a stop string is held back from the stream until it cannot match: keep it short
MAX_CHOICES = 16  # n x number of prompts: each choice is a concurrent generation on the target
MAX_COMPLETION_LOGPROBS = 5  # OpenAI's limit for /v1/completions `logprobs`
MAX_TOP_LOGPROBS = 20  # OpenAI's limit for chat `top_logprobs` (the target's limit too)


def unsupported(message: str) -> PydanticCustomError:
    return PydanticCustomError("unsupported_parameter", message)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


NonEmptyText = Annotated[str, Field(min_length=1)]
TokenIds = Annotated[list[int], Field(min_length=1)]


class _Common(BaseModel):
    # Unknown fields are ignored (clients send provider-specific extras); docs/api.md lists the known ones.
    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0)  # an extension (vLLM's); 0 = off
    seed: int | None = Field(default=None, ge=0, lt=1 << 63)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, le=MAX_CHOICES)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    user: str | None = None  # ignored: no per-user accounting

    @field_validator("stop")
    @classmethod
    def _stop_limits(cls, v: str | list[str] | None) -> str | list[str] | None:
        stops = [v] if isinstance(v, str) else (v or [])
        if len(stops) > MAX_STOP_STRINGS:
            raise ValueError(f"at most {MAX_STOP_STRINGS} stop strings, got {len(stops)}")
        for s in stops:
            if not 1 <= len(s) <= MAX_STOP_CHARS:
                raise ValueError(f"each stop string must have 1 to {MAX_STOP_CHARS} characters, got {len(s)}")
        return v

    @field_validator("frequency_penalty", "presence_penalty")
    @classmethod
    def _no_penalties(cls, v: float | None) -> float | None:
        if v:
            raise unsupported("only 0 is supported: a penalty changes the target's distribution, which DSD "
                              "reproduces exactly")
        return v

    @field_validator("logit_bias")
    @classmethod
    def _no_logit_bias(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v:
            raise unsupported("logit_bias is not supported: it changes the target's distribution")
        return v

    @model_validator(mode="after")
    def _stream_options_need_stream(self) -> _Common:
        if self.stream_options is not None and not self.stream:
            raise PydanticCustomError("invalid_value", "stream_options is only allowed when stream is true")
        return self

    def stop_strings(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class CompletionRequest(_Common):
    # One prompt (text or token ids) or a batch of them; each prompt gets `n` choices.
    prompt: NonEmptyText | TokenIds | Annotated[list[NonEmptyText], Field(min_length=1)] \
        | Annotated[list[TokenIds], Field(min_length=1)]
    logprobs: int | None = Field(default=None, ge=0, le=MAX_COMPLETION_LOGPROBS)
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = Field(default=None, ge=1)

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, v: str | None) -> str | None:
        if v:
            raise unsupported("suffix (insertion) is not supported: the target is a left-to-right model")
        return v

    @model_validator(mode="after")
    def _checks(self) -> CompletionRequest:
        if self.best_of is not None and self.best_of != self.n:
            raise PydanticCustomError("unsupported_parameter",
                                      "best_of must equal n: ranking candidates server-side is not supported")
        if self.echo and self.logprobs is not None:
            raise PydanticCustomError("unsupported_parameter",
                                      "echo with logprobs (logprobs of the prompt) is not supported")
        if len(self.prompts()) * self.n > MAX_CHOICES:
            raise PydanticCustomError("invalid_value", f"prompts x n must be at most {MAX_CHOICES}")
        return self

    def prompts(self) -> list[str | list[int]]:
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if p and isinstance(p[0], int):
            return [p]  # type: ignore[list-item]
        return list(p)  # type: ignore[arg-type]


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[TextPart]
    name: str | None = None  # ignored: the chat template has no place for it

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: str

    @field_validator("type")
    @classmethod
    def _text_only(cls, v: str) -> str:
        if v != "text":
            raise unsupported(f"response_format {v!r} is not supported; only 'text' (constrained decoding is not "
                              "implemented)")
        return v


class ChatCompletionRequest(_Common):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    response_format: ResponseFormat | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    function_call: Any = None
    modalities: list[str] | None = None
    audio: Any = None
    prediction: Any = None
    # Accepted and ignored (metadata, or options without effect here): see docs/api.md.
    parallel_tool_calls: bool | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    reasoning_effort: str | None = None

    @field_validator("tools", "functions")
    @classmethod
    def _no_tools(cls, v: list[Any] | None) -> list[Any] | None:
        if v:
            raise unsupported("tool calling is not supported")
        return v

    @field_validator("tool_choice", "function_call")
    @classmethod
    def _no_tool_choice(cls, v: Any) -> Any:
        if v not in (None, "none", "auto"):
            raise unsupported("tool calling is not supported")
        return v

    @field_validator("modalities")
    @classmethod
    def _text_modality(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and set(v) != {"text"}:
            raise unsupported("only the text modality is supported")
        return v

    @field_validator("audio", "prediction")
    @classmethod
    def _absent(cls, v: Any) -> Any:
        if v is not None:
            raise unsupported("not supported: text output only, and predicted outputs are not implemented")
        return v

    @model_validator(mode="after")
    def _checks(self) -> ChatCompletionRequest:
        if self.top_logprobs and not self.logprobs:
            raise PydanticCustomError("invalid_value", "top_logprobs needs logprobs to be true")
        return self

    @property
    def output_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error body, which every 4xx/5xx of this API has."""

    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": what} for status, what in (
        (400, "Invalid or unsupported parameter (`param` names it)"), (404, "Unknown model"),
        (413, "Request body too large"), (429, "Target over capacity (Retry-After)"),
        (500, "Internal error"), (503, "Not connected to a serving target (Retry-After)"))}

# A generation answers JSON, or with `stream: true` server-sent events (OpenAI's `data: {...}` chunks).
GENERATION_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The completion; with `stream: true`, server-sent events of completion chunks",
          "content": {"application/json": {}, "text/event-stream": {"schema": {"type": "string"}}}},
    **ERROR_RESPONSES}
