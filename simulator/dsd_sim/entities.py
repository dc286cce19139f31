"""The simulated machines: cloud targets (batching, KV admission) and edge draft devices.

A target serves one forward pass at a time, batching the prefill and verify work queued while it was busy
(plus an optional batch window), bounded by max batch and max tokens. Pass time = t_v(positions in the batch:
prompt tokens being prefilled + verified window positions) + a per-sequence cost for each sequence beyond the
first (CPU: each attends its own KV) + the longest co-located drafting (fused mode).
Admission reserves a session's prompt + output tokens of KV capacity; sessions wait, in order, when it is full.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import simpy

from dsd_sim.metrics import Metrics
from dsd_sim.policies import WindowPolicy
from dsd_spec import Ema, VerifyCostModel


@dataclass(slots=True)
class Work:
    """One sequence's share of a forward pass; `done` fires when the pass ends."""

    verify_tokens: int
    prefill_tokens: int
    extra_s: float  # fused mode: the draft's steps run on the target before the verify
    done: simpy.Event


class Target:
    def __init__(self, env: simpy.Environment, index: int, verify: VerifyCostModel, window_s: float,
                 max_batch: int, max_tokens: int, kv_capacity: int, metrics: Metrics,
                 per_sequence_s: float = 0.0, gather_s: float = 0.0) -> None:
        self.env, self.index = env, index
        self.verify, self.per_sequence_s, self.gather_s = verify, per_sequence_s, gather_s
        self.window_s, self.max_batch, self.max_tokens = window_s, max_batch, max_tokens
        self.kv_capacity, self.kv_used = kv_capacity, 0
        self.metrics = metrics
        self.queue: deque[Work] = deque()
        self.sessions = 0
        self._admissions: deque[tuple[int, simpy.Event]] = deque()
        self._wake: simpy.Event | None = None
        self.busy_s = 0.0
        env.process(self._serve())

    def load(self) -> int:
        """For join-shortest-queue routing: sessions placed here, admitted or waiting."""
        return self.sessions

    def submit(self, verify_tokens: int, prefill_tokens: int = 0, extra_s: float = 0.0) -> simpy.Event:
        done = self.env.event()
        self.queue.append(Work(verify_tokens, prefill_tokens, extra_s, done))
        if self._wake is not None and not self._wake.triggered:
            self._wake.succeed()
        return done

    def admit(self, tokens: int) -> simpy.Event | None:
        """None when admitted at once; otherwise an event that fires when the cache has room."""
        self.sessions += 1
        if not self._admissions and self.kv_used + tokens <= self.kv_capacity:
            self.kv_used += tokens
            return None
        self.metrics.on_admission_wait()
        event = self.env.event()
        self._admissions.append((tokens, event))
        return event

    def release(self, tokens: int) -> None:
        self.sessions -= 1
        self.kv_used -= tokens
        while self._admissions and self.kv_used + self._admissions[0][0] <= self.kv_capacity:
            need, event = self._admissions.popleft()
            self.kv_used += need
            event.succeed()

    def _take_batch(self) -> list[Work]:
        batch: list[Work] = []
        tokens = 0
        while self.queue and len(batch) < self.max_batch:
            w = self.queue[0]
            size = w.verify_tokens + w.prefill_tokens
            if batch and tokens + size > self.max_tokens:
                break
            batch.append(self.queue.popleft())
            tokens += size
        return batch

    def _gather(self, previous: int, last_pass_s: float):  # type: ignore[no-untyped-def]
        """The runtime's gather: wait briefly (at most a fifth of the last pass) for the previous pass's
        sequences to queue again, so sessions that step in turn stay in one pass."""
        env = self.env
        want = min(previous, self.max_batch)
        deadline = env.now + min(self.gather_s, last_pass_s / 5)
        while len(self.queue) < want and env.now < deadline:
            self._wake = env.event()
            yield self._wake | env.timeout(deadline - env.now)
            self._wake = None

    def _serve(self):  # type: ignore[no-untyped-def]
        env = self.env
        previous, last_pass_s = 0, 0.0
        while True:
            if not self.queue:
                self._wake = env.event()
                yield self._wake
                self._wake = None
                if self.window_s > 0 and len(self.queue) < self.max_batch:
                    yield env.timeout(self.window_s)
            if self.gather_s > 0 and previous >= 2:
                yield from self._gather(previous, last_pass_s)
            batch = self._take_batch()
            positions = sum(w.verify_tokens + w.prefill_tokens for w in batch)
            seconds = (self.verify(positions) + self.per_sequence_s * (len(batch) - 1)
                       + max(w.extra_s for w in batch))
            yield env.timeout(seconds)
            self.busy_s += seconds
            self.metrics.on_pass(len(batch))
            previous, last_pass_s = len(batch), seconds
            for w in batch:
                w.done.succeed()
            # Let sessions living on the target (target-only, fused) queue their next step at this same instant,
            # as continuous batching keeps running sequences in the next step; without this, work that arrived
            # during the pass would start a pass alone and split the batch into two alternating halves.
            yield env.timeout(0)


class DraftDevice:
    """An edge device running the draft model; its steps are sequential across the requests it serves."""

    __slots__ = ("free_at", "index", "link", "step_s", "wait_s", "window")

    def __init__(self, index: int, step_s: float, link: object, window: WindowPolicy) -> None:
        self.index, self.step_s, self.link, self.window = index, step_s, link, window
        self.free_at = 0.0
        self.wait_s = Ema()  # send-to-answer time, for the draft-ahead decision

    def reserve(self, now: float, steps: int) -> float:
        """Books `steps` draft steps after whatever is already booked; returns when they finish."""
        start = self.free_at if self.free_at > now else now
        self.free_at = start + steps * self.step_s
        return self.free_at
