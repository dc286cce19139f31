"""The runtime's error hierarchy and its single mapping to gRPC status codes and HTTP responses."""

from __future__ import annotations

import grpc


class DsdError(Exception):
    """Base class; `grpc_code` and `http_status` say how it crosses each boundary."""

    grpc_code = grpc.StatusCode.INTERNAL
    http_status = 500
    openai_type = "server_error"
    openai_code = "internal_error"


class InvalidRequest(DsdError):
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    http_status = 400
    openai_type = "invalid_request_error"
    openai_code = "invalid_value"

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        if code is not None:
            self.openai_code = code


class Overloaded(DsdError):
    """Bounded memory reached: the target refuses rather than grow (RESOURCE_EXHAUSTED / 429)."""

    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    http_status = 429
    openai_type = "rate_limit_error"
    openai_code = "rate_limit_exceeded"


class SessionBusy(DsdError):
    """Two rounds of one session at once (a client retried while its first round still runs)."""

    grpc_code = grpc.StatusCode.ABORTED
    http_status = 409
    openai_code = "conflict"


class TargetUnavailable(DsdError):
    """The draft could not reach a target within its deadline (503 with Retry-After)."""

    grpc_code = grpc.StatusCode.UNAVAILABLE
    http_status = 503
    openai_code = "service_unavailable"


class IncompatibleModels(DsdError):
    """Draft and target do not share a tokenizer; refused at start-up."""

    grpc_code = grpc.StatusCode.FAILED_PRECONDITION
    http_status = 500


class ModelNotFound(DsdError):
    grpc_code = grpc.StatusCode.NOT_FOUND
    http_status = 404
    openai_type = "invalid_request_error"
    openai_code = "model_not_found"

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param

