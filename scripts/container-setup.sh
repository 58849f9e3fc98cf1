#!/usr/bin/env bash
# Prepares this machine for the container tests; idempotent (a second run changes nothing).
#
#   scripts/container-setup.sh        prints `export CONTAINERS_CONF=…` on its last line
#
# - installs podman, runc, debootstrap, podman-compose and patchelf with apt when missing (as root);
# - makes `docker.io/library/debian:bookworm-slim` locally when no registry can provide it:
#   `debootstrap --variant=minbase bookworm` (about 30 s) imported under that name, so the
#   Dockerfiles' `FROM debian:bookworm-slim` builds unchanged here and where the real image is
#   pulled; likewise `docker.io/library/postgres:15-bookworm` from Debian's postgresql-15
#   (deploy/container/Dockerfile.postgres);
# - uses deploy/container/containers.conf through CONTAINERS_CONF (cgroupfs, no default ulimits:
#   what works on cgroup hybrid-mode hosts), leaving /etc alone.
# podman must run with `--runtime runc` on such hosts (crun fails there); the scripts pass it.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CONTAINERS_CONF="$repo/deploy/container/containers.conf"
base_image="docker.io/library/debian:bookworm-slim"
say() { echo "container-setup: $*" >&2; }

missing=()
for tool in podman runc debootstrap podman-compose patchelf; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        say "missing ${missing[*]}: run as root or install them (Debian/Ubuntu: apt-get install -y ${missing[*]})"
        exit 1
    fi
    say "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2 \
        || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2; }
fi

if podman --runtime runc image exists "$base_image"; then
    say "$base_image present"
elif podman --runtime runc pull -q "$base_image" >/dev/null 2>&1; then
    say "pulled $base_image"
else
    say "no registry answers: building $base_image with debootstrap (about 30 s)"
    rootfs="$(mktemp -d -t nat-rootfs.XXXXXX)"
    trap 'rm -rf "$rootfs"' EXIT
    debootstrap --variant=minbase bookworm "$rootfs" >/dev/null
    # The real image's apt sources (security and point-release updates included) and no apt lists.
    rm -f "$rootfs/etc/apt/sources.list"
    cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<'SOURCES'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
    tar -C "$rootfs" -c . | podman --runtime runc import - "$base_image" >/dev/null
    say "imported $base_image"
fi

# PostgreSQL for the compose and kube-play tests: the official image, or a stand-in built from
# the Debian package under its name (deploy/container/Dockerfile.postgres).
postgres_image="docker.io/library/postgres:15-bookworm"
if podman --runtime runc image exists "$postgres_image"; then
    say "$postgres_image present"
elif podman --runtime runc pull -q "$postgres_image" >/dev/null 2>&1; then
    say "pulled $postgres_image"
else
    say "building a stand-in for $postgres_image (Debian's postgresql-15)"
    podman --runtime runc build -q --network=host -f "$repo/deploy/container/Dockerfile.postgres" \
        -t "$postgres_image" "$repo" >/dev/null
fi
echo "export CONTAINERS_CONF=$CONTAINERS_CONF"
