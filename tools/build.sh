#!/usr/bin/env bash
# Builds the test control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl),
# kwok and helm from their pinned Go modules into a cache directory keyed by those pins.
#
#   tools/build.sh          build whatever is missing (a no-op when warm)
#   tools/build.sh --path   print the cache directory
#   tools/build.sh NAME...  build only these tools
#
# The cache lives outside the repo (default ~/.cache/keyward/tools/<key>, or $KEYWARD_TOOLS_DIR) so that a
# fresh clone reuses it. The key changes whenever a pinned version or a go.sum changes.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)

modver() { # modver DIR MODULE -> the version DIR/go.mod pins for MODULE
  awk -v m="$2" '$1 == m && $2 ~ /^v/ { print $2; exit }' "$here/$1/go.mod"
}

K8S=$(modver kube k8s.io/kubernetes)
ETCD=$(modver etcd go.etcd.io/etcd/server/v3)
KWOK=$(modver kwok sigs.k8s.io/kwok)
HELM=$(modver helm helm.sh/helm/v3)
PROMETHEUS=""
[ -f "$here/promtool/go.mod" ] && PROMETHEUS=$(modver promtool github.com/prometheus/prometheus)

sum=$(cat "$here"/*/go.mod "$here"/*/go.sum | sha256sum | cut -c1-12)
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
order=(etcd kube-apiserver kubectl kube-controller-manager kube-scheduler kwok helm)
if [ -n "$PROMETHEUS" ]; then
  spec[promtool]="promtool github.com/prometheus/prometheus/cmd/promtool -s -w"
  order+=(promtool)
fi
[ $# -gt 0 ] && order=("$@")

mkdir -p "$dir"
missing=()
for t in "${order[@]}"; do
  [ -n "${spec[$t]:-}" ] || { echo "tools/build.sh: unknown tool $t" >&2; exit 2; }
  [ -x "$dir/$t" ] || missing+=("$t")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "tools: all present in $dir"
  exit 0
fi

echo "tools: building ${missing[*]} into $dir (cold: about 20-30 minutes on 2 cores)"
n=0
for t in "${missing[@]}"; do
  n=$((n + 1))
  read -r moddir pkg ldflags <<<"${spec[$t]}"
  start=$(date +%s)
  echo "tools: [$n/${#missing[@]}] $t ($pkg) ..."
  (cd "$here/$moddir" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$dir/.$t.tmp" "$pkg")
  mv "$dir/.$t.tmp" "$dir/$t"
  echo "tools: [$n/${#missing[@]}] $t done in $(( $(date +%s) - start ))s"
done
echo "tools: ready in $dir"
