"""One source of truth: the committed CRDs (crds/ and the chart's copy) and manifests/install.yaml are exactly
what the Python models and the chart generate, and every schema field is documented for `kubectl explain`."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from dsd_devcluster.toolchain import ensure_toolchain
from dsd_operator.api import crds

REPO = Path(__file__).resolve().parents[2]


def test_committed_crds_match_the_models():
    for name, crd in crds.all_crds().items():
        for directory in crds.output_dirs(REPO):
            committed = (directory / name).read_text()
            assert committed == crds.render(crd), (
                f"{directory / name} is stale: run `python -m dsd_operator.api.crds --write`")


def _undocumented(schema: dict, path: str) -> list[str]:
    missing = []
    for name, sub in (schema.get("properties") or {}).items():
        where = f"{path}.{name}"
        if name != "metadata" and not sub.get("description"):
            missing.append(where)
        missing += _undocumented(sub, where)
    if "items" in schema:
        missing += _undocumented(schema["items"], path + "[]")
    return missing


def test_every_field_has_a_description_that_starts_with_its_name():
    for crd in crds.all_crds().values():
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        assert _undocumented(schema, "") == []
        spec = schema["properties"]["spec"]
        for name, sub in spec["properties"].items():
            assert sub["description"].startswith(f"{name}:"), (name, sub["description"])


def test_install_manifest_is_rendered_from_the_chart(tmp_path):
    copy = tmp_path / "repo"
    for part in ("charts", "hack", "manifests"):
        shutil.copytree(REPO / part, copy / part)
    env = {**os.environ, "HELM": str(ensure_toolchain().path("helm"))}
    subprocess.run(["bash", str(copy / "hack" / "render-manifests.sh")], env=env, check=True)
    assert (copy / "manifests" / "install.yaml").read_text() == (REPO / "manifests" / "install.yaml").read_text(), (
        "manifests/install.yaml is stale: run hack/render-manifests.sh")


def test_chart_passes_helm_lint():
    proc = subprocess.run([str(ensure_toolchain().path("helm")), "lint", "--strict", str(REPO / "charts/dsd-operator")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
