"""`dsd target --pass-trace FILE`: one JSON line per packed forward pass, for fitting cost models (DSD-Sim's
calibration against the capacity benchmark). Histograms give only means; a pass cost that is not linear in its
tokens, and a per-sequence term, need the passes themselves."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TextIO

from dsd_runtime.common.batching import PassObserver


class PassTrace:
    """Appends {"t", "sequences", "tokens", "seconds"} per pass; `t` is the pass's end (time.time())."""

    def __init__(self, path: Path, forward_to: PassObserver | None = None) -> None:
        self._file: TextIO = path.open("a", buffering=1)  # line-buffered: readable while the target runs
        self._forward_to = forward_to

    def __call__(self, sequences: int, tokens: int, seconds: float) -> None:
        if self._forward_to is not None:
            self._forward_to(sequences, tokens, seconds)
        self._file.write(json.dumps({"t": round(time.time(), 4), "sequences": sequences, "tokens": tokens,
                                     "seconds": round(seconds, 6)}) + "\n")

    def close(self) -> None:
        self._file.close()
