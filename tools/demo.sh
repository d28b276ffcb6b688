#!/usr/bin/env bash
# make demo: a local control plane, keyward's CRD, an example ManagedSecret, shown with kubectl; then a clean
# stop. Grows as capabilities land. DEMO_KEEP=1 keeps the control plane up until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
tools=$(tools/build.sh --path)
kubectl=$tools/kubectl
dir=$(mktemp -d -t keyward-demo-XXXXXX)
rmdir "$dir"   # keyward-dev creates it, and removes it when it stops
log=$(mktemp -t keyward-demo-log-XXXXXX)
cp_pid=""

cleanup() {
  if [ -n "$cp_pid" ] && kill -0 "$cp_pid" 2>/dev/null; then
    echo "==> stopping the control plane"
    kill -TERM "$cp_pid" 2>/dev/null || true
    wait "$cp_pid" 2>/dev/null || true
  fi
  rm -f "$log"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { printf '\n==> %s\n' "$*"; }

step "starting a local control plane (etcd + kube-apiserver, built from pinned sources)"
KEYWARD_TOOLS_DIR=$tools target/debug/keyward-dev control-plane --dir "$dir" >"$log" 2>&1 &
cp_pid=$!
for _ in $(seq 1 600); do
  grep -q '^# keyward-dev: control plane ready' "$log" 2>/dev/null && break
  kill -0 "$cp_pid" 2>/dev/null || { cat "$log"; echo "control plane failed to start" >&2; exit 1; }
  sleep 0.2
done
grep -q '^# keyward-dev: control plane ready' "$log" || { cat "$log"; echo "control plane not ready" >&2; exit 1; }
export KUBECONFIG=$dir/kubeconfig
grep '^# keyward-dev' "$log"
"$kubectl" version

step "installing keyward's CRD (crds/)"
"$kubectl" apply --server-side -f crds/
"$kubectl" wait --for=condition=Established --timeout=60s crd/managedsecrets.keyward.dev

step "applying examples/managedsecret.yaml"
"$kubectl" create namespace backend
"$kubectl" apply --server-side -f examples/managedsecret.yaml

step "the ManagedSecret, as kubectl shows it"
"$kubectl" get managedsecrets -A
"$kubectl" get msec openai-api-key -n backend -o yaml

step "an invalid ManagedSecret is refused at admission"
if "$kubectl" apply -f - <<'YAML' 2>&1; then echo "expected a refusal" >&2; exit 1; fi
apiVersion: keyward.dev/v1alpha1
kind: ManagedSecret
metadata: {name: broken, namespace: backend}
spec:
  source: {esc: {environment: "not an environment", path: a.b}}
  target: {key: K}
YAML

if [ "${DEMO_KEEP:-}" = "1" ]; then
  step "DEMO_KEEP=1: the control plane stays up; Ctrl-C stops it"
  echo "export KUBECONFIG=$KUBECONFIG"
  wait "$cp_pid"
fi
step "demo complete"
