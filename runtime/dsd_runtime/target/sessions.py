"""Bounded per-session KV caches: max sessions, max cached tokens, LRU eviction and an idle TTL.

Evicting is always safe: the draft is the source of truth and resends its context when a session is gone.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field

from dsd_runtime.common.lm import CausalLM, KVSequence
from dsd_runtime.errors import Overloaded


@dataclass
class Session:
    """KV holds the committed tokens except the last (`pending`), which the next verify feeds first."""

    session_id: str
    seq: KVSequence
    committed_len: int
    pending_token: int
    tokens: list[int] = field(default_factory=list)  # the committed tokens (for rolling back to a prefix)
    last_used: float = field(default_factory=time.monotonic)

    def truncate(self, committed_len: int) -> None:
        """Back to the first `committed_len` committed tokens (a draft that left a target-only stream early)."""
        if not 1 <= committed_len <= self.committed_len:
            raise ValueError(f"cannot truncate a session of {self.committed_len} tokens to {committed_len}")
        CausalLM.rollback(self.seq, self.committed_len - committed_len)
        del self.tokens[committed_len:]
        self.committed_len = committed_len
        self.pending_token = self.tokens[-1]


class SessionStore:
    def __init__(self, max_sessions: int, max_cached_tokens: int, idle_ttl_s: float) -> None:
        self.max_sessions = max_sessions
        self.max_cached_tokens = max_cached_tokens
        self.idle_ttl_s = idle_ttl_s
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._sessions)

    @property
    def cached_tokens(self) -> int:
        return sum(s.seq.length for s in self._sessions.values())

    def get(self, session_id: str) -> Session | None:
        session = self._sessions.get(session_id)
        if session is not None:
            session.last_used = time.monotonic()
            self._sessions.move_to_end(session_id)
        return session

    def remove(self, session_id: str) -> bool:
        return self._sessions.pop(session_id, None) is not None

    def check_admissible(self, tokens_needed: int) -> None:
        """Refuses, before any compute, a session that could never fit."""
        if tokens_needed > self.max_cached_tokens:
            raise Overloaded(
                f"session needs {tokens_needed} cached tokens but this target holds at most "
                f"{self.max_cached_tokens} (--max-cached-tokens)"
            )

    def admit(self, session: Session, tokens_needed: int) -> None:
        """Makes room for `session` growing to `tokens_needed` cached tokens (evicting LRU), then stores it."""
        self.check_admissible(tokens_needed)
        self._sessions.pop(session.session_id, None)
        self.evict_idle()
        while self._sessions and (len(self._sessions) >= self.max_sessions
                                  or self.cached_tokens + tokens_needed > self.max_cached_tokens):
            self._sessions.popitem(last=False)
            self.evictions += 1
        self._sessions[session.session_id] = session

    def reserve(self, session: Session, extra_tokens: int) -> None:
        """Before a verify grows `session` by `extra_tokens`, evict other sessions if the budget needs it."""
        budget = self.max_cached_tokens - extra_tokens
        others = [sid for sid in self._sessions if sid != session.session_id]
        while others and self.cached_tokens > budget:
            del self._sessions[others.pop(0)]
            self.evictions += 1
        if self.cached_tokens > budget:
            raise Overloaded(
                f"verifying {extra_tokens} more tokens would exceed --max-cached-tokens={self.max_cached_tokens}"
            )

    def evict_idle(self) -> int:
        cutoff = time.monotonic() - self.idle_ttl_s
        stale = [sid for sid, s in self._sessions.items() if s.last_used < cutoff]
        for sid in stale:
            del self._sessions[sid]
        self.evictions += len(stale)
        return len(stale)
