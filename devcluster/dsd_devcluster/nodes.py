"""The node set: a validated YAML description turned into kwok-managed Node objects and real-node specs.

A group is simulated (kwok: scheduling and scale only, pods run nothing) unless `real: true`, which gives it real
kubelet nodes (realnodes.py). `dsd dev cluster up --real-nodes edge=1,gpu=1` flips named groups to real.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

KWOK_ANNOTATION = {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"}
ZONE_LABEL = "topology.kubernetes.io/zone"


class Taint(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str
    value: str = ""
    effect: str = Field(pattern="^(NoSchedule|PreferNoSchedule|NoExecute)$")


class NodeGroup(BaseModel):
    """`count` nodes sharing labels, taints and capacity (real nodes: only the extended resources of capacity,
    such as nvidia.com/gpu, are advertised; cpu and memory are the machine's own)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    count: int = Field(default=1, ge=1, le=500)
    real: bool = False
    zones: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    taints: list[Taint] = Field(default_factory=list)
    capacity: dict[str, str] = Field(default_factory=lambda: {"cpu": "8", "memory": "32Gi", "pods": "110"})

    @field_validator("capacity")
    @classmethod
    def _needs_pods(cls, v: dict[str, str]) -> dict[str, str]:
        return {"pods": "110", **v}


class NodeSet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    nodes: list[NodeGroup]


class NodeSetError(ValueError):
    pass


def load_node_set(path: Path | None = None) -> NodeSet:
    """Reads `path` (or the packaged default); errors name the offending field."""
    if path is None:
        text = resources.files("dsd_devcluster").joinpath("default-nodes.yaml").read_text()
        source = "default-nodes.yaml"
    else:
        text = path.read_text()
        source = str(path)
    try:
        return NodeSet.model_validate(yaml.safe_load(text))
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()
        )
        raise NodeSetError(f"invalid node set {source}: {problems}") from None


def with_real_nodes(node_set: NodeSet, real: dict[str, int]) -> NodeSet:
    """`real` maps group names to counts of real nodes that replace the group's kwok nodes."""
    known = {g.name for g in node_set.nodes}
    unknown = sorted(set(real) - known)
    if unknown:
        raise NodeSetError(f"--real-nodes names {unknown}, but the node set's groups are {sorted(known)}")
    groups = [g.model_copy(update={"real": True, "count": real[g.name]}) if g.name in real else g
              for g in node_set.nodes]
    return NodeSet(nodes=groups)


def parse_real_nodes(text: str) -> dict[str, int]:
    """`edge=1,gpu=1` -> {"edge": 1, "gpu": 1}."""
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, count = part.partition("=")
        if not sep or not count.isdigit() or int(count) < 1:
            raise NodeSetError(f"--real-nodes {text!r}: expected GROUP=COUNT[,GROUP=COUNT...] with COUNT >= 1")
        out[name] = int(count)
    return out


_MACHINE_RESOURCES = {"cpu", "memory", "pods", "ephemeral-storage"}


def real_node_specs(node_set: NodeSet) -> list[dict[str, Any]]:
    """name, labels, taints and extended resources of each real node."""
    specs = []
    for group in node_set.nodes:
        if not group.real:
            continue
        for i in range(group.count):
            labels = dict(group.labels)
            if group.zones:
                labels[ZONE_LABEL] = group.zones[i % len(group.zones)]
            specs.append({"name": f"{group.name}-{i}", "labels": labels,
                          "taints": [t.model_dump() for t in group.taints],
                          "extended": {k: v for k, v in group.capacity.items() if k not in _MACHINE_RESOURCES}})
    return specs


def node_manifests(node_set: NodeSet) -> list[dict[str, Any]]:
    """Node objects of the simulated groups, with status (kwok keeps allocatable/capacity it finds)."""
    manifests = []
    for group in node_set.nodes:
        if group.real:
            continue
        for i in range(group.count):
            name = f"{group.name}-{i}"
            labels = {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                **group.labels,
            }
            if group.zones:
                labels[ZONE_LABEL] = group.zones[i % len(group.zones)]
            manifests.append(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {"name": name, "labels": labels, "annotations": dict(KWOK_ANNOTATION)},
                    "spec": {"taints": [t.model_dump() for t in group.taints]},
                    "status": {"allocatable": dict(group.capacity), "capacity": dict(group.capacity)},
                }
            )
    return manifests
