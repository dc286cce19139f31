"""Where the harness keeps its build cache and per-cluster run state.

Both live outside the work tree (CI runs in a fresh clone; a warm cache must survive it).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$")


def repo_root() -> Path:
    """The source checkout (the harness is installed editable, so the Go wrapper module is beside it)."""
    return Path(__file__).resolve().parents[2]


def tools_cache() -> Path:
    return Path(os.environ.get("DSD_TOOLS_CACHE", Path.home() / ".cache" / "dsd-tools"))


def clusters_home() -> Path:
    return Path(os.environ.get("DSD_CLUSTERS_HOME", Path.home() / ".cache" / "dsd-clusters"))


def validate_cluster_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise ValueError(
            f"cluster name {name!r} is invalid: use 1-32 lowercase letters, digits or '-' (DNS label)"
        )
    return name


def cluster_dir(name: str) -> Path:
    return clusters_home() / validate_cluster_name(name)
