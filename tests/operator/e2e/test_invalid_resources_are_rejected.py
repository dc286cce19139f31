"""The API server itself rejects invalid DSDDeployments (schema + CEL), with a message naming the field."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from tests.operator.e2e.conftest import kubectl

pytestmark = pytest.mark.cluster

VALID: dict[str, Any] = {
    "apiVersion": "dsd.dev/v1alpha1", "kind": "DSDDeployment", "metadata": {"name": "bad"},
    "spec": {"target": {"model": {"uri": "builtin:smollm2-135m-instruct"}},
             "draft": {"model": {"uri": "builtin:smollm2-135m-draft"}}},
}


def _with(path: str, value: Any) -> dict[str, Any]:
    """VALID with `value` at the dotted `path` (None deletes the key)."""
    body = copy.deepcopy(VALID)
    *parents, leaf = path.split(".")
    node = body
    for key in parents:
        node = node.setdefault(key, {})
    if value is None:
        node.pop(leaf)
    else:
        node[leaf] = value
    return body


CASES = [
    ("no target", _with("spec.target", None), "spec.target: Required value"),
    ("no model", _with("spec.target.model", None), "spec.target.model: Required value"),
    ("empty model", _with("spec.draft.model", {}), "spec.draft.model: Invalid value"),
    ("two model sources", _with("spec.target.model", {"path": "/m", "uri": "builtin:x"}),
     "set exactly one of path, pvc or uri"),
    ("relative path", _with("spec.target.model", {"path": "models/x"}), "spec.target.model.path"),
    ("unknown URI scheme", _with("spec.draft.model", {"uri": "hf://org/model"}), "spec.draft.model.uri"),
    ("pvc without claim", _with("spec.target.model", {"pvc": {"subPath": "x"}}),
     "spec.target.model.pvc.claimName: Required value"),
    ("negative replicas", _with("spec.draft.replicas", -1), "spec.draft.replicas"),
    ("gamma zero", _with("spec.speculation", {"gamma": 0}), "spec.speculation.gamma"),
    ("gamma above gammaMax", _with("spec.speculation", {"gamma": 9, "gammaMax": 8}),
     "spec.speculation.gamma: Invalid value"),
    ("gamma below gammaMin", _with("spec.speculation", {"gamma": 2, "gammaMin": 3}), "gamma must be >= gammaMin"),
    ("unknown policy", _with("spec.speculation", {"policy": "greedy"}), "spec.speculation.policy: Unsupported value"),
    ("port out of range", _with("spec.target.port", 70000), "spec.target.port"),
    ("temperature not a number", _with("spec.speculation", {"sampling": {"temperature": "hot"}}),
     "spec.speculation.sampling.temperature"),
    ("topP above one", _with("spec.speculation", {"sampling": {"topP": "1.5"}}), "spec.speculation.sampling.topP"),
    ("unknown service type", _with("spec.api", {"serviceType": "Ingress"}), "spec.api.serviceType"),
    ("nodePort without NodePort", _with("spec.api", {"nodePort": 30080}), "spec.api.nodePort"),
    ("nodePort out of range", _with("spec.api", {"serviceType": "NodePort", "nodePort": 80}), "spec.api.nodePort"),
    ("misspelt field", _with("spec.draft.gama", 3), 'unknown field "spec.draft.gama"'),
    ("Prometheus URL without scheme", _with("spec.metrics", {"prometheusUrl": "prometheus:9090"}),
     "spec.metrics.prometheusUrl"),
    ("bad toleration operator", _with("spec.target.placement", {"tolerations": [{"operator": "Maybe"}]}),
     "spec.target.placement.tolerations[0].operator"),
    ("bad pull policy", _with("spec.draft.imagePullPolicy", "Sometimes"), "spec.draft.imagePullPolicy"),
    ("zero TTFT target", _with("spec.slo", {"ttftMs": 0}), "spec.slo.ttftMs"),
]


@pytest.mark.parametrize(("body", "field"), [(b, f) for _, b, f in CASES], ids=[c[0] for c in CASES])
def test_rejected_with_the_field_named(cluster, chart_release, namespace, body, field):
    proc = kubectl(cluster, "create", "-n", namespace, "-f", "-", input_text=yaml.safe_dump(body), check=False)
    assert proc.returncode != 0, "the API server accepted an invalid DSDDeployment"
    assert field in proc.stderr, proc.stderr


def test_the_valid_base_is_accepted(cluster, chart_release, namespace):
    kubectl(cluster, "create", "--dry-run=server", "-n", namespace, "-f", "-", input_text=yaml.safe_dump(VALID))


def test_kubectl_explain_teaches_the_api(cluster, chart_release):
    out = kubectl(cluster, "explain", "dsd.spec.draft").stdout
    assert "edgeTaintKey" in out and "draft: the drafting role near users" in out
    out = kubectl(cluster, "explain", "dsd.spec.speculation.gamma").stdout
    assert "gamma: draft tokens per verification round" in out
