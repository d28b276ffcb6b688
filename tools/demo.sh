#!/usr/bin/env bash
# make demo: keyward's main job end to end on its embedded default — a local control plane with controllers
# (rollouts really happen), the local ESC server seeded from examples/esc-seed.yaml, and the local GitHub server.
# The team's secret map is imported, keyward runs, and the demo narrates: the Secrets appear, an ESC change
# rolls the app once, an emergency rotation goes ESC → Secret → GitHub → restart, the compliance report prints.
# Every narrated step is checked; the demo fails if one did not really happen. Values are compared, never
# printed. DEMO_KEEP=1 keeps everything up (and prints the KUBECONFIG) until Ctrl-C; Ctrl-C at any point, or the
# end, leaves nothing running.
set -euo pipefail
cd "$(dirname "$0")/.."
tools=$(tools/build.sh --path)
export KEYWARD_TOOLS_DIR=$tools
kubectl=$tools/kubectl
keyward=target/debug/keyward
work=$(mktemp -d -t keyward-demo-XXXXXX)
cpdir=$work/control-plane
pids=()
env_ref=ai-cherry/sophia/lambda-labs-production

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
say() { printf '    %s\n' "$*"; }
fail() { echo "demo: FAILED: $*" >&2; exit 1; }
# wait_for SECONDS DESCRIPTION COMMAND...: polls until COMMAND succeeds.
wait_for() {
  local secs=$1 what=$2; shift 2
  for _ in $(seq 1 $((secs * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  fail "$what (waited ${secs}s)"
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ready_line() { grep -q "$2" "$1"; }
k() { "$kubectl" "$@"; }

# What ESC holds at a path (an open session, as keyward reads it), what a Secret holds, what GitHub received.
esc_value() {
  local id
  id=$(curl -fsS -X POST -H "Authorization: token demo-token" "$esc/environments/$env_ref/open" |
    python3 -c 'import sys, json; print(json.load(sys.stdin)["id"])')
  curl -fsS -H "Authorization: token demo-token" "$esc/environments/$env_ref/open/$id?property=$1" |
    python3 -c 'import sys, json; print(json.load(sys.stdin)["value"], end="")'
}
secret_value() { k get secret "$2" -n "$1" -o "jsonpath={.data.$3}" | base64 -d; }
github_value() {
  curl -fsS "$github/_dev/received?scope=$1&name=$2" |
    python3 -c 'import sys, json; s = json.load(sys.stdin)["secrets"]; print(s[0]["value"] if s else "", end="")'
}
replica_sets() { k get rs -n backend -l app=backend --no-headers 2>/dev/null | wc -l; }
rs_count_is() { [ "$(replica_sets)" -eq "$1" ]; }
rolled_out() {
  [ "$(k get deploy backend -n backend -o jsonpath='{.status.updatedReplicas}/{.status.readyReplicas}/{.status.replicas}')" = "1/1/1" ]
}

step "starting a local control plane with controllers (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok)"
target/debug/keyward-dev control-plane --dir "$cpdir" --with-controllers >"$work/cp.log" 2>&1 &
pids+=($!)
wait_for 120 "control plane ready" ready_line "$work/cp.log" '^# keyward-dev: control plane ready'
export KUBECONFIG=$cpdir/kubeconfig
grep '^# keyward-dev' "$work/cp.log" | sed 's/^# /    /'

step "starting the local ESC server, seeded with examples/esc-seed.yaml (an environment like the team's)"
esc_port=$(free_port)
echo "demo-token" >"$work/esc-token"
target/debug/keyward-dev esc-server --listen "127.0.0.1:$esc_port" --data "$work/esc.json" \
  --token demo-token --seed examples/esc-seed.yaml >"$work/esc.log" 2>&1 &
pids+=($!)
wait_for 30 "ESC server ready" ready_line "$work/esc.log" 'esc server ready'
esc=http://127.0.0.1:$esc_port/api/esc
curl -fsS -H "Authorization: token demo-token" "$esc/environments/ai-cherry" |
  python3 -c 'import sys, json; [print("    environment %(organization)s/%(project)s/%(name)s" % e) for e in json.load(sys.stdin)["environments"]]'

step "starting the local GitHub server (it really opens the sealed boxes keyward sends)"
gh_port=$(free_port)
echo "demo-github-token" >"$work/github-token"
target/debug/keyward-dev github-server --listen "127.0.0.1:$gh_port" --token-file "$work/github-token" \
  >"$work/github.log" 2>&1 &
pids+=($!)
wait_for 30 "GitHub server ready" ready_line "$work/github.log" 'github server ready'
github=http://127.0.0.1:$gh_port
say "GitHub API at $github"

step "installing keyward's CRD (crds/) and the app that consumes the secrets"
k apply --server-side -f crds/ >/dev/null
k wait --for=condition=Established --timeout=60s crd/managedsecrets.keyward.dev >/dev/null
k create namespace backend >/dev/null
k create namespace data >/dev/null
k apply -n backend -f - >/dev/null <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata: {name: backend}
spec:
  replicas: 1
  selector: {matchLabels: {app: backend}}
  template:
    metadata: {labels: {app: backend}}
    spec:
      containers:
        - name: api
          image: registry.invalid/sophia/backend:1.0
          envFrom:
            - secretRef: {name: sophia-env}
YAML
say "Deployment backend/backend reads every secret from Secret sophia-env (one envFrom), which does not exist yet"

step "importing the team's secret map (examples/secret_map.yaml) as ManagedSecrets filling one Secret per namespace"
"$keyward" import examples/secret_map.yaml --environment "$env_ref" --namespace backend --target-secret sophia-env \
  --overrides examples/import-overrides.yaml >"$work/managed.yaml" 2>"$work/import.log"
sed 's/^/    /' "$work/import.log"
k apply --server-side -f "$work/managed.yaml" | sed 's/^/    /'
imported=$(grep -c '^kind: ManagedSecret' "$work/managed.yaml")
# The emergency rotation below also pushes to GitHub: add the organization secret to the imported object.
k patch msec openai-api-key -n backend --type merge \
  -p '{"spec":{"rotation":{"pushTo":[{"github":{"organization":"ai-cherry","secretName":"OPENAI_API_KEY"}}]}}}' |
  sed 's/^/    /'

step "an invalid ManagedSecret is refused at admission, with the reason"
if k apply -f - <<'YAML' 2>"$work/refused"; then fail "an invalid ManagedSecret was accepted"; fi
apiVersion: keyward.dev/v1alpha1
kind: ManagedSecret
metadata: {name: broken, namespace: backend}
spec:
  source: {esc: {environment: "not an environment", path: a.b}}
  target: {key: K}
YAML
sed 's/^/    /' "$work/refused"
grep -q "environment must be org/project/env" "$work/refused" || fail "the refusal did not say why"

step "the platform's grants: AccessPolicy sophia-backend (examples/access-policy.yaml), in the cluster"
k apply --server-side -f examples/access-policy.yaml | sed 's/^/    /'

step "running keyward (ESC, GitHub, grants from the cluster's AccessPolicies, audit log)"
head -c 32 /dev/urandom >"$work/hash-key"
echo "demo-webhook-secret" >"$work/webhook-secret"
http_port=$(free_port)
webhook_port=$(free_port)
"$keyward" run --esc-url "$esc" --esc-token-file "$work/esc-token" --hash-key-file "$work/hash-key" \
  --github-url "$github" --github-token-file "$work/github-token" \
  --audit-log "$work/audit.log" \
  --webhook-secret-file "$work/webhook-secret" --restart-debounce-seconds 2 \
  --http-listen "127.0.0.1:$http_port" --webhook-listen "127.0.0.1:$webhook_port" --log-format text >"$work/keyward.log" 2>&1 &
pids+=($!)
wait_for 30 "keyward ready" curl -fsS "http://127.0.0.1:$http_port/readyz"

step "the Secrets appear, each holding exactly what ESC holds (compared, never printed)"
all_ready() {
  [ "$(k get msec -A -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c True)" -eq "$imported" ]
}
wait_for 60 "all $imported imported ManagedSecrets Ready" all_ready
k get msec -A | sed 's/^/    /'
[ "$(esc_value sophia.ai.openai_api_key)" = "$(secret_value backend sophia-env OPENAI_API_KEY)" ] ||
  fail "Secret backend/sophia-env differs from ESC"
[ "$(esc_value sophia.data.snowflake_password)" = "$(secret_value data sophia-env SNOWFLAKE_PASSWORD)" ] ||
  fail "Secret data/sophia-env differs from ESC"
keys=$(k get secret sophia-env -n backend -o jsonpath='{.data}' | python3 -c 'import sys, json; print(len(json.load(sys.stdin)))')
say "all $imported secrets match ESC: $keys keys in Secret backend/sophia-env, one ManagedSecret each"
wait_for 60 "the app rolled out" rolled_out
rs0=$(replica_sets)
say "the app runs (ReplicaSets: $rs0); keyward adopted it without a restart"

step "a value changes in ESC; ESC's webhook tells keyward, and the app rolls exactly once"
curl -fsS -H "Authorization: token demo-token" "$esc/environments/$env_ref/decrypt" |
  sed 's/sk-ant-demo-0001/sk-ant-demo-0002/' >"$work/def.yaml"
curl -fsS -X PATCH -H "Authorization: token demo-token" -H "Content-Type: application/x-yaml" \
  --data-binary @"$work/def.yaml" "$esc/environments/$env_ref" >/dev/null
body='{"organization":{"githubLogin":"ai-cherry"},"projectName":"sophia","environmentName":"lambda-labs-production"}'
sig=$(printf '%s' "$body" | python3 -c 'import hmac, hashlib, sys; print(hmac.new(b"demo-webhook-secret", sys.stdin.buffer.read(), hashlib.sha256).hexdigest())')
curl -fsS -X POST -H "Pulumi-Webhook-Signature: $sig" --data "$body" "http://127.0.0.1:$webhook_port/webhooks/esc" |
  sed 's/^/    webhook answered: /'; echo
anthropic_follows() {
  [ "$(esc_value sophia.ai.anthropic_api_key)" = "$(secret_value backend sophia-env ANTHROPIC_API_KEY)" ]
}
wait_for 30 "ANTHROPIC_API_KEY in Secret backend/sophia-env follows ESC" anthropic_follows
wait_for 90 "the app rolled once" rs_count_is $((rs0 + 1))
wait_for 90 "the rollout finished" rolled_out
sleep 3
rs_count_is $((rs0 + 1)) || fail "the app rolled more than once"
say "Secret updated; the app rolled once (ReplicaSets: $(replica_sets))"

step "emergency rotation: keyward rotate openai-api-key --reason ... --wait (ESC first, then Secret, GitHub, restart)"
before=$(esc_value sophia.ai.openai_api_key)
"$keyward" rotate openai-api-key -n backend --reason "demo: key pasted in a chat" --wait --timeout 2m | sed 's/^/    /'
after=$(esc_value sophia.ai.openai_api_key)
[ "$after" != "$before" ] || fail "ESC still holds the old value"
[ "$(secret_value backend sophia-env OPENAI_API_KEY)" = "$after" ] || fail "the Secret differs from ESC"
[ "$(secret_value backend sophia-env OPENAI_API_KEY_PREVIOUS)" = "$before" ] || fail "no previous value during the grace period"
pushed() { [ "$(github_value org/ai-cherry OPENAI_API_KEY)" = "$after" ]; }
wait_for 30 "GitHub holds ESC's new value" pushed
wait_for 90 "the app rolled once more" rs_count_is $((rs0 + 2))
say "ESC holds a new ${#after}-character value; the Secret and GitHub (decrypted by the test server) equal it;"
say "the old value stays as OPENAI_API_KEY_PREVIOUS for the grace period; the app rolled once more (ReplicaSets: $(replica_sets))"
grep -q '"action":"secret_rotated"' "$work/audit.log" || fail "no audit line for the rotation"

step "a ManagedSecret asking for more than its namespace is granted is refused, and nothing is written"
k apply -f - <<'YAML' | sed 's/^/    /'
apiVersion: keyward.dev/v1alpha1
kind: ManagedSecret
metadata: {name: grab-deploy-key, namespace: backend}
spec:
  source: {esc: {environment: ai-cherry/sophia/lambda-labs-production, path: sophia.ai.openai_api_key}}
  target: {key: K}
  rotation:
    period: 90d
    strategy: Notify
    pushTo: [{github: {organization: ai-cherry, secretName: DEPLOY_KEY}}]
YAML
refused_push() {
  [ "$(k get msec grab-deploy-key -n backend -o jsonpath='{.status.conditions[?(@.type=="Ready")].reason}')" = GithubPushNotGranted ]
}
wait_for 30 "grab-deploy-key refused" refused_push
k get msec grab-deploy-key -n backend -o jsonpath='{.status.conditions[?(@.type=="Ready")].message}' | sed 's/^/    /'; echo
if k get secret grab-deploy-key -n backend >/dev/null 2>&1; then fail "a Secret was written for a refused object"; fi
[ -z "$(github_value org/ai-cherry DEPLOY_KEY)" ] || fail "GitHub received a refused push"
k delete msec grab-deploy-key -n backend | sed 's/^/    /'

step "keyward status openai-api-key"
"$keyward" status openai-api-key -n backend | sed 's/^/    /'

step "the rotation-compliance report (keyward report -A)"
set +e
"$keyward" report -A >"$work/report.txt"
code=$?
set -e
sed 's/^/    /' "$work/report.txt"
[ $code -eq 0 ] || fail "report exit code $code: something is overdue"
grep -q "openai-api-key" "$work/report.txt" || fail "the report misses openai-api-key"
say "exit code 0: nothing is overdue"

step "what keyward exposes: metrics and audit lines (never a value)"
curl -fsS "http://127.0.0.1:$http_port/metrics" |
  grep -E '^(keyward_rotations_total|keyward_restarts_total|keyward_webhook_requests_total|secret_access_total\{secret_name="backend/openai)' |
  sed 's/^/    /'
say "$(wc -l <"$work/audit.log") audit lines, e.g.:"
grep '"action":"secret_rotated"' "$work/audit.log" | head -1 | sed 's/^/    /'
for v in "$before" "$after"; do
  if grep -qF -- "$v" "$work/keyward.log" "$work/audit.log"; then fail "a value reached the logs"; fi
done

if [ "${DEMO_KEEP:-}" = "1" ]; then
  step "DEMO_KEEP=1: everything stays up; Ctrl-C stops it"
  echo "export KUBECONFIG=$KUBECONFIG"
  wait "${pids[0]}"
fi
step "demo complete"
