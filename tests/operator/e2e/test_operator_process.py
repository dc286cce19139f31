"""`dsd operator run` as the chart's Deployment runs it: liveness endpoint, settings from the environment."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request

import pytest

from tests.operator.e2e.conftest import OperatorProcess, _free_port, service_account_kubeconfig
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster


def _get(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return int(r.status)
    except OSError:
        return None


def test_liveness_endpoint_answers(cluster, chart_release, tmp_path):
    op = OperatorProcess(service_account_kubeconfig(cluster, tmp_path / "kubeconfig"), tmp_path / "operator.log",
                         health_port=_free_port())
    op.start()
    try:
        assert wait_for(lambda: _get(f"http://127.0.0.1:{op.health_port}/healthz"), 60, "/healthz") == 200
    finally:
        op.stop()


def test_invalid_settings_from_the_environment_are_refused_with_the_name(tmp_path):
    env = {**os.environ, "DSD_OPERATOR_LOG_LEVEL": "LOUD", "KUBECONFIG": str(tmp_path / "none")}
    proc = subprocess.run([sys.executable, "-m", "dsd_cli.main", "operator", "run"], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode != 0
    assert "log_level" in proc.stderr
