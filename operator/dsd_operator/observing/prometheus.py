"""A small client of Prometheus' HTTP query API: instant queries, errors as one exception with the reason.

Only `/api/v1/query` is needed: every statistic the loop uses is an instant vector of rate() windows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import httpx


class MetricsUnavailable(Exception):
    """Prometheus could not answer (down, refused, bad answer); `reason` is a CamelCase condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Sample:
    labels: dict[str, str]
    value: float


class PrometheusClient:
    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(timeout=timeout_s)

    def close(self) -> None:
        self._http.close()

    def query(self, promql: str) -> list[Sample]:
        """The instant vector of `promql`; NaN and infinite values (0/0 ratios) are dropped."""
        try:
            response = self._http.get(f"{self.url}/api/v1/query", params={"query": promql})
        except httpx.HTTPError as e:
            raise MetricsUnavailable("PrometheusUnreachable", f"{self.url}: {type(e).__name__}: {e}") from e
        try:
            body = response.json()
        except ValueError as e:
            raise MetricsUnavailable("PrometheusError", f"{self.url}: HTTP {response.status_code}, not JSON") from e
        if body.get("status") != "success":
            raise MetricsUnavailable("PrometheusError", f"{self.url}: {body.get('errorType')}: {body.get('error')}")
        data = body.get("data") or {}
        if data.get("resultType") != "vector":
            raise MetricsUnavailable("PrometheusError", f"{self.url}: expected a vector, got {data.get('resultType')}")
        out = []
        for item in data.get("result") or []:
            value = float(item["value"][1])
            if math.isfinite(value):
                out.append(Sample(dict(item.get("metric") or {}), value))
        return out

    def scalar(self, promql: str) -> float | None:
        """The single value of an aggregated query; None when the vector is empty (no data)."""
        samples = self.query(promql)
        return samples[0].value if samples else None
