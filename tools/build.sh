#!/usr/bin/env bash
# Builds the test control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl),
# kwok, helm, promtool and the Argo Rollouts controller from their pinned Go modules into a cache directory,
# and puts the pinned prometheus-operator CRDs (ServiceMonitor, PrometheusRule) and the Argo Rollouts CRDs
# (Rollout, and the AnalysisRun, AnalysisTemplate, ClusterAnalysisTemplate and Experiment CRDs its controller
# watches) beside them.
#
#   tools/build.sh          build whatever is missing (a no-op when warm)
#   tools/build.sh --path   print the cache directory
#   tools/build.sh NAME...  build only these tools
#
# The cache lives outside the repo (default ~/.cache/keyward/tools/<key>, or $KEYWARD_TOOLS_DIR) so that a
# fresh clone reuses it. The directory's key covers the control plane modules (kube, etcd, kwok, helm): it
# changes whenever one of their pins or go.sum files changes. Tools added later (promtool, rollouts-controller,
# the CRDs) carry a key of their own in a stamp file beside them (.NAME.key), so adding or bumping one rebuilds
# only that one.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)

modver() { # modver DIR MODULE -> the version DIR/go.mod pins for MODULE
  awk -v m="$2" '$1 == m && $2 ~ /^v/ { print $2; exit }' "$here/$1/go.mod"
}

K8S=$(modver kube k8s.io/kubernetes)
ETCD=$(modver etcd go.etcd.io/etcd/server/v3)
KWOK=$(modver kwok sigs.k8s.io/kwok)
HELM=$(modver helm helm.sh/helm/v3)
PROMETHEUS=$(modver promtool github.com/prometheus/prometheus)
ARGO_ROLLOUTS=$(modver argo-rollouts github.com/argoproj/argo-rollouts)
# Its CRDs come from the same module's zip, checked against the hash tools/argo-rollouts/go.sum records.
ARGO_ROLLOUTS_SUM=$(awk -v v="$ARGO_ROLLOUTS" '$1 == "github.com/argoproj/argo-rollouts" && $2 == v { print $3 }' \
  "$here/argo-rollouts/go.sum")
# The prometheus-operator module is only read (its example CRDs), never built: pinned here with its go.sum hash.
PROMOP=v0.85.0
PROMOP_SUM="h1:M5xLCLEoaW2IJfnuCwFzzpL+jSVQu3KGT84Pye+fW8s="

# Listed, not globbed: a new module directory must not change the key of the control plane's directory.
sum=$(cd "$here" && cat etcd/go.mod helm/go.mod kube/go.mod kwok/go.mod etcd/go.sum helm/go.sum kube/go.sum \
  kwok/go.sum | sha256sum | cut -c1-12)
key="k8s-${K8S}_etcd-${ETCD}_kwok-${KWOK}_helm-${HELM}_${sum}"
dir=${KEYWARD_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/keyward/tools/$key}

if [ "${1:-}" = "--path" ]; then
  echo "$dir"
  exit 0
fi

# name -> "module-dir package ldflags"
k8s_minor=$(echo "$K8S" | cut -d. -f2)
k8s_ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S -X k8s.io/component-base/version.gitMajor=1 \
-X k8s.io/component-base/version.gitMinor=$k8s_minor -X k8s.io/component-base/version.gitTreeState=clean \
-X k8s.io/client-go/pkg/version.gitVersion=$K8S -X k8s.io/client-go/pkg/version.gitMajor=1 \
-X k8s.io/client-go/pkg/version.gitMinor=$k8s_minor"
declare -A spec=(
  [etcd]="etcd go.etcd.io/etcd/server/v3 -s -w"
  [kube-apiserver]="kube k8s.io/kubernetes/cmd/kube-apiserver $k8s_ldflags"
  [kube-controller-manager]="kube k8s.io/kubernetes/cmd/kube-controller-manager $k8s_ldflags"
  [kube-scheduler]="kube k8s.io/kubernetes/cmd/kube-scheduler $k8s_ldflags"
  [kubectl]="kube k8s.io/kubernetes/cmd/kubectl $k8s_ldflags"
  [kwok]="kwok sigs.k8s.io/kwok/cmd/kwok -s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK"
  [helm]="helm helm.sh/helm/v3/cmd/helm -s -w -X helm.sh/helm/v3/internal/version.version=$HELM"
)
# v0.316.0 of the Go module is Prometheus 3.16.0.
prom_release=$(echo "$PROMETHEUS" | awk -F. '{ printf "%d.%d.%s", substr($2, 1, 1), substr($2, 2) + 0, $3 }')
spec[promtool]="promtool github.com/prometheus/prometheus/cmd/promtool -s -w \
-X github.com/prometheus/common/version.Version=$prom_release -X github.com/prometheus/common/version.Branch=HEAD"
spec[prometheus-operator-crds]="-"
# Argo Rollouts prints v<version>+unknown: the module zip does not say which commit it is.
spec[rollouts-controller]="argo-rollouts github.com/argoproj/argo-rollouts/cmd/rollouts-controller -s -w \
-X github.com/argoproj/argo-rollouts/utils/version.version=${ARGO_ROLLOUTS#v}"
spec[argo-rollouts-crds]="-"
# name -> its own cache key (tools in the keyed directory have none: the directory's key is theirs)
declare -A stamp=(
  [promtool]="prometheus-$PROMETHEUS-$(cat "$here/promtool/go.mod" "$here/promtool/go.sum" | sha256sum | cut -c1-12)"
  [prometheus-operator-crds]="prometheus-operator-$PROMOP"
  [rollouts-controller]="argo-rollouts-$ARGO_ROLLOUTS-$(cat "$here/argo-rollouts/go.mod" "$here/argo-rollouts/go.sum" |
    sha256sum | cut -c1-12)"
  [argo-rollouts-crds]="argo-rollouts-$ARGO_ROLLOUTS-$ARGO_ROLLOUTS_SUM"
)
order=(etcd kube-apiserver kubectl kube-controller-manager kube-scheduler kwok helm promtool prometheus-operator-crds
  rollouts-controller argo-rollouts-crds)
[ $# -gt 0 ] && order=("$@")

present() { # present NAME -> whether NAME is built and, if it has a key of its own, built from that key
  [ -e "$dir/$1" ] || return 1
  [ -z "${stamp[$1]:-}" ] || [ "$(cat "$dir/.$1.key" 2>/dev/null)" = "${stamp[$1]}" ]
}

# copy_from_module NAME MODULE VERSION SUM FILE... -> $dir/NAME/ holds FILEs (paths inside the module) from the
# module's zip, which must have the go.sum hash SUM.
copy_from_module() {
  local name=$1 module=$2 version=$3 want=$4 info mod got f
  shift 4
  info=$(cd "$dir" && GOFLAGS=-mod=mod go mod download -json "$module@$version")
  mod=$(echo "$info" | awk -F'"' '$2 == "Dir" { print $4 }')
  got=$(echo "$info" | awk -F'"' '$2 == "Sum" { print $4 }')
  [ -n "$want" ] && [ "$got" = "$want" ] ||
    { echo "tools/build.sh: $module $version has sum $got, want ${want:-(none recorded)}" >&2; return 1; }
  rm -rf "$dir/.$name.tmp"
  mkdir -p "$dir/.$name.tmp"
  for f in "$@"; do
    cp "$mod/$f" "$dir/.$name.tmp/"
  done
  chmod -R u+w "$dir/.$name.tmp"
  rm -rf "${dir:?}/$name"
  mv "$dir/.$name.tmp" "$dir/$name"
}

mkdir -p "$dir"
missing=()
for t in "${order[@]}"; do
  [ -n "${spec[$t]:-}" ] || { echo "tools/build.sh: unknown tool $t" >&2; exit 2; }
  present "$t" || missing+=("$t")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "tools: all present in $dir"
  exit 0
fi

echo "tools: building ${missing[*]} into $dir (cold: about 30-45 minutes on 2 cores)"
n=0
for t in "${missing[@]}"; do
  n=$((n + 1))
  start=$(date +%s)
  if [ "$t" = prometheus-operator-crds ]; then
    echo "tools: [$n/${#missing[@]}] $t (github.com/prometheus-operator/prometheus-operator@$PROMOP) ..."
    copy_from_module "$t" github.com/prometheus-operator/prometheus-operator "$PROMOP" "$PROMOP_SUM" \
      example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml \
      example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml
  elif [ "$t" = argo-rollouts-crds ]; then
    echo "tools: [$n/${#missing[@]}] $t (github.com/argoproj/argo-rollouts@$ARGO_ROLLOUTS) ..."
    copy_from_module "$t" github.com/argoproj/argo-rollouts "$ARGO_ROLLOUTS" "$ARGO_ROLLOUTS_SUM" \
      manifests/crds/rollout-crd.yaml manifests/crds/analysis-run-crd.yaml manifests/crds/analysis-template-crd.yaml \
      manifests/crds/cluster-analysis-template-crd.yaml manifests/crds/experiment-crd.yaml
  else
    read -r moddir pkg ldflags <<<"${spec[$t]}"
    echo "tools: [$n/${#missing[@]}] $t ($pkg) ..."
    (cd "$here/$moddir" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$dir/.$t.tmp" "$pkg")
    mv "$dir/.$t.tmp" "$dir/$t"
  fi
  [ -z "${stamp[$t]:-}" ] || echo "${stamp[$t]}" >"$dir/.$t.key"
  echo "tools: [$n/${#missing[@]}] $t done in $(( $(date +%s) - start ))s"
done
echo "tools: ready in $dir"
