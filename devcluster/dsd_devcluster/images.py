"""The images real nodes run, built here (no registry is reachable) and imported into each node's containerd.

* the sandbox image: the `pause` binary of the toolchain as a one-layer OCI image;
* the DSD runtime image: hack/runtime-image/build.sh (debootstrap + pip, cached by a hash of its inputs), named
  as the operator's default image, so the pod specs the operator emits are the ones a production cluster gets.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

from dsd_devcluster import paths

PAUSE_IMAGE = "dsd.dev/pause:dev"
RUNTIME_IMAGE = "ghcr.io/dsd-project/dsd-runtime:0.1.0"


class ImageError(RuntimeError):
    pass


def _run(argv: list[str], **kwargs: object) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise ImageError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")


def pause_image(pause_binary: Path) -> Path:
    """An OCI layout holding PAUSE_IMAGE (cached by the binary's hash)."""
    digest = hashlib.sha256(pause_binary.read_bytes()).hexdigest()[:16]
    layout = paths.tools_cache() / "pause-image" / digest
    if (layout / "index.json").exists():
        return layout
    shutil.rmtree(layout.parent, ignore_errors=True)
    tmp = layout.with_name(f"{digest}.tmp")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    layer = tmp.parent / "pause-layer.tar"
    with tarfile.open(layer, "w") as tar:
        info = tar.gettarinfo(str(pause_binary), arcname="pause")
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        with pause_binary.open("rb") as f:
            tar.addfile(info, f)
    tag = PAUSE_IMAGE.rsplit(":", 1)[1]
    _run(["umoci", "init", "--layout", str(tmp)])
    _run(["umoci", "new", "--image", f"{tmp}:{tag}"])
    _run(["umoci", "raw", "add-layer", "--image", f"{tmp}:{tag}", str(layer)])
    _run(["umoci", "config", "--image", f"{tmp}:{tag}", "--config.entrypoint", "/pause",
          "--config.user", "65535:65535"])
    layer.unlink()
    tmp.rename(layout)
    return layout


def runtime_image() -> Path:
    """Builds (or finds cached) the runtime image; returns its OCI layout. Streams progress to stderr."""
    script = paths.repo_root() / "hack" / "runtime-image" / "build.sh"
    t0 = time.monotonic()
    proc = subprocess.run(["bash", str(script)], stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise ImageError(f"building the runtime image failed (exit {proc.returncode}); see its output above")
    layout = Path(proc.stdout.strip().splitlines()[-1])
    print(f"[dsd dev cluster] runtime image ready in {time.monotonic() - t0:.0f}s: {layout}", flush=True)
    return layout


def import_image(ctr_address: Path, layout: Path, name: str) -> None:
    """`ctr images import` of an OCI layout (streamed as a tar), under the CRI's namespace, unpacked."""
    tar = subprocess.Popen(["tar", "-C", str(layout), "-chf", "-", "."], stdout=subprocess.PIPE)
    proc = subprocess.run(["ctr", "--address", str(ctr_address), "--namespace", "k8s.io", "images", "import",
                           "--base-name", name.rsplit(":", 1)[0], "-"], stdin=tar.stdout, capture_output=True,
                          text=True, check=False)
    assert tar.stdout is not None
    tar.stdout.close()
    tar.wait()
    if proc.returncode != 0 or tar.returncode != 0:
        raise ImageError(f"importing {name} into {ctr_address} failed: {proc.stderr.strip()[-2000:]}")
    listed = subprocess.run(["ctr", "--address", str(ctr_address), "--namespace", "k8s.io", "images", "ls", "-q"],
                            capture_output=True, text=True, check=False).stdout.split()
    if name not in listed:
        raise ImageError(f"imported {layout} but {name} is not among {ctr_address}'s images: {listed}")
