"""Draft placement decisions: which nodes the drafts avoid, from node health.

A node is unhealthy when its Ready condition is not True or its kubelet has not renewed its Lease for
`nodeGraceSeconds` (the lease goes stale long before the node controller marks the node NotReady, 40 s or more).
Unhealthy edge nodes are added to the drafts' avoid list, which the pod template turns into a node-affinity
exclusion: the Deployment replaces the drafts there on healthy edge nodes. A node leaves the list once healthy
again for `nodeGraceSeconds`. The list never excludes every edge node (pods with nowhere to go serve nobody).

A healthy edge node is also avoided when its drafts' network round trip is above the crossover (no window beats
the target alone there) and at least 1.5x the best site's: an outlier link, not a slow target (which slows every
site alike). Its drafts cannot measure it once gone, so it is released after `release_s` to be measured again.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NodeHealth:
    name: str
    ready: bool
    lease_age_s: float | None  # None: no Lease (kwok nodes, or kubelets without leases)
    edge: bool

    def healthy(self, grace_s: float) -> bool:
        return self.ready and (self.lease_age_s is None or self.lease_age_s <= grace_s)

    def problem(self, grace_s: float) -> str:
        if not self.ready:
            return "NotReady"
        return "LeaseExpired" if self.lease_age_s is not None and self.lease_age_s > grace_s else ""


@dataclass(frozen=True)
class Avoided:
    node: str
    reason: str
    since: float  # epoch seconds
    healthy_since: float | None = None


SLOW = "RttAboveCrossover"
OUTLIER = 1.5


def slow_sites(round_trips_s: dict[str, float], crossover_s: float | None) -> dict[str, float]:
    """Nodes whose drafts' network round trip is above the crossover and an outlier among the sites."""
    if crossover_s is None or len(round_trips_s) < 2:
        return {}
    best = min(round_trips_s.values())
    return {n: r for n, r in round_trips_s.items() if r > crossover_s and r >= OUTLIER * max(best, 1e-3)}


def avoided_nodes(nodes: list[NodeHealth], previous: list[Avoided], grace_s: float, now_s: float,
                  slow: dict[str, float] | None = None, release_s: float = 120.0) -> list[Avoided]:
    """The next avoid list: previously avoided nodes until healthy for `grace_s` (slow ones: for `release_s`),
    plus newly unhealthy or slow edge nodes."""
    by_name = {n.name: n for n in nodes}
    slow = slow or {}
    out: list[Avoided] = []
    for a in previous:
        node = by_name.get(a.node)
        if node is None:
            continue  # the node is gone: nothing to avoid
        if a.reason == SLOW and node.healthy(grace_s):
            if now_s - a.since < release_s:
                out.append(a)
            continue
        if not node.healthy(grace_s):
            out.append(Avoided(a.node, node.problem(grace_s) or a.reason, a.since))
        elif a.healthy_since is None:
            out.append(Avoided(a.node, a.reason, a.since, now_s))
        elif now_s - a.healthy_since < grace_s:
            out.append(a)
    known = {a.node for a in out}
    for n in nodes:
        if n.edge and n.name not in known and not n.healthy(grace_s):
            out.append(Avoided(n.name, n.problem(grace_s), now_s))
        elif n.edge and n.name not in known and n.name in slow:
            out.append(Avoided(n.name, SLOW, now_s))
    edge = {n.name for n in nodes if n.edge}
    if edge and edge <= {a.node for a in out}:
        return []  # every edge node is unhealthy: excluding them all would leave the drafts nowhere to run
    return sorted(out, key=lambda a: a.node)
