#!/usr/bin/env bash
# keyward's operator image, built without a container daemon (podman and skopeo from Debian; see
# ../shared/notes/containers.md for the flags these machines need).
#
#   tools/image.sh build [ARCH...]    ARCH: amd64 arm64 (default both). Per ARCH: a static musl binary (Cargo
#                                     profile `dist`: fat LTO, stripped), checked to start (arm64 under
#                                     qemu-aarch64-static) and to be the operator alone, then the image
#                                     localhost/keyward:VERSION-ARCH; then the image index of the
#                                     architectures built, localhost/keyward:VERSION, and its OCI archive
#                                     build/image/keyward-VERSION.oci.tar.
#   tools/image.sh push REGISTRY      copies that archive (every architecture) to REGISTRY/keyward:VERSION with
#                                     skopeo and prints the pushed digest. SKOPEO_DEST_FLAGS adds flags, e.g.
#                                     --dest-tls-verify=false for a plain-HTTP registry on loopback.
#
# The Cargo target directory is a cache outside the repository (KEYWARD_DIST_TARGET_DIR, default
# ~/.cache/keyward/cargo-dist): a fresh clone rebuilds only keyward itself, not its dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
target_dir=${KEYWARD_DIST_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/keyward/cargo-dist}
out=build/image
context=$out/context
archive=$out/keyward-$version.oci.tar
podman=(podman --cgroup-manager cgroupfs)

die() { echo "image: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null || die "$1 is missing: $2"; }

triple() {
  case $1 in
    amd64) echo x86_64-unknown-linux-musl ;;
    arm64) echo aarch64-unknown-linux-musl ;;
    *) die "unknown architecture $1 (amd64 or arm64)" ;;
  esac
}

# The binary for one architecture, staged at $context/ARCH/keyward.
binary() {
  local arch=$1 t
  t=$(triple "$arch")
  rustup target list --installed 2>/dev/null | grep -qx "$t" || die "Rust target $t is missing: rustup target add $t"
  local -a env=()
  if [ "$arch" = arm64 ]; then
    need aarch64-linux-gnu-gcc "apt-get install gcc-aarch64-linux-gnu"
    # ring's C and assembly, and the final link, need an aarch64 toolchain; Rust's self-contained musl
    # (crt objects and libc.a) makes the GNU cross linker produce a static musl binary.
    env=(CC_aarch64_unknown_linux_musl=aarch64-linux-gnu-gcc
         CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc)
  else
    need musl-gcc "apt-get install musl-tools"
  fi
  echo "image: building keyward $version for linux/$arch ($t, profile dist) in $target_dir"
  env "${env[@]}" cargo build --locked --profile dist -p keyward --bin keyward --target "$t" \
    --target-dir "$target_dir"
  mkdir -p "$context/$arch"
  cp "$target_dir/$t/dist/keyward" "$context/$arch/keyward"
  local run=("$context/$arch/keyward")
  if [ "$arch" = arm64 ] && [ "$(uname -m)" != aarch64 ]; then
    need qemu-aarch64-static "apt-get install qemu-user-static"
    run=(qemu-aarch64-static "$context/$arch/keyward")
  fi
  local said
  said=$("${run[@]}" --version) || die "the linux/$arch binary does not start"
  [ "$said" = "keyward $version" ] || die "the linux/$arch binary says \"$said\", expected \"keyward $version\""
  echo "image: linux/$arch binary starts: $said"
  local runner=
  if [ ${#run[@]} -gt 1 ]; then runner=${run[0]}; fi
  KEYWARD_RUNNER=$runner tools/check-shipped.sh "$context/$arch/keyward"
}

rootfs() {
  local ca=/etc/ssl/certs/ca-certificates.crt
  [ -s $ca ] || die "$ca is missing: apt-get install ca-certificates"
  rm -rf "$context/rootfs"
  mkdir -p "$context/rootfs/etc/ssl/certs" "$context/rootfs/tmp"
  cp $ca "$context/rootfs/etc/ssl/certs/ca-certificates.crt"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' \
    > "$context/rootfs/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' > "$context/rootfs/etc/group"
  chmod 1777 "$context/rootfs/tmp"
}

image() {
  local arch=$1
  # The commit time as every timestamp: the same commit builds the same image digest.
  local epoch
  epoch=$(git log -1 --format=%ct 2>/dev/null || echo 0)
  "${podman[@]}" build --quiet --platform "linux/$arch" --timestamp "$epoch" \
    --label "org.opencontainers.image.version=$version" \
    --label "org.opencontainers.image.licenses=Apache-2.0" \
    --label "org.opencontainers.image.revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
    -t "localhost/keyward:$version-$arch" -f Containerfile "$context" >/dev/null
  local size bin
  size=$("${podman[@]}" image inspect --format '{{.Size}}' "localhost/keyward:$version-$arch")
  bin=$(stat -c %s "$context/$arch/keyward")
  echo "image: localhost/keyward:$version-$arch: image $size bytes, binary $bin bytes"
}

build() {
  need podman "apt-get install podman runc"
  local archs=("$@")
  [ ${#archs[@]} -gt 0 ] || archs=(amd64 arm64)
  rootfs
  for arch in "${archs[@]}"; do
    binary "$arch"
    image "$arch"
  done
  # The image index of the architectures built, in local storage and as a file to push or load.
  local list=localhost/keyward:$version
  if "${podman[@]}" manifest exists "$list"; then "${podman[@]}" manifest rm "$list" >/dev/null; fi
  "${podman[@]}" manifest create "$list" >/dev/null
  for arch in "${archs[@]}"; do
    "${podman[@]}" manifest add "$list" "containers-storage:localhost/keyward:$version-$arch" >/dev/null
  done
  rm -f "$archive"
  "${podman[@]}" manifest push --all --quiet "$list" "oci-archive:$archive:keyward:$version"
  echo "image: $list (${archs[*]}) saved as $archive ($(stat -c %s "$archive") bytes)"
}

push() {
  local registry=${1:?usage: tools/image.sh push REGISTRY}
  need skopeo "apt-get install skopeo"
  [ -s "$archive" ] || die "$archive is missing: make image first"
  local digest=$out/pushed.digest
  # shellcheck disable=SC2086 # SKOPEO_DEST_FLAGS is a list of flags
  skopeo copy --all --quiet ${SKOPEO_DEST_FLAGS:-} --digestfile "$digest" \
    "oci-archive:$archive:keyward:$version" "docker://$registry/keyward:$version"
  echo "image: pushed $registry/keyward:$version@$(cat "$digest")"
}

cmd=${1:-build}
shift || true
case $cmd in
  build) build "$@" ;;
  push) push "$@" ;;
  *) die "usage: tools/image.sh build [amd64|arm64...] | push REGISTRY" ;;
esac
