#!/usr/bin/env bash
# Builds the container image of ops/container/Containerfile and checks it without running a
# container (docs/operations.md, "Container image"):
#   1. installs podman, buildah, debootstrap (and PostgreSQL 15 for the check's test cluster);
#   2. makes a Debian 12 base with debootstrap from this machine's Debian mirror (no registry is
#      reachable here), cached in $LEDGER_IMAGE_CACHE (default /var/cache/ledger-image);
#   3. imports it as localhost/ledger-base:bookworm (skipped while the cached base is unchanged,
#      so podman's layer cache stays valid);
#   4. builds the Containerfile with --isolation chroot on that base (BASE_IMAGE build argument);
#   5. mounts the image (podman image mount) and, with chroot as the image's user, runs
#      `ledger --version` and `ledger migrate status`/`up`/`status` against a PostgreSQL test
#      cluster this script starts on a free port of 127.0.0.1 (chroot shares the network).
# Prints every step with its duration and the total; exits non-zero on any failure.
#
# Usage: sudo bash ops/image.sh [TAG]     (TAG default localhost/ledger:latest)
# Environment: LEDGER_IMAGE_CACHE, LEDGER_IMAGE_MIRROR (default: from /etc/apt/sources.list*),
#              LEDGER_BUILD_JOBS (default 2), LEDGER_IMAGE_REFRESH_BASE=1 (debootstrap again).
set -euo pipefail
cd "$(dirname "$0")/.."
source_dir=$PWD

tag=${1:-localhost/ledger:latest}
base_tag=localhost/ledger-base:bookworm
suite=bookworm
cache=${LEDGER_IMAGE_CACHE:-/var/cache/ledger-image}
image_uid=10001  # the USER of the Containerfile

if [ "$(id -u)" -ne 0 ]; then
  echo "image: run as root (debootstrap, podman image mount and chroot need it): sudo bash $0" >&2
  exit 1
fi

script_start=$(date +%s)
step_name=""
step_start=0
step() {
  finish_step
  step_name=$1
  step_start=$(date +%s.%N)
  echo "image: [$(date -u +%H:%M:%S)] $step_name ..."
}
finish_step() {
  if [ -n "$step_name" ]; then
    printf 'image: [%s] %s: done in %.1f s\n' "$(date -u +%H:%M:%S)" "$step_name" \
      "$(echo "$(date +%s.%N) - $step_start" | bc)"
  fi
  step_name=""
}

work=$(mktemp -d /tmp/ledger-image.XXXXXX)
mounted=""
cluster_data=""
cleanup() {
  local status=$?
  if [ -n "$cluster_data" ] && [ -f "$cluster_data/postmaster.pid" ]; then
    runuser -u postgres -- "$pg_bin/pg_ctl" stop -D "$cluster_data" -m fast >/dev/null 2>&1 || true
  fi
  if [ -n "$mounted" ]; then
    umount "$mounted/dev" "$mounted/proc" 2>/dev/null || true
    podman image unmount "$tag" >/dev/null 2>&1 || true
  fi
  # A debootstrap that failed half-way can leave /proc, /sys or a bind of /dev mounted in its
  # tree: unmount whatever is under $work, and never let rm cross into another file system.
  local mount_point
  for mount_point in $(awk -v w="$work/" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r); do
    umount -l "$mount_point" 2>/dev/null || true
  done
  rm -rf --one-file-system "$work"
  if [ "$status" -ne 0 ]; then
    echo "image: FAILED${step_name:+ in step: $step_name} (exit $status)" >&2
  fi
  exit "$status"
}
trap cleanup EXIT

# ---------------------------------------------------------------------------------------------
step "install podman, buildah, debootstrap, postgresql-15"
packages=(podman buildah debootstrap postgresql-15 bc python3 ca-certificates)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
echo "image: podman $(podman version --format '{{.Client.Version}}'), buildah $(buildah --version | cut -d' ' -f3 | tr -d ,), PostgreSQL server $pg_bin"

# ---------------------------------------------------------------------------------------------
# The mirror this machine's apt uses for Debian (and its security archive), unless given.
sources() { cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null || true; }
mirror=${LEDGER_IMAGE_MIRROR:-$(sources | grep -oE 'https?://[^ ]+/debian/?( |$)' | head -1 | tr -d ' ')}
mirror=${mirror%/}
security=${LEDGER_IMAGE_SECURITY_MIRROR:-$(sources | grep -oE 'https?://[^ ]+/debian-security/?( |$)' | head -1 | tr -d ' ')}
security=${security%/}
if [ -z "$mirror" ]; then
  echo "image: no Debian mirror in /etc/apt/sources.list*: set LEDGER_IMAGE_MIRROR" >&2
  exit 1
fi
arch=$(dpkg --print-architecture)
# The name changes with what slim_rootfs does, so a base made by an older script is not reused.
base_tar="$cache/debian-$suite-$arch-slim-1.tar"

# Makes the debootstrapped tree as slim as debian:bookworm-slim (debuerreotype --slim): no
# documentation (copyright files kept), manual pages nor translations, now or from packages
# installed later; apt keeps neither downloaded packages, caches nor lists. Refuses any
# directory that is not a fresh root filesystem under $work: it deletes files.
slim_rootfs() {
  local root=$1
  case $root in "$work"/*) ;; *) echo "image: slim_rootfs: $root is not under $work" >&2; return 1 ;; esac
  [ -f "$root/etc/debian_version" ] || { echo "image: slim_rootfs: $root is no Debian tree" >&2; return 1; }
  printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
    'path-exclude /usr/share/man/*' 'path-exclude /usr/share/groff/*' 'path-exclude /usr/share/info/*' \
    'path-exclude /usr/share/locale/*' 'path-include /usr/share/locale/locale.alias' \
    'path-exclude /usr/share/lintian/*' 'path-exclude /usr/share/linda/*' \
    >"$root/etc/dpkg/dpkg.cfg.d/docker-slim"
  local clean='"rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true";'
  printf '%s\n' "DPkg::Post-Invoke { $clean };" "APT::Update::Post-Invoke { $clean };" \
    'Dir::Cache::pkgcache "";' 'Dir::Cache::srcpkgcache "";' >"$root/etc/apt/apt.conf.d/docker-clean"
  echo 'Acquire::Languages "none";' >"$root/etc/apt/apt.conf.d/docker-no-languages"
  find "$root/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
  find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
  find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
  local directory
  for directory in usr/share/man usr/share/groff usr/share/info usr/share/lintian usr/share/linda \
                   var/lib/apt/lists var/cache/apt/archives; do
    if [ -d "$root/$directory" ]; then find "$root/$directory" -mindepth 1 ! -type d ! -name lock -delete; fi
  done
  find "$root/var/cache/apt" -maxdepth 1 -name '*.bin' -delete
  find "$root/var/log" -name '*.log' -delete
}

step "base: debootstrap $suite ($arch) from $mirror"
mkdir -p "$cache"
if [ -f "$base_tar" ] && [ "${LEDGER_IMAGE_REFRESH_BASE:-0}" != 1 ]; then
  echo "image: cached: $base_tar ($(du -h "$base_tar" | cut -f1), made $(date -u -r "$base_tar" +%FT%TZ))"
else
  rootfs="$work/rootfs"
  debootstrap --variant=minbase --arch "$arch" "$suite" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  # As the official image: the release, its updates and the security archive, in deb822 form.
  rm -f "$rootfs/etc/apt/sources.list"
  {
    printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$mirror" "$suite" "$suite"
    if [ -n "$security" ]; then
      printf '\nTypes: deb\nURIs: %s\nSuites: %s-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$security" "$suite"
    fi
  } >"$rootfs/etc/apt/sources.list.d/debian.sources"
  slim_rootfs "$rootfs"
  tar --numeric-owner -C "$rootfs" -cf "$base_tar.partial" .
  mv "$base_tar.partial" "$base_tar"
  rm -rf "$rootfs"
  echo "image: made $base_tar ($(du -h "$base_tar" | cut -f1))"
fi

step "import the base as $base_tag"
base_sum=$(sha256sum "$base_tar" | cut -d' ' -f1)
if podman image exists "$base_tag" &&
   [ "$(podman image inspect --format '{{index .Labels "org.ledger.base-sha256"}}' "$base_tag")" = "$base_sum" ]; then
  echo "image: $base_tag already holds this base (sha256 $base_sum)"
else
  podman import --quiet --change "LABEL org.ledger.base-sha256=$base_sum" --change 'CMD ["/bin/bash"]' \
    "$base_tar" "$base_tag" >/dev/null
  echo "image: imported (sha256 $base_sum)"
fi

# ---------------------------------------------------------------------------------------------
step "build $tag (ops/container/Containerfile, --isolation chroot)"
# Podman's steps and the link of the binary, each with the time it began.
show_progress() {
  local line
  while IFS= read -r line; do
    if [[ $line =~ ^(\[[0-9]+/[0-9]+\]\ )?STEP\  || $line =~ ^(COMMIT|Successfully) ||
          $line == *"Linking CXX executable"* ]]; then
      echo "image:   [$(date -u +%H:%M:%S)] ${line:0:110}"
    fi
  done
}
# pipefail: the status is podman's (show_progress always succeeds).
if ! podman build --isolation chroot --format docker --pull=never --layers \
       --build-arg BASE_IMAGE="$base_tag" --build-arg LEDGER_BUILD_JOBS="${LEDGER_BUILD_JOBS:-2}" \
       -f ops/container/Containerfile -t "$tag" "$source_dir" 2>&1 | tee "$work/build.log" | show_progress; then
  tail -40 "$work/build.log" >&2
  exit 1
fi

step "inspect the image configuration"
inspect() { podman image inspect --format "$1" "$tag"; }
entrypoint=$(inspect '{{json .Config.Entrypoint}}')
user=$(inspect '{{.Config.User}}')
health=$(inspect '{{json .Config.Healthcheck.Test}}')
echo "image: entrypoint $entrypoint, user $user, healthcheck $health"
echo "image: size $(inspect '{{.Size}}' | awk '{printf "%.1f MB", $1/1e6}'), id $(inspect '{{.Id}}' | cut -c1-12)"
[ "$entrypoint" = '["/usr/bin/ledger"]' ] || { echo "image: entrypoint is not ledger" >&2; exit 1; }
[ "${user%%:*}" = "$image_uid" ] || { echo "image: user is $user, not $image_uid" >&2; exit 1; }
case $health in *"/health/live"*) ;; *) echo "image: no HEALTHCHECK on /health/live (build with --format docker)" >&2; exit 1 ;; esac

# ---------------------------------------------------------------------------------------------
step "mount the image and check its libraries"
mounted=$(podman image mount "$tag")
mount --bind /dev "$mounted/dev"
mount -t proc proc "$mounted/proc"
if chroot "$mounted" ldd /usr/bin/ledger | grep 'not found'; then
  echo "image: a shared library of ledger is missing from the image" >&2
  exit 1
fi
found=$(chroot "$mounted" sh -c 'command -v psql pg_ctl initdb postgres; ls -d /usr/lib/postgresql 2>/dev/null' || true)
if [ -n "$found" ]; then
  echo "image: PostgreSQL binaries in the image ($found): the runtime stage should not install them" >&2
  exit 1
fi
echo "image: every library found; no PostgreSQL binaries"

# Runs ledger in the mounted image as its user, with only the image's environment.
in_image() {
  chroot --userspec="$image_uid:$image_uid" "$mounted" /usr/bin/env -i \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/var/lib/ledger \
    LEDGER_HOME=/var/lib/ledger "$@"
}

step "ledger --version (in the image)"
in_image /usr/bin/ledger --version

step "start a PostgreSQL test cluster (127.0.0.1, free port)"
cluster_dir="$work/cluster"
cluster_data="$cluster_dir/data"
mkdir -p "$cluster_dir/socket"
chmod 0755 "$work"
chown -R postgres:postgres "$cluster_dir"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
runuser -u postgres -- "$pg_bin/initdb" -D "$cluster_data" -U postgres --auth=trust -E UTF8 >"$work/initdb.log" 2>&1 ||
  { cat "$work/initdb.log" >&2; exit 1; }
runuser -u postgres -- "$pg_bin/pg_ctl" -D "$cluster_data" -w -l "$cluster_dir/postgres.log" \
  -o "-p $port -k $cluster_dir/socket -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null ||
  { cat "$cluster_dir/postgres.log" >&2; exit 1; }
runuser -u postgres -- "$pg_bin/createdb" -h "$cluster_dir/socket" -p "$port" -U postgres ledger
url="postgresql://postgres@127.0.0.1:$port/ledger"
echo "image: cluster on 127.0.0.1:$port"

step "ledger migrate status, up, status (in the image, against the test cluster)"
set +e
in_image /usr/bin/ledger --database-url "$url" migrate status
pending_status=$?
set -e
echo "image: migrate status on the empty database exited $pending_status"
in_image /usr/bin/ledger --database-url "$url" migrate up
in_image /usr/bin/ledger --database-url "$url" migrate status

finish_step
echo "image: OK: $tag built and checked in $(( $(date +%s) - script_start )) s"
