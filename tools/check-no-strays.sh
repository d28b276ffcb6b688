#!/usr/bin/env bash
# Fails when a control-plane process started from the tools directory (or a database server started from its
# cache) outlives the test run. The harness's control planes stop on their own when a test binary exits, the
# database servers when their test ends; give them a moment to finish.
set -u
dir=${KEYWARD_TOOLS_DIR:-$("$(dirname "$0")/build.sh" --path)}
# Containers the image tests started (tests/chart.rs names them keyward-test-*) are removed by the tests.
if command -v podman >/dev/null; then
  containers=$(podman --cgroup-manager cgroupfs ps -a --filter name=^keyward-test- --format '{{.Names}}' 2>/dev/null || true)
  if [ -n "$containers" ]; then
    echo "containers left behind by the tests (removing them):" >&2
    echo "$containers" >&2
    podman --cgroup-manager cgroupfs rm --force --time 0 $containers >/dev/null 2>&1 || true
    exit 1
  fi
fi
# The database servers the rotation tests start (tests/support/databases.rs) run from their own cache.
databases=${KEYWARD_DATABASES_DIR:-$("$(dirname "$0")/databases.sh" --path)}
for _ in $(seq 1 60); do
  left=$(pgrep -af "^$dir/|^$databases/|unshare .*$databases/" || true)
  [ -z "$left" ] && { echo "no stray control-plane processes"; exit 0; }
  sleep 0.5
done
echo "stray control-plane processes left running after the tests:" >&2
echo "$left" >&2
exit 1
