"""Status from observations: conditions, reasons, and stable timestamps (so no-op reconciles write nothing)."""

from __future__ import annotations

from dsd_operator.planning import statuses

READY = {"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1, "observedGeneration": 1}


def _obs(target: statuses.RoleObservation | None = None, draft: statuses.RoleObservation | None = None,
         edge_nodes: int | None = 2, previous=()) -> statuses.Observation:
    ok = statuses.RoleObservation(desired=1, deployment_generation=1, deployment_status=READY)
    return statuses.Observation(generation=3, gamma=4, target_endpoint="t:1", api_endpoint="http://d/v1",
                                roles={"target": target or ok, "draft": draft or ok}, edge_nodes=edge_nodes,
                                previous_conditions=list(previous))


def _conds(status):
    return {c["type"]: c for c in status["conditions"]}


def test_everything_ready():
    s = statuses.status(_obs(), "T1")
    c = _conds(s)
    assert c["Ready"]["status"] == "True" and c["Ready"]["reason"] == "AllRolesReady"
    assert c["Progressing"]["status"] == "False" and c["Degraded"]["status"] == "False"
    assert s["target"]["summary"] == "1/1" and s["observedGeneration"] == 3 and s["gamma"] == 4


def test_unschedulable_target_is_degraded_with_the_schedulers_message():
    msg = "0/5 nodes are available: 2 Insufficient nvidia.com/gpu."
    target = statuses.RoleObservation(desired=1, deployment_generation=1,
                                      deployment_status={"replicas": 1, "observedGeneration": 1},
                                      unschedulable=(msg,))
    c = _conds(statuses.status(_obs(target=target), "T1"))
    assert c["Degraded"]["status"] == "True" and c["Degraded"]["reason"] == "Unschedulable"
    assert c["Degraded"]["message"] == f"target: {msg}"
    assert c["Ready"]["status"] == "False" and c["TargetReady"]["reason"] == "Unschedulable"


def test_no_edge_nodes_wins_over_other_draft_reasons():
    c = _conds(statuses.status(_obs(edge_nodes=0), "T1"))
    assert c["DraftReady"]["reason"] == "NoEdgeNodes" and c["Degraded"]["reason"] == "NoEdgeNodes"


def test_missing_deployment_is_progressing():
    c = _conds(statuses.status(_obs(draft=statuses.RoleObservation(desired=2)), "T1"))
    assert c["Progressing"]["status"] == "True" and "draft" in c["Progressing"]["message"]
    assert c["DraftReady"]["reason"] == "PodsNotReady"


def test_transition_time_moves_only_when_the_status_changes():
    first = statuses.status(_obs(), "T1")
    again = statuses.status(_obs(previous=first["conditions"]), "T2")
    assert again == first
    broken = statuses.status(_obs(edge_nodes=0, previous=first["conditions"]), "T3")
    times = {c["type"]: c["lastTransitionTime"] for c in broken["conditions"]}
    assert times["DraftReady"] == times["Ready"] == times["Degraded"] == "T3"
    assert times["TargetReady"] == times["Progressing"] == "T1"


def test_scaled_to_zero_is_not_ready():
    zero = statuses.RoleObservation(desired=0, deployment_generation=1,
                                    deployment_status={"observedGeneration": 1})
    c = _conds(statuses.status(_obs(draft=zero), "T1"))
    assert c["DraftReady"]["reason"] == "ScaledToZero" and c["Ready"]["status"] == "False"


def test_a_refused_child_makes_the_resource_degraded_with_the_api_servers_message():
    obs = statuses.Observation(generation=3, gamma=4, target_endpoint="t:1", api_endpoint="http://d/v1",
                               roles=_obs().roles, edge_nodes=2,
                               apply_failures=("Service/llm-draft: provided port is already allocated",))
    c = _conds(statuses.status(obs, "T1"))
    assert (c["Degraded"]["status"], c["Degraded"]["reason"]) == ("True", "ApplyFailed")
    assert "Service/llm-draft: provided port is already allocated" in c["Degraded"]["message"]


def test_the_metrics_loops_condition_is_carried_over_unchanged():
    mine = {"type": "MetricsAvailable", "status": "False", "reason": "PrometheusUnreachable", "message": "m",
            "lastTransitionTime": "T0", "observedGeneration": 3}
    c = _conds(statuses.status(_obs(previous=[mine]), "T1"))
    assert c["MetricsAvailable"] == mine
