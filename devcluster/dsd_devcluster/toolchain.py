"""Locates (building once if needed) the control-plane binaries produced by hack/k8s-testbins/build.sh."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from dsd_devcluster import paths

BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kubelet", "kube-proxy",
            "pause", "kwok", "helm", "coredns", "prometheus")


class ToolchainError(RuntimeError):
    """The Go build of the control plane failed; the message carries the build's own output."""


@dataclass(frozen=True)
class Toolchain:
    bin_dir: Path
    kwok_src: Path

    def path(self, binary: str) -> Path:
        return self.bin_dir / binary


def ensure_toolchain() -> Toolchain:
    """Runs the cached build (a stamp check in well under a second when warm) and returns the binaries."""
    script = paths.repo_root() / "hack" / "k8s-testbins" / "build.sh"
    if not script.exists():
        raise ToolchainError(f"{script} not found: the dev cluster needs a source checkout of DSD")
    # stderr streams the build's progress to the user's terminal; stdout's last line is the bin dir.
    proc = subprocess.run(["bash", str(script)], stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise ToolchainError(f"building the dev-cluster binaries failed (exit {proc.returncode}); see above")
    bin_dir = Path(proc.stdout.strip().splitlines()[-1])
    missing = [b for b in BINARIES if not (bin_dir / b).exists()]
    if missing:
        raise ToolchainError(f"build finished but {missing} are missing from {bin_dir}")
    kwok_src = Path((bin_dir.parent / "kwok-src").read_text().strip())
    return Toolchain(bin_dir=bin_dir, kwok_src=kwok_src)
