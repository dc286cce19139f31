"""A daemon thread that calls one function every few seconds until stopped (file re-reads, rotations)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Periodic(threading.Thread):
    def __init__(self, name: str, interval_s: float, fn: Callable[[], object]) -> None:
        super().__init__(name=name, daemon=True)
        self.interval_s = interval_s
        self.fn = fn
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.wait(self.interval_s):
            try:
                self.fn()
            except Exception:  # a failed check must not end the thread: the next one may succeed
                log.exception("%s failed", self.name)

    def stop(self) -> None:
        self._stopping.set()
