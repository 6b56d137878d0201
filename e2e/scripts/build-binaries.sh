#!/usr/bin/env bash
# Builds (or reuses) every binary the e2e environment runs, and promtool, from package registries only,
# into a cache outside the repository keyed by version:
#   ${TIKV_OPERATOR_E2E_CACHE:-$HOME/.cache/tikv-operator-e2e}/bin/<name>-<version>
#
# Usage: e2e/scripts/build-binaries.sh [all|etcd|kwok|kubernetes|pd|helm|promtool]...
#
# `all` is everything the e2e environment and its tests need, helm included (the chart tests
# in xtask and e2e/tests/helm.rs run it). promtool is not part of it: the unit tests of
# manifests/monitoring need it and build it on first use (.ci/run builds it before them).
#
# Environment:
#   TIKV_OPERATOR_E2E_CACHE  cache root (default ~/.cache/tikv-operator-e2e)
#   E2E_GO_PARALLEL          go build -p (default 2; the machines have 2 cores)
#   E2E_NICE                 nice level of the builds (default 10, so other compiles keep priority)
set -euo pipefail

K8S_VERSION="${E2E_K8S_VERSION:-v1.33.13}"
KWOK_VERSION="${E2E_KWOK_VERSION:-v0.7.0}"
# PD. The module has no /v8 path, so a PD commit is addressed by its pseudo-version. The target
# is v8.5.5 (commit 9c9a8c8a2568), but the module proxy reachable here refuses commit-hash, tag
# and @latest/list queries for github.com/tikv/pd and serves only exact pseudo-versions, and the
# pseudo-version of 9c9a8c8a2568 (it embeds the commit time) is not known here. Until it is, the
# environment uses the newest PD commit whose pseudo-version is known: master of 2024-04-07
# (between v8.0.0 and v8.1.0). Override both variables once the v8.5.5 pseudo-version is known.
PD_MODULE_VERSION="${E2E_PD_MODULE_VERSION:-v1.1.0-beta.0.20240407022249-7179657d129b}"
PD_VERSION="${E2E_PD_VERSION:-v8.1.0-alpha-7179657d129b}"
ETCD_CRATE_VERSION="${E2E_ETCD_CRATE_VERSION:-3.5.34}"
HELM_VERSION="${E2E_HELM_VERSION:-v4.3.2}"
# promtool (Go module github.com/prometheus/prometheus, cmd/promtool) checks
# manifests/monitoring/prometheusrule.yaml; crates/manager/src/monitoring_tests.rs reads this
# line to find the binary.
PROMTOOL_VERSION="${E2E_PROMTOOL_VERSION:-v0.316.0}"

CACHE="${TIKV_OPERATOR_E2E_CACHE:-$HOME/.cache/tikv-operator-e2e}"
BIN="$CACHE/bin"
LOGS="$CACHE/build-logs"
TIMES="$CACHE/build-times.txt"
mkdir -p "$BIN" "$LOGS"

export GOTOOLCHAIN=local
export CGO_ENABLED=0
export GOFLAGS="-p=${E2E_GO_PARALLEL:-2} -buildvcs=false -mod=mod"
NICE="nice -n ${E2E_NICE:-10}"

log() { echo "[build-binaries $(date +%H:%M:%S)] $*" >&2; }

have() { [[ -x "$BIN/$1" ]]; }

record_time() { # name seconds
  echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) $1 $2s" >>"$TIMES"
  log "$1 built in $2s"
}

# Runs a `go build -v`/`go install -v` command, printing a progress line every 25 packages and
# keeping the full output in a log; on failure the log tail is printed.
go_with_progress() { # name cmd...
  local name="$1"; shift
  local logf="$LOGS/$name.log" start n=0 line
  start=$(date +%s)
  log "$name: $* (log: $logf)"
  set +e
  { $NICE "$@" 2>&1; echo "__exit=$?"; } | tee "$logf" | while IFS= read -r line; do
    case "$line" in
      __exit=*) ;;
      *) n=$((n + 1)); if ((n % 25 == 0)); then log "$name: $n packages compiled, $(($(date +%s) - start))s"; fi ;;
    esac
  done
  set -e
  local rc
  rc=$(grep -o '__exit=[0-9]*' "$logf" | tail -1 | cut -d= -f2)
  if [[ "$rc" != 0 ]]; then
    log "$name: FAILED (exit $rc); last lines of $logf:"
    grep -v '^__exit=' "$logf" | tail -40 >&2
    return 1
  fi
}

build_etcd() {
  local name="etcd-v$ETCD_CRATE_VERSION"
  if have "$name"; then log "$name: cached"; return; fi
  local start work
  start=$(date +%s)
  work=$(mktemp -d)
  # The crate ships the etcd release binary; a throwaway crate pulls it from crates.io.
  mkdir -p "$work/src"
  cat >"$work/Cargo.toml" <<TOML
[package]
name = "fetch-etcd"
version = "0.0.0"
edition = "2021"
[dependencies]
etcd-bin-vendored = { version = "=$ETCD_CRATE_VERSION", features = ["linux-x86_64"] }
[workspace]
TOML
  echo 'fn main() {}' >"$work/src/main.rs"
  (cd "$work" && cargo fetch --quiet)
  local src
  src=$(find "${CARGO_HOME:-$HOME/.cargo}/registry/src" -path "*etcd-bin-vendored-linux-amd64-$ETCD_CRATE_VERSION*" -type f -name etcd | head -1)
  [[ -n "$src" ]] || { log "etcd binary not found in the etcd-bin-vendored-linux-amd64 crate"; rm -rf "$work"; return 1; }
  install -m 0755 "$src" "$BIN/$name.tmp" && mv "$BIN/$name.tmp" "$BIN/$name"
  rm -rf "$work"
  "$BIN/$name" --version | head -1 >&2
  record_time "$name" $(($(date +%s) - start))
}

build_kwok() {
  if have "kwok-$KWOK_VERSION" && have "kwokctl-$KWOK_VERSION"; then log "kwok $KWOK_VERSION: cached"; return; fi
  local start out
  start=$(date +%s)
  out=$(mktemp -d)
  GOBIN="$out" go_with_progress "kwok-$KWOK_VERSION" go install -v \
    -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" \
    "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwokctl@$KWOK_VERSION"
  mv "$out/kwok" "$BIN/kwok-$KWOK_VERSION"
  mv "$out/kwokctl" "$BIN/kwokctl-$KWOK_VERSION"
  rm -rf "$out"
  record_time "kwok+kwokctl-$KWOK_VERSION" $(($(date +%s) - start))
}

K8S_CMDS=(kube-apiserver kube-controller-manager kube-scheduler kubectl)

build_kubernetes() {
  local missing=0 c
  for c in "${K8S_CMDS[@]}"; do have "$c-$K8S_VERSION" || missing=1; done
  if ((missing == 0)); then log "kubernetes $K8S_VERSION: cached"; return; fi
  local start work gomod staging info commit
  start=$(date +%s)
  # k8s.io/kubernetes replaces its staging modules with local directories, which `go install`
  # refuses; a wrapper module requires it and replaces each staging module with its published
  # v0.x release instead.
  work="$CACHE/work/kubernetes-$K8S_VERSION"
  mkdir -p "$work"
  gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^\s*"GoMod": "\(.*\)",$/\1/p')
  info=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^\s*"Hash": "\(.*\)",\?$/\1/p' | head -1)
  commit="${info:-unknown}"
  staging=$(grep -oE '^\s*k8s\.io/[a-z0-9-]+ => \./staging/src/k8s\.io/[a-z0-9-]+' "$gomod" | awk '{print $1}' | sort -u)
  [[ -n "$staging" ]] || { log "no staging replaces found in $gomod"; return 1; }
  {
    echo "module tikv-operator-e2e/kubernetes-build"
    echo
    echo "go 1.24.0"
    echo
    echo "godebug default=go1.24"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    for m in $staging; do echo "replace $m => $m ${K8S_VERSION/v1./v0.}"; done
  } >"$work/go.mod"
  log "kubernetes $K8S_VERSION: wrapper module with $(echo "$staging" | wc -l) staging replaces in $work"
  local minor
  minor=$(echo "$K8S_VERSION" | cut -d. -f2)
  local ldflags="-s -w"
  ldflags+=" -X k8s.io/component-base/version.gitVersion=$K8S_VERSION"
  ldflags+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
  ldflags+=" -X k8s.io/component-base/version.gitCommit=$commit -X k8s.io/component-base/version.gitTreeState=clean"
  ldflags+=" -X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z"
  ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
  ldflags+=" -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  mkdir -p "$work/out"
  local pkgs=()
  for c in "${K8S_CMDS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  (cd "$work" && go_with_progress "kubernetes-$K8S_VERSION" go build -v -trimpath -ldflags "$ldflags" -o out/ "${pkgs[@]}")
  for c in "${K8S_CMDS[@]}"; do mv "$work/out/$c" "$BIN/$c-$K8S_VERSION"; done
  "$BIN/kube-apiserver-$K8S_VERSION" --version >&2
  record_time "kubernetes-$K8S_VERSION" $(($(date +%s) - start))
}

build_pd() {
  local name="pd-server-$PD_VERSION"
  if have "$name"; then log "$name: cached"; return; fi
  local start work
  start=$(date +%s)
  # A wrapper module pins the exact version: `go install pkg@version` would also ask the proxy
  # for the module's version list (deprecation check), which the proxy here refuses.
  work="$CACHE/work/pd-$PD_VERSION"
  mkdir -p "$work/out"
  printf 'module tikv-operator-e2e/pd-build\n\ngo 1.21\n\nrequire github.com/tikv/pd %s\n' \
    "$PD_MODULE_VERSION" >"$work/go.mod"
  # without_dashboard: the dashboard build would download UI assets, which is not possible here.
  local ldflags="-s -w"
  ldflags+=" -X github.com/tikv/pd/pkg/versioninfo.PDReleaseVersion=$PD_VERSION"
  ldflags+=" -X github.com/tikv/pd/pkg/versioninfo.PDGitHash=${PD_MODULE_VERSION##*-}"
  ldflags+=" -X github.com/tikv/pd/pkg/versioninfo.PDEdition=Community"
  (cd "$work" && go_with_progress "$name" go build -v -trimpath -tags without_dashboard \
    -ldflags "$ldflags" -o out/pd-server github.com/tikv/pd/cmd/pd-server)
  mv "$work/out/pd-server" "$BIN/$name"
  "$BIN/$name" --version >&2 || true
  record_time "$name" $(($(date +%s) - start))
}

build_helm() {
  local name="helm-$HELM_VERSION"
  if have "$name"; then log "$name: cached"; return; fi
  local start work
  start=$(date +%s)
  # Same wrapper-module approach as PD: the exact version is pinned in go.mod, so the build asks
  # the module proxy for nothing but that version and its dependencies.
  work="$CACHE/work/helm-$HELM_VERSION"
  mkdir -p "$work/out"
  printf 'module tikv-operator-e2e/helm-build\n\ngo 1.25.0\n\nrequire helm.sh/helm/v4 %s\n' \
    "$HELM_VERSION" >"$work/go.mod"
  local ldflags="-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION"
  ldflags+=" -X helm.sh/helm/v4/internal/version.gitTreeState=clean"
  (cd "$work" && go_with_progress "$name" go build -v -trimpath -ldflags "$ldflags" \
    -o out/helm helm.sh/helm/v4/cmd/helm)
  mv "$work/out/helm" "$BIN/$name"
  "$BIN/$name" version >&2
  record_time "$name" $(($(date +%s) - start))
}

build_promtool() {
  local name="promtool-$PROMTOOL_VERSION"
  if have "$name"; then log "$name: cached"; return; fi
  local start work
  start=$(date +%s)
  # A wrapper module pins the exact version, as for PD.
  work="$CACHE/work/promtool-$PROMTOOL_VERSION"
  mkdir -p "$work/out"
  printf 'module tikv-operator-e2e/promtool-build\n\ngo 1.25\n\nrequire github.com/prometheus/prometheus %s\n' \
    "$PROMTOOL_VERSION" >"$work/go.mod"
  (cd "$work" && go_with_progress "$name" go build -v -trimpath \
    -ldflags "-s -w -X github.com/prometheus/common/version.Version=$PROMTOOL_VERSION" \
    -o out/promtool github.com/prometheus/prometheus/cmd/promtool)
  mv "$work/out/promtool" "$BIN/$name"
  "$BIN/$name" --version >&2
  record_time "$name" $(($(date +%s) - start))
}

targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(all)
for t in "${targets[@]}"; do
  case "$t" in
    all) build_etcd; build_kwok; build_kubernetes; build_pd; build_helm ;;
    etcd) build_etcd ;;
    kwok) build_kwok ;;
    kubernetes) build_kubernetes ;;
    pd) build_pd ;;
    helm) build_helm ;;
    promtool) build_promtool ;;
    *) echo "unknown target $t" >&2; exit 2 ;;
  esac
done
log "binaries in $BIN:"
ls -1 "$BIN" >&2
