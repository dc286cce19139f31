"""The harness's Prometheus is a real server: it scrapes a loopback exporter and answers PromQL."""

import json
import urllib.parse
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Counter, start_http_server

from dsd_devcluster.prometheus import PrometheusError, scrape_config, start_prometheus, stop_prometheus
from tests.support.waiting import wait_for


def _query(url: str, promql: str) -> list:
    with urllib.request.urlopen(f"{url}/api/v1/query?query={urllib.parse.quote(promql)}", timeout=5) as r:
        return json.load(r)["data"]["result"]


def test_prometheus_scrapes_an_exporter_on_loopback():
    registry = CollectorRegistry()
    counter = Counter("dsd_test_events_total", "events", registry=registry)
    counter.inc(7)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    port = server.server_address[1]
    prom = start_prometheus("pytest", {"exporter": [f"127.0.0.1:{port}"]}, port=0)
    try:
        result = wait_for(lambda: _query(prom.url, "dsd_test_events_total"), 60, "the scraped counter")
        assert float(result[0]["value"][1]) == 7.0
        assert result[0]["metric"]["job"] == "exporter"
    finally:
        stop_prometheus("pytest")
        server.shutdown()
        thread.join(5)


def test_scrape_targets_must_be_on_loopback():
    with pytest.raises(PrometheusError, match="not on loopback"):
        scrape_config({"pods": ["10.244.0.5:8000"]}, 1)
