#!/usr/bin/env bash
# Installs what `make image` and the image tests need beyond Rust and the tools tools/build.sh builds: Debian's
# podman, skopeo and runc (images without a daemon), musl-tools and the aarch64 cross compiler with its C
# headers (static binaries for amd64 and arm64), qemu-user-static (starting the arm64 binary here), docker-registry (a
# registry on loopback for the push test), and the Rust musl targets. Only what is missing is installed.
#
#   tools/system-deps.sh            (as root, or with sudo available)
set -euo pipefail

declare -A command_of=(
  [podman]=podman [skopeo]=skopeo [runc]=runc [musl-tools]=musl-gcc [qemu-user-static]=qemu-aarch64-static
  [gcc-aarch64-linux-gnu]=aarch64-linux-gnu-gcc [docker-registry]=docker-registry
)
missing=()
for package in "${!command_of[@]}"; do
  command -v "${command_of[$package]}" >/dev/null || missing+=("$package")
done
[ -s /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)
# The C headers ring's aarch64 build compiles against (gcc-aarch64-linux-gnu only recommends them).
[ -f /usr/aarch64-linux-gnu/include/bits/libc-header-start.h ] || missing+=(libc6-dev-arm64-cross)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  echo "system-deps: installing ${missing[*]}"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's docker-registry package starts a system service on :5000; the tests start their own on loopback.
if command -v systemctl >/dev/null && systemctl is-active --quiet docker-registry 2>/dev/null; then
  systemctl disable --now docker-registry >/dev/null 2>&1 || true
fi
installed=$(rustup target list --installed)
for t in x86_64-unknown-linux-musl aarch64-unknown-linux-musl; do
  grep -qx "$t" <<<"$installed" || rustup target add "$t"
done
echo "system-deps: podman, skopeo, runc, musl-tools, gcc-aarch64-linux-gnu, qemu-user-static, docker-registry and the musl targets are present"
