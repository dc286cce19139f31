"""Parameter sweeps: the cartesian grid of `key.path=v1,v2,...` over a base scenario, run in parallel processes."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dsd_sim import reporting, scenario, simulation


@dataclass(frozen=True)
class Axis:
    key: str
    values: tuple[Any, ...]


def parse_axis(text: str) -> Axis:
    """`network.rtt_ms.mean=0,10,20` or `mode=[blocking, pipelined]` (YAML values)."""
    key, _, raw = text.partition("=")
    values = yaml.safe_load(raw if raw.strip().startswith("[") else f"[{raw}]") if raw.strip() else None
    if not key.strip() or not isinstance(values, list) or not values:
        raise scenario.ScenarioError(f"sweep axis {text!r}: expected key.path=v1,v2,...")
    return Axis(key.strip(), tuple(values))


def grid(axes: list[Axis]) -> Iterator[dict[str, Any]]:
    for combo in itertools.product(*(a.values for a in axes)):
        yield {a.key: v for a, v in zip(axes, combo, strict=True)}


def _run_one(path: str, overrides: dict[str, Any]) -> dict[str, Any]:
    result = simulation.run(scenario.load(Path(path), overrides))
    return {**overrides, **reporting.flatten(result.summary())}


def sweep(path: Path, axes: list[Axis], base_overrides: dict[str, Any] | None = None, jobs: int | None = None,
          progress: Callable[[int, int], None] = lambda done, total: None) -> list[dict[str, Any]]:
    """Rows in grid order (deterministic whatever the completion order). Validates every point first."""
    points = [{**(base_overrides or {}), **p} for p in grid(axes)]
    for p in points:  # fail before spending minutes on a bad grid
        scenario.load(path, p)
    rows: list[dict[str, Any] | None] = [None] * len(points)
    workers = jobs or os.cpu_count() or 1
    if workers == 1 or len(points) == 1:
        for i, p in enumerate(points):
            rows[i] = _run_one(str(path), p)
            progress(i + 1, len(points))
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(_run_one, str(path), p): i for i, p in enumerate(points)}
            for done, future in enumerate(as_completed(futures), 1):
                rows[futures[future]] = future.result()
                progress(done, len(points))
    return [r for r in rows if r is not None]
