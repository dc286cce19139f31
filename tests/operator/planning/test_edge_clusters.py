"""Pure parts of drafts in edge clusters: the remote children and the status over every cluster."""

from __future__ import annotations

import dataclasses

import pytest
from pydantic import ValidationError

from dsd_operator import labels
from dsd_operator.api import v1alpha1 as api
from dsd_operator.planning import children, statuses
from tests.operator.planning.test_children import OWNER
from tests.operator.planning.test_statuses import READY, _conds, _obs

ADDRESS = "gpu.example.net:30551"


def _spec(**draft) -> api.DSDDeploymentSpec:
    return api.DSDDeploymentSpec.model_validate({
        "target": {"model": {"uri": "builtin:smollm2-135m-instruct"}, "expose": {"address": ADDRESS}},
        "draft": {"replicas": 0, "placements": [{"cluster": "edge-a", "replicas": 3,
                                                 "placement": {"nodeSelector": {"site": "a"}}}], **draft}})


def test_remote_drafts_dial_the_exposed_target_with_the_placements_replicas_and_nodes():
    spec = _spec()
    by_kind = {m["kind"]: m for m in children.remote_drafts(OWNER, spec, spec.draft.placements[0])}
    assert set(by_kind) == {"ConfigMap", "Service", "Deployment"}
    for m in by_kind.values():
        assert "ownerReferences" not in m["metadata"], "owner references cannot cross clusters"
        assert m["metadata"]["annotations"] == {labels.OWNER_ANNOTATION: "ns/llm@uid-1"}
        assert m["metadata"]["labels"][labels.DEPLOYMENT_LABEL] == "llm"
    deployment = by_kind["Deployment"]["spec"]
    assert deployment["replicas"] == 3
    args = deployment["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--target") + 1] == ADDRESS
    assert deployment["template"]["spec"]["nodeSelector"] == {"site": "a"}


def test_the_exposed_target_service_takes_the_asked_type():
    spec = api.DSDDeploymentSpec.model_validate({"target": {"model": {"uri": "builtin:x"}, "expose": {
        "address": ADDRESS, "nodePort": 30551}}})
    svc = children.service(OWNER, spec, labels.TARGET)["spec"]
    assert svc["type"] == "NodePort" and svc["ports"][0]["nodePort"] == 30551


def test_an_address_that_is_not_host_port_is_refused():
    with pytest.raises(ValidationError, match="address"):
        api.TargetExpose.model_validate({"address": "https://gpu.example.net"})


def _edge(reachable=True, ready=3, desired=3, message="API server v1.36 reachable", name="edge-a"):
    return statuses.ClusterObservation(name, reachable, message, desired, ready)


def _edge_only(*clusters):
    draft = statuses.RoleObservation(desired=0, deployment_generation=1, deployment_status=READY | {"replicas": 0})
    return dataclasses.replace(_obs(draft=draft, edge_nodes=0), clusters=tuple(clusters),
                               target_external_endpoint=ADDRESS)


def test_an_edge_only_deployment_is_ready_when_every_edge_group_is():
    s = statuses.status(_edge_only(_edge()), "T1")
    c = _conds(s)
    assert c["DraftReady"]["status"] == "True" and c["DraftReady"]["message"] == "draft: pods ready edge-a 3/3"
    assert c["Ready"]["status"] == "True" and c["ClustersReachable"]["reason"] == "Reachable"
    assert s["clusters"] == [{"name": "edge-a", "reachable": True, "message": "API server v1.36 reachable",
                              "desiredReplicas": 3, "readyReplicas": 3}]
    assert s["targetExternalEndpoint"] == ADDRESS


def test_an_unreachable_edge_is_named_and_keeps_draft_ready_false():
    down = _edge(reachable=False, ready=0, message="API server unreachable: Connection refused", name="edge-b")
    c = _conds(statuses.status(_edge_only(_edge(), down), "T1"))
    assert c["ClustersReachable"] == c["ClustersReachable"] | {
        "status": "False", "reason": "Unreachable", "message": "edge-b: API server unreachable: Connection refused"}
    assert c["DraftReady"]["status"] == "False" and "edge-b 0/3" in c["DraftReady"]["message"]


def test_single_cluster_status_has_no_cluster_fields():
    s = statuses.status(_obs(), "T1")
    assert "clusters" not in s and "ClustersReachable" not in _conds(s)


EDGE_LOOP = {"speculation": {"gamma": 7, "mode": "speculate", "reason": "Grew", "since": "T0"},
             "metrics": {"acceptance": 0.8}, "metricsAvailable": True, "metricsMessage": "1 draft pod scraped",
             "avoidedNodes": [{"node": "site-1", "reason": "NotReady", "since": "T0"}]}


def test_the_loops_fields_of_a_cluster_entry_survive_a_reconcile_and_a_dropped_cluster_takes_them_along():
    previous = [{"name": "edge-a", "reachable": True, "message": "old", "desiredReplicas": 3, "readyReplicas": 2,
                 **EDGE_LOOP}, {"name": "edge-gone", **EDGE_LOOP}]
    obs = dataclasses.replace(_edge_only(_edge()), previous_clusters=previous)
    entry, = statuses.status(obs, "T1")["clusters"]
    assert entry == {"name": "edge-a", "reachable": True, "message": "API server v1.36 reachable",
                     "desiredReplicas": 3, "readyReplicas": 3, **EDGE_LOOP}


@pytest.mark.parametrize(("entry", "loop", "want"), [
    # the loop does not run: the spec applies everywhere
    ({"name": "edge-a", **EDGE_LOOP}, None, None),
    # no decision of its own yet: the deployment-wide window and mode, none of this cluster's avoided nodes
    ({"name": "edge-a"}, children.LoopDecisions(5, "off", ("edge-0",)), children.LoopDecisions(5, "off")),
    # its own decision
    ({"name": "edge-a", **EDGE_LOOP}, children.LoopDecisions(5, "off", ("edge-0",)),
     children.LoopDecisions(7, "speculate", ("site-1",))),
])
def test_an_edge_clusters_drafts_follow_their_own_decision(entry, loop, want):
    status = {"clusters": [{"name": "other", **EDGE_LOOP, "speculation": {"gamma": 2}}, entry]}
    assert statuses.cluster_loop_decisions(status, "edge-a", loop) == want


def test_an_edge_clusters_own_window_and_avoided_nodes_reach_its_children():
    spec = _spec()
    loop = children.LoopDecisions(7, "speculate", ("site-1",))
    by_kind = {m["kind"]: m for m in children.remote_drafts(OWNER, spec, spec.draft.placements[0], loop)}
    assert "gamma: 7" in by_kind["ConfigMap"]["data"][labels.CONFIG_FILE]
    affinity = by_kind["Deployment"]["spec"]["template"]["spec"]["affinity"]
    terms = affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["site-1"]}]}]
