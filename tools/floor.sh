#!/usr/bin/env bash
# Builds the scale benchmark's floor client (tools/floor: server-side apply of N Secrets with client-go, the
# same Kubernetes version as the test control plane) once, into a cache directory outside the repo named
# after a hash of its sources, so a changed go.mod, go.sum or main.go builds a new one and an unchanged one
# is reused:
#
#   tools/floor.sh          build it if missing
#   tools/floor.sh --path   print the binary's path (building it first if missing)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
src=$here/floor
sum=$(cat "$src/go.mod" "$src/go.sum" "$src/main.go" | sha256sum | cut -c1-12)
dir=${XDG_CACHE_HOME:-$HOME/.cache}/keyward/floor-$sum
bin=$dir/floor

if [ ! -x "$bin" ]; then
  go=$(command -v go || echo /usr/local/go/bin/go)
  mkdir -p "$dir"
  # Built beside the target and renamed into place: a build interrupted halfway leaves no binary that looks done.
  (cd "$src" && GOFLAGS=-mod=readonly CGO_ENABLED=0 "$go" build -trimpath -ldflags='-s -w' -o "$bin.tmp" .) >&2
  mv "$bin.tmp" "$bin"
fi

if [ "${1:-}" = "--path" ]; then
  echo "$bin"
fi
