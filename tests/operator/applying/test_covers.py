"""The drift check: what counts as "the live object already has what we want" (no write, no Event)."""

from __future__ import annotations

import pytest

from dsd_operator.applying.cluster import covers


@pytest.mark.parametrize(("live", "desired", "expected"), [
    ({"spec": {"replicas": 1, "x": "server default"}}, {"spec": {"replicas": 1}}, True),
    ({"spec": {"replicas": 2}}, {"spec": {"replicas": 1}}, False),
    ({"spec": {}}, {"spec": {"tolerations": []}}, True),     # the API server drops empty lists
    ({"spec": {}}, {"spec": {"nodeSelector": {}}}, True),    # ... and empty maps
    ({"spec": {"tolerations": [{"key": "a"}]}}, {"spec": {"tolerations": []}}, False),
    ({"spec": {}}, {"spec": {"tolerations": [{"key": "a"}]}}, False),
    ({"metadata": {"labels": {}}}, {"metadata": {"labels": {"a": ""}}}, False),
    ({"spec": {"cpu": "1000m"}}, {"spec": {"cpu": "1"}}, True),
])
def test_covers(live, desired, expected):
    assert covers(live, desired) is expected
