#!/usr/bin/env bash
# make demo: keyward's main job end to end on its embedded default — a local control plane, the local ESC
# server seeded from examples/esc-seed.yaml, and `keyward run` keeping a Secret in step with ESC.
# Every narrated step is checked; the demo fails if one did not really happen. DEMO_KEEP=1 keeps it all up
# until Ctrl-C. Values are compared, never printed.
set -euo pipefail
cd "$(dirname "$0")/.."
tools=$(tools/build.sh --path)
export KEYWARD_TOOLS_DIR=$tools
kubectl=$tools/kubectl
work=$(mktemp -d -t keyward-demo-XXXXXX)
cpdir=$work/control-plane
pids=()

cleanup() {
  local code=$?
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[$i]}" 2>/dev/null || true
    wait "${pids[$i]}" 2>/dev/null || true
  done
  if [ $code -ne 0 ] && [ -f "$work/keyward.log" ]; then
    echo "---- keyward log (last 30 lines) ----"; tail -30 "$work/keyward.log"
  fi
  rm -rf "$work"
  echo "==> stopped everything the demo started"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { printf '\n==> %s\n' "$*"; }
fail() { echo "demo: FAILED: $*" >&2; exit 1; }
# wait_for SECONDS DESCRIPTION COMMAND...: polls until COMMAND succeeds.
wait_for() {
  local secs=$1 what=$2; shift 2
  for _ in $(seq 1 $((secs * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  fail "$what (waited ${secs}s)"
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ready_line() { grep -q "$2" "$1"; }

step "starting a local control plane (etcd + kube-apiserver, built from pinned sources)"
target/debug/keyward-dev control-plane --dir "$cpdir" >"$work/cp.log" 2>&1 &
pids+=($!)
wait_for 120 "control plane ready" ready_line "$work/cp.log" '^# keyward-dev: control plane ready'
export KUBECONFIG=$cpdir/kubeconfig
grep '^# keyward-dev' "$work/cp.log"

step "starting the local ESC server, seeded with examples/esc-seed.yaml"
esc_port=$(free_port)
echo "demo-token" >"$work/esc-token"
target/debug/keyward-dev esc-server --listen "127.0.0.1:$esc_port" --data "$work/esc.json" \
  --token demo-token --seed examples/esc-seed.yaml >"$work/esc.log" 2>&1 &
pids+=($!)
wait_for 30 "ESC server ready" ready_line "$work/esc.log" 'esc server ready'
esc=http://127.0.0.1:$esc_port/api/esc
envpath=ai-cherry/sophia/lambda-labs-production
curl -fsS -H "Authorization: token demo-token" "$esc/environments/ai-cherry" | jq -r '.environments[] | "  environment \(.organization)/\(.project)/\(.name)"'

step "installing keyward's CRD (crds/) and the example ManagedSecret (examples/managedsecret.yaml)"
"$kubectl" apply --server-side -f crds/ >/dev/null
"$kubectl" wait --for=condition=Established --timeout=60s crd/managedsecrets.keyward.dev
"$kubectl" create namespace backend
"$kubectl" apply --server-side -f examples/managedsecret.yaml

step "an invalid ManagedSecret is refused at admission"
if "$kubectl" apply -f - <<'YAML' 2>"$work/refused"; then fail "an invalid ManagedSecret was accepted"; fi
apiVersion: keyward.dev/v1alpha1
kind: ManagedSecret
metadata: {name: broken, namespace: backend}
spec:
  source: {esc: {environment: "not an environment", path: a.b}}
  target: {key: K}
YAML
cat "$work/refused"
grep -q "environment must be org/project/env" "$work/refused" || fail "the refusal did not say why"

step "running keyward (keyward run --esc-url $esc)"
head -c 32 /dev/urandom >"$work/hash-key"
http_port=$(free_port)
target/debug/keyward run --esc-url "$esc" --esc-token-file "$work/esc-token" --hash-key-file "$work/hash-key" \
  --access-policy-file examples/access-policy.yaml --audit-log "$work/audit.log" \
  --http-listen "127.0.0.1:$http_port" --log-format text >"$work/keyward.log" 2>&1 &
pids+=($!)
wait_for 30 "keyward ready" curl -fsS "http://127.0.0.1:$http_port/readyz"

secret_value() { "$kubectl" get secret openai -n backend -o jsonpath='{.data.OPENAI_API_KEY}' | base64 -d; }
value_is() { [ "$(secret_value)" = "$1" ]; }
step "the Secret appears with ESC's value (compared, not printed)"
wait_for 30 "Secret backend/openai holds the seeded value" value_is sk-demo-openai-0001
"$kubectl" get msec -n backend
"$kubectl" get secret openai -n backend \
  -o go-template='  Secret {{.metadata.name}}: keys [{{range $k, $v := .data}}{{$k}} {{end}}]; {{index .metadata.annotations "keyward.dev/value-hash"}}; ESC revision {{index .metadata.annotations "keyward.dev/source-revision"}}{{"\n"}}'

step "the value changes in ESC; keyward.dev/refresh-now brings it over at once"
curl -fsS -H "Authorization: token demo-token" "$esc/environments/$envpath/decrypt" |
  sed 's/sk-demo-openai-0001/sk-demo-openai-0002/' >"$work/def.yaml"
curl -fsS -X PATCH -H "Authorization: token demo-token" -H "Content-Type: application/x-yaml" \
  --data-binary @"$work/def.yaml" "$esc/environments/$envpath" >/dev/null
"$kubectl" annotate msec openai-api-key -n backend keyward.dev/refresh-now="$(date +%s)" --overwrite
wait_for 30 "Secret backend/openai follows ESC" value_is sk-demo-openai-0002
"$kubectl" get secret openai -n backend \
  -o go-template='  Secret {{.metadata.name}} now at ESC revision {{index .metadata.annotations "keyward.dev/source-revision"}}{{"\n"}}'

step "status and Events say what happened (never the value)"
"$kubectl" get msec openai-api-key -n backend -o jsonpath='{range .status.conditions[*]}  {.type}={.status} ({.reason}): {.message}{"\n"}{end}'
"$kubectl" get events.events.k8s.io -n backend -o custom-columns=TYPE:.type,REASON:.reason,NOTE:.note --no-headers | sed 's/^/  /'
curl -fsS "http://127.0.0.1:$http_port/metrics" | grep -E '^(secret_access_total|keyward_secrets_written_total)' | sed 's/^/  /'

if [ "${DEMO_KEEP:-}" = "1" ]; then
  step "DEMO_KEEP=1: everything stays up; Ctrl-C stops it"
  echo "export KUBECONFIG=$KUBECONFIG"
  wait "${pids[0]}"
fi
step "demo complete"
