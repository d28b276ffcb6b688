#!/usr/bin/env bash
# Fetches the database servers the rotation integration tests start for real (PostgreSQL 15, MariaDB 10.11,
# Redis 7.0) with their clients, from Debian's packages at pinned versions, and extracts them with dpkg-deb -x
# into a cache directory: nothing is installed on the system, no service is started, and a test runs each server
# on loopback from a temporary directory of its own.
#
#   tools/databases.sh            fetch and extract whatever is missing (a no-op when warm)
#   tools/databases.sh --path     print the cache directory
#   tools/databases.sh --latest   print the pins as the package lists now have them (to bump the pins below)
#
# The cache lives outside the repo (default ~/.cache/keyward/databases/<key>, or $KEYWARD_DATABASES_DIR) so that
# a fresh clone reuses it. Its key covers every pin below: bumping one makes a new directory.
#
# Layout of the cache directory (run every binary with LD_LIBRARY_PATH=<dir>/usr/lib/x86_64-linux-gnu):
#   usr/lib/postgresql/15/bin/{postgres,initdb,pg_ctl,psql}   (finds share/ and lib/ relative to itself)
#   usr/sbin/mariadbd, usr/bin/{mariadb-install-db,mariadb,my_print_defaults}  (pass --basedir=<dir>/usr)
#   usr/bin/{redis-server,redis-cli}
#
# Only what a new machine of the project's kind lacks is fetched besides the servers and clients: libpq5 (the
# client needs the same minor as the server), libaio1 and liburing2 (mariadbd), libjemalloc2 and liblzf1
# (redis). Every other library they link comes with the machine; the ldd check below names any that does not.
# Debian keeps only the newest version of a package on its mirrors: when a pin has gone (a point or security
# release replaced it), this script says so, and `--latest` prints the lines to paste.
set -euo pipefail

# package=version, in the form `apt-get download` takes.
pins=(
  postgresql-15=15.20-0+deb12u1
  postgresql-client-15=15.20-0+deb12u1
  libpq5=15.20-0+deb12u1
  mariadb-server-core=1:10.11.19-0+deb12u1
  mariadb-client-core=1:10.11.19-0+deb12u1
  libaio1=0.3.113-4
  liburing2=2.3-3
  redis-server=5:7.0.15-1~deb12u10
  redis-tools=5:7.0.15-1~deb12u10
  libjemalloc2=5.3.0-1
  liblzf1=3.6-3
)
# The binaries the tests run: each must find every library it links.
binaries=(
  usr/lib/postgresql/15/bin/postgres usr/lib/postgresql/15/bin/initdb usr/lib/postgresql/15/bin/pg_ctl
  usr/lib/postgresql/15/bin/psql usr/sbin/mariadbd usr/bin/mariadb usr/bin/my_print_defaults usr/bin/resolveip
  usr/bin/redis-server usr/bin/redis-cli
)

pin_of() { # pin_of PACKAGE -> its pinned version
  local p
  for p in "${pins[@]}"; do [ "${p%%=*}" != "$1" ] || { echo "${p#*=}"; return; }; done
}
upstream() { # upstream VERSION -> 15.20, 10.11.19, 7.0.15 (no epoch, no Debian revision)
  local v=${1#*:}
  echo "${v%%-*}"
}
key="postgresql-$(upstream "$(pin_of postgresql-15)")_mariadb-$(upstream "$(pin_of mariadb-server-core)")\
_redis-$(upstream "$(pin_of redis-server)")_$(printf '%s\n' "${pins[@]}" | sha256sum | cut -c1-12)"
dir=${KEYWARD_DATABASES_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/keyward/databases/$key}

case "${1:-}" in
--path)
  echo "$dir"
  exit 0
  ;;
--latest)
  apt-cache policy "${pins[@]%%=*}" |
    awk '/^[^ ]/ { p = substr($1, 1, length($1) - 1) } $1 == "Candidate:" { print "  " p "=" $2 }'
  exit 0
  ;;
"") ;;
*)
  echo "usage: tools/databases.sh [--path | --latest]" >&2
  exit 2
  ;;
esac

if [ -e "$dir/.complete" ]; then
  echo "databases: all present in $dir"
  exit 0
fi
# One cold fetch at a time (tests started in parallel): the others wait, then find it done.
mkdir -p "$(dirname "$dir")"
exec 9>"$dir.lock"
flock 9
if [ -e "$dir/.complete" ]; then
  echo "databases: all present in $dir"
  exit 0
fi

start=$(date +%s)
# Whether the package lists have every pinned version (apt-cache show would not say: it exits 0 for a missing one).
available() { apt-get download --print-uris -qq "${pins[@]}" >/dev/null 2>&1; }
if ! available; then
  # A new machine's package lists may be older than the pins (or missing): refresh them once, as root.
  sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  echo "databases: refreshing the package lists (apt-get update)"
  "${sudo[@]}" apt-get update -qq
fi
if ! available; then
  gone=()
  for p in "${pins[@]}"; do
    apt-get download --print-uris -qq "$p" >/dev/null 2>&1 || gone+=("$p")
  done
  echo "tools/databases.sh: Debian's mirror no longer has ${gone[*]}; bump the pins (tools/databases.sh --latest)" >&2
  exit 1
fi

echo "databases: fetching ${#pins[@]} Debian packages into $dir (cold: about 5 seconds)"
tmp=$(mktemp -d "$dir.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/debs" "$tmp/root"
# APT::Sandbox::User: download as the invoking user (apt's _apt user can't write into a mktemp -d directory).
(cd "$tmp/debs" && apt-get download -qq -o APT::Sandbox::User="$(id -un)" "${pins[@]}")
for deb in "$tmp"/debs/*.deb; do
  dpkg-deb -x "$deb" "$tmp/root"
done
# What the tests never read: documentation, translations, init scripts and units, system configuration.
rm -rf "$tmp"/root/usr/share/{doc,man,lintian,locale,bash-completion,apport,menu} "$tmp"/root/{etc,lib/systemd} \
  "$tmp"/root/usr/lib/tmpfiles.d
chmod 755 "$tmp/root"

missing=$(for b in "${binaries[@]}"; do
  [ -x "$tmp/root/$b" ] || { echo "$b: not in the packages"; continue; }
  LD_LIBRARY_PATH="$tmp/root/usr/lib/x86_64-linux-gnu" ldd "$tmp/root/$b" |
    awk -v b="$b" '/not found/ { print b ": " $1 }'
done)
if [ -n "$missing" ]; then
  echo "tools/databases.sh: missing libraries (add their packages to the pins):" >&2
  echo "$missing" >&2
  exit 1
fi

printf '%s\n' "${pins[@]}" >"$tmp/root/.pins"
touch "$tmp/root/.complete"
rm -rf "$dir"
mv "$tmp/root" "$dir"
echo "databases: ready in $dir ($(du -sh "$dir" | cut -f1), $(( $(date +%s) - start ))s)"
