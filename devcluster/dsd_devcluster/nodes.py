"""The simulated node set: a validated YAML description turned into kwok-managed Node objects."""

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
    """`count` nodes sharing labels, taints and capacity."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    count: int = Field(default=1, ge=1, le=500)
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


def node_manifests(node_set: NodeSet) -> list[dict[str, Any]]:
    """Node objects with status (kwok keeps allocatable/capacity it finds)."""
    manifests = []
    for group in node_set.nodes:
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
