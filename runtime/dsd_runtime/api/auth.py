"""Bearer API keys for the OpenAI API: `Authorization: Bearer <key>` on /v1/*, else 401 in OpenAI's shape.

Keys come from a file, one per line (blank lines and `#` comments ignored), re-read when it changes so a
rotated Kubernetes Secret applies without a restart; a file that vanishes or is emptied mid-rotation keeps the
last keys rather than opening the API. Probes and metrics (/healthz, /readyz, /metrics) stay open: they carry
no prompts. Keys are compared as SHA-256 digests in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
from pathlib import Path

from dsd_runtime.api.errors import ASGIApp, Receive, Scope, Send, error_response

log = logging.getLogger(__name__)
PROTECTED_PREFIX = "/v1/"


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def parse_keys(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


class ApiKeys:
    """The accepted keys of one file; `accepts(key)` re-reads the file when its stat changed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._digests: list[bytes] = []
        if not self._reload():
            raise ValueError(f"--api-keys-file {path}: no API key in it (one key per line)")

    def _reload(self) -> bool:
        try:
            st = os.stat(self.path)
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            if stamp == self._stamp:
                return True
            keys = parse_keys(self.path.read_text())
        except OSError as e:
            if self._stamp is None:
                raise ValueError(f"--api-keys-file {self.path}: {e.strerror or e}") from None
            return True  # mid-rotation: keep the last keys
        if not keys:
            if self._stamp is not None:
                log.warning("%s has no keys now; keeping the previous %d", self.path, len(self._digests))
            return False
        self._stamp, self._digests = stamp, [_digest(k) for k in keys]
        return True

    def accepts(self, key: str) -> bool:
        with self._lock:
            self._reload()
            digests = list(self._digests)
        given = _digest(key)
        return any([hmac.compare_digest(given, d) for d in digests])  # every key compared: no early exit


class ApiKeyMiddleware:
    """Pure ASGI: refuses /v1/* without a valid bearer key before any body is read."""

    def __init__(self, app: ASGIApp, keys: ApiKeys) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PROTECTED_PREFIX):
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        scheme, _, key = header.partition(" ")
        if not header:
            message = "no API key provided: send it as `Authorization: Bearer <key>`"
        elif scheme.lower() != "bearer" or not key.strip():
            message = "the Authorization header must be `Bearer <key>`"
        elif not self.keys.accepts(key.strip()):
            message = "incorrect API key provided"
        else:
            await self.app(scope, receive, send)
            return
        response = error_response(401, message, "invalid_request_error", code="invalid_api_key",
                                  headers={"WWW-Authenticate": 'Bearer realm="dsd"'})
        await response(scope, receive, send)
