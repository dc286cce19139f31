"""The target's sessions and their KV memory, accounted in bytes, with admission control.

Over capacity a NEW session is refused at once (Overloaded -> RESOURCE_EXHAUSTED, the API's 429): admitted
sessions are never evicted to make room for newcomers, which would trade one session's latency for another's
and re-prefill in circles. Admission leaves `growth_headroom` of the budget free so admitted sessions can
grow; only when growth still runs out does the least recently used idle session go (the draft is the source
of truth and resends its context, so nothing is lost). Sessions idle longer than `idle_ttl_s` are dropped.
All methods are safe to call from many threads; each holds the store's lock only briefly, never during
model compute.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from dsd_runtime.common.lm import CausalLM, KVSequence
from dsd_runtime.errors import Overloaded, SessionBusy


@dataclass
class Session:
    """KV holds the committed tokens except the last (`pending`), which the next verify feeds first."""

    session_id: str
    seq: KVSequence
    committed_len: int
    pending_token: int
    tokens: list[int] = field(default_factory=list)  # the committed tokens (for rolling back to a prefix)
    last_used: float = field(default_factory=time.monotonic)
    in_round: bool = False  # a round is using it: never evicted then

    def truncate(self, committed_len: int) -> None:
        """Back to the first `committed_len` committed tokens (a draft that left a target-only stream early)."""
        if not 1 <= committed_len <= self.committed_len:
            raise ValueError(f"cannot truncate a session of {self.committed_len} tokens to {committed_len}")
        CausalLM.rollback(self.seq, self.committed_len - committed_len)
        del self.tokens[committed_len:]
        self.committed_len = committed_len
        self.pending_token = self.tokens[-1]


class SessionStore:
    def __init__(self, max_sessions: int, max_kv_bytes: int, idle_ttl_s: float, kv_bytes_per_token: int,
                 kv_bytes: Callable[[KVSequence], int], growth_headroom: float = 0.1) -> None:
        self.max_sessions = max_sessions
        self.max_kv_bytes = max_kv_bytes
        self.idle_ttl_s = idle_ttl_s
        self.kv_bytes_per_token = kv_bytes_per_token
        self._bytes = kv_bytes  # the backend's count of what a sequence holds
        self.growth_headroom = growth_headroom
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()
        self._round_done = threading.Condition(self._lock)
        self.busy_wait_s = 30.0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._sessions)

    @property
    def kv_bytes(self) -> int:
        with self._lock:
            return self._kv_bytes()

    def _kv_bytes(self) -> int:
        return sum(self._bytes(s.seq) for s in self._sessions.values())

    @property
    def cached_tokens(self) -> int:
        with self._lock:
            return sum(s.seq.length for s in self._sessions.values())

    def get(self, session_id: str) -> Session | None:
        with self._lock:
            session = self._sessions.get(session_id)
            if session is not None:
                session.last_used = time.monotonic()
                self._sessions.move_to_end(session_id)
            return session

    def begin(self, session_id: str) -> Session | None:
        """The session for a round, marked in use (never evicted meanwhile); `end()` it after the round."""
        with self._round_done:
            session = self._sessions.get(session_id)
            # A round still running (a target-only stream's last step after the draft left it) is waited for.
            if session is not None and session.in_round and not self._round_done.wait_for(
                    lambda: not session.in_round, timeout=self.busy_wait_s):
                raise SessionBusy(f"session {session_id} has had a round in flight for {self.busy_wait_s:.0f}s")
            session = self._sessions.get(session_id)
            if session is None:
                return None
            session.in_round = True
            session.last_used = time.monotonic()
            self._sessions.move_to_end(session_id)
            return session

    def end(self, session: Session) -> None:
        with self._round_done:
            session.in_round = False
            self._round_done.notify_all()

    def remove(self, session_id: str) -> bool:
        with self._lock:
            return self._sessions.pop(session_id, None) is not None

    def admit_check(self, session_id: str, tokens_needed: int) -> None:
        """Refuses, before any compute, a new (or re-prefilled) session that does not fit now."""
        need = tokens_needed * self.kv_bytes_per_token
        if need > self.max_kv_bytes:
            raise Overloaded(f"session needs {need} bytes of KV ({tokens_needed} tokens) but this target holds "
                             f"at most {self.max_kv_bytes} (--max-cached-tokens or --max-kv-bytes)")
        with self._lock:
            self._evict_idle()
            replaced = self._sessions.get(session_id)
            used = self._kv_bytes() - (self._bytes(replaced.seq) if replaced is not None else 0)
            count = len(self._sessions) - (replaced is not None)
            limit = (1.0 - self.growth_headroom) * self.max_kv_bytes
            if count >= self.max_sessions or used + need > limit:
                raise Overloaded(
                    f"target at capacity: {count} sessions (at most {self.max_sessions}), {used} of "
                    f"{self.max_kv_bytes} KV bytes in use; retry later or on another replica")

    def admit(self, session: Session) -> None:
        with self._lock:
            self._sessions.pop(session.session_id, None)
            self._sessions[session.session_id] = session

    def reserve(self, session: Session, extra_tokens: int) -> None:
        """Before `session` grows by `extra_tokens`: evicts least recently used idle sessions if the budget
        needs it (never one in a round), else refuses the round (the session stays as it was)."""
        grow = max(0, session.seq.length + extra_tokens - session.seq.capacity) * self.kv_bytes_per_token
        if not grow:
            return
        # The buffer may double: count what the allocation could take.
        grow = max(grow, self._bytes(session.seq))
        with self._lock:
            while self._kv_bytes() + grow > self.max_kv_bytes:
                victim = next((sid for sid, s in self._sessions.items()
                               if sid != session.session_id and not s.in_round), None)
                if victim is None:
                    raise Overloaded(f"growing session {session.session_id} by {extra_tokens} tokens would exceed "
                                     f"the KV budget of {self.max_kv_bytes} bytes (--max-cached-tokens or "
                                     "--max-kv-bytes)")
                del self._sessions[victim]
                self.evictions += 1

    def evict_idle(self) -> int:
        with self._lock:
            return self._evict_idle()

    def _evict_idle(self) -> int:
        cutoff = time.monotonic() - self.idle_ttl_s
        stale = [sid for sid, s in self._sessions.items() if s.last_used < cutoff and not s.in_round]
        for sid in stale:
            del self._sessions[sid]
        self.evictions += len(stale)
        return len(stale)
