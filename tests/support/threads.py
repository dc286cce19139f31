"""Run a test's concurrent callers on threads with a deadline, so that a caller left waiting fails its test
instead of hanging the whole suite at exit (CI once hung for an hour on a thread blocked in a dead batcher)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any


def outcomes(calls: Sequence[Callable[[], Any]], timeout_s: float = 300,
             together: bool = False) -> list[Any]:
    """Runs each call on its own daemon thread; each one's result, or the exception it raised, in order.

    `together` starts the calls at one barrier (to make them overlap). Fails if a call is still running after
    `timeout_s`: a daemon thread does not keep the interpreter alive, so the suite goes on.
    """
    results: list[Any] = [None] * len(calls)
    start = threading.Barrier(len(calls)) if together else None

    def run(i: int) -> None:
        try:
            if start is not None:
                start.wait(timeout_s)
            results[i] = calls[i]()
        except BaseException as e:  # handed to the test
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,), daemon=True, name=f"test-caller-{i}")
               for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout_s)
    stuck = [i for i, t in enumerate(threads) if t.is_alive()]
    assert not stuck, f"calls {stuck} still running after {timeout_s}s"
    return results


def results(calls: Sequence[Callable[[], Any]], timeout_s: float = 300, together: bool = True) -> list[Any]:
    """Like `outcomes`, started together by default, and re-raises the first call's exception."""
    got = outcomes(calls, timeout_s, together)
    for value in got:
        if isinstance(value, BaseException):
            raise value
    return got
