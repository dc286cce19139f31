"""A draft server's window statistics kept across restarts (`--window-stats FILE`).

Why: every decision of the hybrid drafter rests on measurements (acceptance by position, the draft model's step,
the verify wait per window). A fresh server has none, so it tries the draft model for a few rounds before it
knows whether the model pays; with a draft that does not pay on the workload those rounds make a short request
slower than the target alone. A one-shot `dsd generate` is always fresh. Starting from the last run's
measurements for the same draft/target pair removes the trials; live rounds take over at once, since the saved
acceptance weighs at most PRIOR_ROUNDS rounds and the smoothed times follow every new sample.

The file is JSON, written atomically; one from another pair, or one that does not parse, is ignored with a
warning (and replaced at the next save): a stale cache must never stop a server.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, NonNegativeFloat, PositiveFloat, PositiveInt, ValidationError

from dsd_runtime.common import models
from dsd_spec import EstimatorSnapshot

log = logging.getLogger(__name__)
PRIOR_ROUNDS = 16.0  # the most rounds a saved acceptance weighs against live ones
SAVE_EVERY_S = 60.0  # a server also saves on exit; this bounds what a crash loses


class SavedWindowStats(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    draft: str  # model names: statistics belong to one pair
    target: str
    saved_at: float  # unix time
    accepted: list[NonNegativeFloat]
    observed: list[NonNegativeFloat]
    step_s: PositiveFloat | None
    wait_s: dict[PositiveInt, PositiveFloat]

    @property
    def model_rounds(self) -> float:
        """Model-drafted rounds the acceptance counts hold (decayed): 0 for a model-free draft."""
        return self.observed[0] if self.observed else 0.0

    def snapshot(self) -> EstimatorSnapshot:
        return EstimatorSnapshot(tuple(self.accepted), tuple(self.observed), self.step_s, dict(self.wait_s))


def default_path(draft_ref: str, target_ref: str, setting: str = "") -> Path:
    """Where `dsd serve` and `dsd generate` keep a pair's statistics: beside the models' cache, one file per
    pair and `setting` (what changes the waits: the target's dtype, an emulated link)."""
    def slug(ref: str) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(ref).name or ref)[:40]

    key = hashlib.sha256(f"{draft_ref}\0{target_ref}\0{setting}".encode()).hexdigest()[:10]
    return models.models_cache() / "window-stats" / f"{slug(draft_ref)}--{slug(target_ref)}-{key}.json"


def load(path: Path, draft: str, target: str) -> SavedWindowStats | None:
    """The saved statistics of this pair; None (logged) when there are none, or they are another pair's or
    unreadable."""
    if not path.exists():
        return None
    try:
        saved = SavedWindowStats.model_validate_json(path.read_bytes())
    except (OSError, ValidationError) as e:
        log.warning("ignoring window statistics %s: %s", path, e)
        return None
    if (saved.draft, saved.target) != (draft, target):
        log.warning("ignoring window statistics %s: they are for draft %r and target %r, not %r and %r",
                    path, saved.draft, saved.target, draft, target)
        return None
    return saved


def save(path: Path, draft: str, target: str, snapshot: EstimatorSnapshot) -> None:
    """Writes atomically (a reader never sees half a file); a failure is logged, never raised."""
    doc = SavedWindowStats(draft=draft, target=target, saved_at=time.time(), accepted=list(snapshot.accepted),
                           observed=list(snapshot.observed), step_s=snapshot.step_s, wait_s=snapshot.wait_s)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(doc.model_dump_json(indent=1) + "\n")
        os.replace(tmp, path)
    except OSError as e:
        log.warning("could not save window statistics to %s: %s", path, e)
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
