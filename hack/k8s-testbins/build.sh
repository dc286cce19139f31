#!/usr/bin/env bash
# Build (once, cached) the binaries of DSD's local dev cluster from the Go module proxy:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, and for real nodes kubelet, kube-proxy
# and the sandbox `pause` (this wrapper module); kwok, helm, CoreDNS and Prometheus (released versions, `go install`).
#
# Output: $DSD_TOOLS_CACHE (default ~/.cache/dsd-tools)/<key>/bin, where <key> names the versions.
# A .stamp file holds a hash of everything that decides the build; when it matches, nothing runs.
# Prints the bin directory on the last line of stdout. Fails loudly (exit != 0, log tail) on error.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
K8S_VERSION="$(awk '$1=="k8s.io/kubernetes"{print $2}' "$here/go.mod" | head -1)"
KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"
HELM_VERSION="${HELM_VERSION:-v3.19.0}"
COREDNS_VERSION="${COREDNS_VERSION:-v1.15.0}"
# Prometheus 3.x (module versions v0.3xx); Debian's 2.42 is built without kubernetes_sd_configs.
PROMETHEUS_VERSION="${PROMETHEUS_VERSION:-v0.316.0}"
export GOTOOLCHAIN=local GOFLAGS="-buildvcs=false -modcacherw"

cache_root="${DSD_TOOLS_CACHE:-$HOME/.cache/dsd-tools}"
out="$cache_root/k8s-${K8S_VERSION}-kwok-${KWOK_VERSION}-helm-${HELM_VERSION}"
bin="$out/bin"
stamp_value="$( { cat "$here/go.mod" "$here/go.sum" "$here/build.sh" "$here/pause/main.go"; go version
                  echo "$KWOK_VERSION $HELM_VERSION $COREDNS_VERSION $PROMETHEUS_VERSION"; } | sha256sum | cut -d' ' -f1)"

if [[ -f "$out/.stamp" && "$(cat "$out/.stamp")" == "$stamp_value" ]]; then
  echo "dev-cluster binaries up to date in $bin" >&2
  echo "$bin"
  exit 0
fi

mkdir -p "$bin" "$out/logs"
log="$out/logs/build.log"
: > "$log"
start=$(date +%s)
step() { echo "[build $(( $(date +%s) - start ))s] $*" >&2; }

# Runs a `go` build, showing a progress line every 100 compiled packages; on failure prints the log tail.
progress_build() {
  local what="$1"; shift
  step "building $what"
  set +e
  ( "$@" 2>&1; echo "exit=$?" ) | tee -a "$log" | awk -v what="$what" '
    /^exit=/ { code = substr($0, 6); next }
    { n++; if (n % 100 == 0) { printf("[build]   %s: %d packages compiled\n", what, n) > "/dev/stderr" } }
    END { exit code }'
  local rc=$?
  set -e
  if [[ $rc -ne 0 ]]; then
    echo "ERROR: building $what failed (exit $rc); last lines of $log:" >&2
    tail -40 "$log" >&2
    exit "$rc"
  fi
}

step "k8s $K8S_VERSION, kwok $KWOK_VERSION, helm $HELM_VERSION -> $bin"
step "downloading modules for the control-plane wrapper"
(cd "$here" && go mod download 2>&1 | tee -a "$log" >&2)
# Stamp the Kubernetes version into the binaries (kubectl, helm and clients parse it).
minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
k8s_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  k8s_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
progress_build "etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kubectl + kubelet + kube-proxy" \
  bash -c "cd '$here' && go build -v -trimpath -ldflags='$k8s_ldflags' -o '$bin/' \
    go.etcd.io/etcd/server/v3 \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl \
    k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy"
progress_build "pause" bash -c "cd '$here' && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o '$bin/pause' ./pause"
mv -f "$bin/v3" "$bin/etcd" 2>/dev/null || mv -f "$bin/server" "$bin/etcd" 2>/dev/null || true
progress_build "kwok $KWOK_VERSION" \
  env GOBIN="$bin" go install -v -trimpath -ldflags='-s -w' "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
progress_build "helm $HELM_VERSION" \
  env GOBIN="$bin" go install -v -trimpath -ldflags='-s -w' "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
progress_build "coredns $COREDNS_VERSION" \
  env GOBIN="$bin" go install -v -trimpath -ldflags='-s -w' "github.com/coredns/coredns@$COREDNS_VERSION"
# Only Kubernetes service discovery (build tags of Prometheus' plugins/): a fraction of the full build.
progress_build "prometheus $PROMETHEUS_VERSION" \
  env GOBIN="$bin" go install -v -trimpath -ldflags='-s -w' -tags remove_all_sd,enable_kubernetes_sd \
  "github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_VERSION"

for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy pause kwok helm coredns \
         prometheus; do
  [[ -x "$bin/$b" ]] || { echo "ERROR: $bin/$b missing after build" >&2; ls -la "$bin" >&2; exit 1; }
done
# kwok reads its stage files from the module source at run time: record where they are.
go env GOMODCACHE | sed "s|\$|/sigs.k8s.io/kwok@$KWOK_VERSION|" > "$out/kwok-src"
echo "$stamp_value" > "$out/.stamp"
step "done in $(( $(date +%s) - start ))s"
echo "$bin"
