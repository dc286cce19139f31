"""Wait for a condition with a deadline: by polling a predicate or by watching API events. Never a bare sleep."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from kubernetes import watch

T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], timeout_s: float, what: str, interval_s: float = 0.2) -> T:
    """Returns the first truthy value of `probe()`; fails with `what` and the last value after the deadline."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; last value: {last!r}")
        time.sleep(interval_s)


def watch_until(list_fn: Callable[..., Any], predicate: Callable[[Any], bool], timeout_s: float, what: str,
                **kwargs: Any) -> Any:
    """Watches `list_fn` (e.g. CoreV1Api.list_namespaced_pod) until an object satisfies `predicate`.

    The current list is checked first, so an object that already satisfies it returns at once.
    """
    initial = list_fn(**kwargs)
    for obj in initial.items:
        if predicate(obj):
            return obj
    deadline = time.monotonic() + timeout_s
    w = watch.Watch()
    try:
        while time.monotonic() < deadline:
            remaining = max(1, int(deadline - time.monotonic()))
            for event in w.stream(list_fn, resource_version=initial.metadata.resource_version,
                                  timeout_seconds=remaining, **kwargs):
                if predicate(event["object"]):
                    return event["object"]
            initial = list_fn(**kwargs)
            for obj in initial.items:
                if predicate(obj):
                    return obj
    finally:
        w.stop()
    raise AssertionError(f"timed out after {timeout_s}s watching for {what}")
