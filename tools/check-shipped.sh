#!/usr/bin/env bash
# Checks that a keyward binary is the operator as shipped: no developer tools (the local control plane, ESC and
# GitHub servers live in the keyward-dev package) and no test hook.
#
#   tools/check-shipped.sh target/release/keyward
#   KEYWARD_RUNNER=qemu-aarch64-static tools/check-shipped.sh build/image/context/arm64/keyward
# KEYWARD_RUNNER starts a binary of another architecture (tools/image.sh sets it for arm64 on other hosts).
set -euo pipefail
bin=${1:?usage: tools/check-shipped.sh BINARY}
fail() { echo "check-shipped: $bin: $*" >&2; exit 1; }
[ -x "$bin" ] || fail "not an executable (build it with: cargo build --release -p keyward --bin keyward)"

# The command line offers no developer command.
# shellcheck disable=SC2086 # KEYWARD_RUNNER is a command, possibly with flags
help=$(${KEYWARD_RUNNER:-} "$bin" --help)
for cmd in control-plane esc-server github-server; do
  if grep -qw -- "$cmd" <<<"$help"; then fail "keyward --help lists the developer command $cmd"; fi
done

# No code of the developer tools: neither their crate's symbols nor their texts, nor the crash-test hook.
if nm -C "$bin" 2>/dev/null | grep -q 'keyward_dev::'; then fail "contains symbols of the keyward_dev crate"; fi
for text in KEYWARD_TEST_ABORT_AFTER KEYWARD_TEST_BLIND_SECRETS "keyward-dev: control plane ready" "keyward-dev: esc server ready"; do
  if grep -qaF -- "$text" "$bin"; then fail "contains the text \"$text\" of the developer tools or the test hook"; fi
done
symbols=$(nm "$bin" 2>/dev/null | wc -l)
echo "check-shipped: $bin is the operator alone ($symbols symbols checked, $(du -h "$bin" | cut -f1))"
