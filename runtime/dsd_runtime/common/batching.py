"""Continuous batching: forward calls made concurrently by many sessions' threads run as one packed pass.

Each caller blocks in `forward()` as if it ran the model alone. One worker thread takes whatever is queued
when the previous pass ends (sessions join and leave every step), packs it up to `max_batch_tokens`, and
runs it with `CausalLM.forward_many`. A prefill larger than what is left of the budget is split into chunks
over several passes (chunked prefill), so one long prompt does not stall every other session's step. A call
is all or nothing: when a pass fails, each of its sequences is rolled back to where that call found it.
Sessions whose step just finished come back within a moment (a decode stream sends its token and asks for
the next): a pass waits up to `gather_s` (and at most a fifth of the last pass) for those of the previous
pass, so they stay in step instead of drifting into passes of one. `max_batch_sequences=1` serialises the
calls (one session per pass), the behaviour before batching, kept for comparisons.

The worker is fail-stop: an error outside the model pass is a bug in this bookkeeping, after which no queue
state can be trusted, so every waiting and later call fails with `BatcherStopped` (never a caller blocked
for good) and `on_failure` tells the server, which stops reporting itself healthy.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from dsd_runtime.common.lm import CausalLM, ForwardItem, KVSequence

PassObserver = Callable[[int, int, float], None]  # (sequences, tokens, seconds) of one pass

log = logging.getLogger(__name__)


class BatcherStopped(RuntimeError):
    """The batcher was closed, or its worker failed: no call runs any more."""


@dataclass(eq=False)  # identity: the queue removes exactly this call (field equality would compare tensors)
class _Call:
    seq: KVSequence
    token_ids: list[int]
    keep_last: int
    length_at_start: int
    fed: int = 0  # tokens already run (earlier chunks)
    done: threading.Event = field(default_factory=threading.Event)
    logits: torch.Tensor | None = None
    error: BaseException | None = None


class BatchingLM:
    """A CausalLM whose `forward` may be called from many threads at once; calls are batched.

    Exposes what the callers of a CausalLM use (forward, new_sequence, rollback, sizes), so servers and
    proposers take either.
    """

    def __init__(self, lm: CausalLM, max_batch_tokens: int = 1024, max_batch_sequences: int = 64,
                 on_pass: PassObserver | None = None, gather_s: float = 0.005,
                 on_failure: Callable[[BaseException], None] | None = None) -> None:
        if max_batch_tokens < 1 or max_batch_sequences < 1:
            raise ValueError("max_batch_tokens and max_batch_sequences must be >= 1")
        self.lm = lm
        # What callers of a CausalLM read.
        self.name, self.vocab_size, self.max_context = lm.name, lm.vocab_size, lm.max_context
        self.kv_bytes_per_token = lm.kv_bytes_per_token
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_sequences = max_batch_sequences
        self.on_pass = on_pass
        self.gather_s = gather_s
        self.on_failure = on_failure
        self.failure: BaseException | None = None  # why the worker stopped, when it failed
        self._previous: set[int] = set()  # sequences of the last pass
        self._last_pass_s = 0.0
        self._queue: deque[_Call] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._worker = threading.Thread(target=self._run, name=f"dsd-batch-{lm.name}", daemon=True)
        self._worker.start()

    def new_sequence(self) -> KVSequence:
        return self.lm.new_sequence()

    rollback = staticmethod(CausalLM.rollback)

    def forward(self, seq: KVSequence, token_ids: Sequence[int], keep_last: int | None = None) -> torch.Tensor:
        """As CausalLM.forward; blocks until the pass that completes this call has run."""
        tokens = list(token_ids)
        keep = len(tokens) if keep_last is None else keep_last
        if not tokens or not 0 <= keep <= len(tokens):
            raise ValueError(f"forward over {len(tokens)} tokens cannot keep the last {keep} logits")
        call = _Call(seq, tokens, keep, seq.length)
        with self._cond:
            if self._closed:
                raise self._stopped()
            self._queue.append(call)
            self._cond.notify()
        call.done.wait()
        if call.error is not None:
            raise call.error
        assert call.logits is not None
        return call.logits

    def close(self, timeout_s: float = 60.0) -> None:
        """Stops the worker once the pass it is running ends (queued calls fail with BatcherStopped) and waits
        for it to exit. Why wait: a worker still running when the interpreter finalises frees its last pass's
        tensors there, torch releases the GIL to do it, and a daemon thread that asks for the GIL back during
        finalisation is ended by a forced unwind that aborts the process (`dsd generate` exited with SIGABRT)."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        if threading.current_thread() is not self._worker:
            self._worker.join(timeout_s)
            if self._worker.is_alive():
                log.warning("the %s batcher's worker is still in a pass %.0f s after close()", self.name, timeout_s)

    @property
    def closed(self) -> bool:
        """Whether the batcher refuses new calls: `close()` has begun, or the worker failed."""
        return self._closed

    @property
    def stopped(self) -> bool:
        """Whether the worker has exited (after `close()`, or a failure)."""
        return not self._worker.is_alive()

    def _gather(self) -> None:
        """Waits (briefly) until every sequence of the previous pass is queued again, or the budget is full."""
        if self.max_batch_sequences == 1 or len(self._previous) < 2:
            return
        deadline = time.monotonic() + min(self.gather_s, self._last_pass_s / 5)
        while not self._closed and len(self._queue) < self.max_batch_sequences:
            if self._previous <= {id(c.seq) for c in self._queue}:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._cond.wait(left)

    def _take(self) -> list[tuple[_Call, int]]:
        """The next pass: (call, tokens to run now) in queue order, within the token and sequence budgets."""
        batch: list[tuple[_Call, int]] = []
        seen: set[int] = set()
        budget = self.max_batch_tokens
        for call in self._queue:
            if len(batch) >= self.max_batch_sequences or budget <= 0:
                break
            if id(call.seq) in seen:  # one call per sequence and pass; the next waits its turn
                continue
            remaining = len(call.token_ids) - call.fed
            take = remaining if remaining <= budget else budget
            if take < remaining:
                # A chunk: the last chunk must hold every position whose logits are kept.
                take = min(take, remaining - call.keep_last)
                if take <= 0:
                    take = remaining if not batch else 0  # alone in a pass, a call runs whole
            if take <= 0:
                continue
            batch.append((call, take))
            seen.add(id(call.seq))
            budget -= take
        return batch

    def _stopped(self) -> BatcherStopped:
        if self.failure is None:
            return BatcherStopped("the batcher is closed")
        error = BatcherStopped(f"the batcher stopped after an internal error: {self.failure!r}")
        error.__cause__ = self.failure
        return error

    def _run(self) -> None:
        try:
            self._serve()
        except BaseException as e:  # fail-stop: see the module docstring
            log.exception("the %s batcher's worker failed; every waiting and later call fails", self.name)
            with self._cond:
                self.failure, self._closed = e, True
                self._fail_queued()
            if self.on_failure is not None:
                self.on_failure(e)

    def _serve(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                self._gather()
                if self._closed:
                    self._fail_queued()
                    return
                batch = self._take()
            self._run_pass(batch)

    def _fail_queued(self) -> None:  # under the condition's lock
        for call in self._queue:
            call.error = self._stopped()
            call.done.set()
        self._queue.clear()

    def _run_pass(self, batch: list[tuple[_Call, int]]) -> None:
        items = []
        for call, take in batch:
            final = call.fed + take == len(call.token_ids)
            items.append(ForwardItem(call.seq, call.token_ids[call.fed: call.fed + take],
                                     call.keep_last if final else 0))
        start = time.perf_counter()
        try:
            results = self.lm.forward_many(items)
        except BaseException as e:
            with self._cond:
                for call, _ in batch:
                    CausalLM.rollback(call.seq, call.seq.length - call.length_at_start)
                    call.error = e
                    self._queue.remove(call)
                    call.done.set()
            return
        self._last_pass_s = time.perf_counter() - start
        self._previous = {id(call.seq) for call, _ in batch}
        if self.on_pass is not None:
            self.on_pass(len(batch), sum(take for _, take in batch), self._last_pass_s)
        with self._cond:
            for (call, take), logits in zip(batch, results, strict=True):
                call.fed += take
                if call.fed == len(call.token_ids):
                    call.logits = logits
                    self._queue.remove(call)
                    call.done.set()
