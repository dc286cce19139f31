"""The position price a packed target reports to its drafts: what one more position in its forward passes costs
the other sessions sharing them.

A draft that prices a window only by its own wait speculates as if it were alone: on a compute-bound target
(this CPU at 8 or more sessions) every extra position slows every session in the pass, so windows that pay for
one session lose for all. The price lets each draft's goodput model charge that cost (dsd_spec.priced_wait); a
target serving one session at a time, or one whose passes cost the same whatever their size (a GPU that is
bound by reading the weights), reports about zero and nothing changes.
"""

from __future__ import annotations

import threading

# Recent passes matter: load changes as sessions come and go. 0.98 per pass remembers about 50 passes.
DECAY = 0.98
# A pass with more tokens per sequence than this holds a prefill; its cost per token is not a window's.
MAX_TOKENS_PER_SEQUENCE = 17


class PositionPricing:
    """A PassObserver: an exponentially weighted least-squares line seconds = a + s * tokens over recent passes,
    and the weighted mean sequences per pass; price = max(0, s) * (mean sequences - 1)."""

    def __init__(self, decay: float = DECAY) -> None:
        self.decay = decay
        self._lock = threading.Lock()
        self._w = self._x = self._y = self._xx = self._xy = 0.0  # decayed sums over passes
        self._sequences = 0.0  # decayed sum of sequences per pass (all passes, prefills too)
        self._passes = 0.0  # decayed count of all passes
        self._slope = 0.0

    def __call__(self, sequences: int, tokens: int, seconds: float) -> None:
        d = self.decay
        with self._lock:
            self._sequences = self._sequences * d + sequences
            self._passes = self._passes * d + 1.0
            if tokens > MAX_TOKENS_PER_SEQUENCE * sequences:
                return
            self._w = self._w * d + 1.0
            self._x = self._x * d + tokens
            self._y = self._y * d + seconds
            self._xx = self._xx * d + tokens * tokens
            self._xy = self._xy * d + tokens * seconds
            spread = self._w * self._xx - self._x * self._x
            if spread > 1e-9 * max(1.0, self._w * self._xx):  # the passes differ in size: a slope is defined
                self._slope = max(0.0, (self._w * self._xy - self._x * self._y) / spread)

    @property
    def marginal_token_s(self) -> float:
        with self._lock:
            return self._slope

    @property
    def sequences_per_pass(self) -> float:
        with self._lock:
            return self._mean_sequences()

    def price_s(self) -> float:
        """Seconds one more position in a pass costs the other sessions in it (0 when a session is alone)."""
        with self._lock:
            return self._slope * max(0.0, self._mean_sequences() - 1.0)

    def _mean_sequences(self) -> float:  # under the lock
        return self._sequences / self._passes if self._passes else 0.0

