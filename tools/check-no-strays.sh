#!/usr/bin/env bash
# Fails when a control-plane process started from the tools directory outlives the test run. The harness's
# control planes stop on their own when a test binary exits; give them a moment to finish.
set -u
dir=${KEYWARD_TOOLS_DIR:-$("$(dirname "$0")/build.sh" --path)}
for _ in $(seq 1 60); do
  left=$(pgrep -af "^$dir/" || true)
  [ -z "$left" ] && { echo "no stray control-plane processes"; exit 0; }
  sleep 0.5
done
echo "stray control-plane processes left running after the tests:" >&2
echo "$left" >&2
exit 1
