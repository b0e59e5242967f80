#!/usr/bin/env bash
# Installs what migrator's lab and tests need on a Debian 12 machine. Idempotent: a second
# run only checks, and prints what it does.
set -euo pipefail

say() { printf 'setup: %s\n' "$*"; }
[ "$(id -u)" -eq 0 ] || { echo "setup: must run as root (it installs packages and builds CRIU)" >&2; exit 1; }

CRIU_MIN=4.2
# podman and netavark only for the benchmark's comparison with Podman's own migration;
# the linter of the host-side scripts (shellcheck) for `make lint`; arping, with which a
# host announces an address that moved with a container (macvlan/ipvlan networks), and nft,
# which holds off its kept connections' packets until they are restored.
APT_PKGS=(docker.io openssh-server rsync iproute2 iptables redis-server redis-tools busybox-static
          zstd podman netavark shellcheck iputils-arping nftables)
CRIU_BUILD_DEPS=(build-essential patch pkg-config libprotobuf-dev libprotobuf-c-dev protobuf-c-compiler
                 protobuf-compiler python3-protobuf libnl-3-dev libnet1-dev libcap-dev libbsd-dev
                 libgnutls28-dev libnftables-dev uuid-dev libaio-dev)
export DEBIAN_FRONTEND=noninteractive

missing=()
for p in "${APT_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

# The lab's CRIU carries migrator's patches (scripts/criu-patches, each saying why; real
# hosts need none of them): a build records their hash, and a CRIU built without them
# (or with others) is built again.
PATCHES=$(cd "$(dirname "$0")/criu-patches" && pwd)
PATCH_STAMP=/usr/local/share/migrator/criu-patches
patches_hash() { cat "$PATCHES"/*.patch | sha256sum | cut -d' ' -f1; }
criu_ok() {
    command -v criu >/dev/null 2>&1 || return 1
    local v; v=$(criu --version 2>/dev/null | sed -n 's/^Version: *//p')
    [ -n "$v" ] && [ "$(printf '%s\n%s\n' "$CRIU_MIN" "$v" | sort -V | head -1)" = "$CRIU_MIN" ] &&
        [ "$(cat "$PATCH_STAMP" 2>/dev/null)" = "$(patches_hash)" ]
}

apt_updated=0
apt_update() { [ "$apt_updated" = 1 ] || { say "apt-get update"; apt-get update -qq; apt_updated=1; }; }

if [ ${#missing[@]} -gt 0 ]; then
    apt_update
    say "installing ${missing[*]}"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    say "packages present"
fi

# PostgreSQL 15's binaries, for the lab's lab/postgres image (the test of a database of its
# own user) and its pgbench/psql clients. Its own service is not started here: a
# policy-rc.d (Debian's way) says no while the package installs.
if ! dpkg-query -W -f='${Status}' postgresql-15 2>/dev/null | grep -q "install ok installed"; then
    apt_update
    say "installing postgresql-15 (its binaries only: no service is started)"
    policy=0
    [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
                                      chmod 0755 /usr/sbin/policy-rc.d; policy=1; }
    apt-get install -y -qq --no-install-recommends postgresql-15 postgresql-client-15 >/dev/null
    [ "$policy" = 0 ] || rm -f /usr/sbin/policy-rc.d
fi

# nginx's binary, for the lab's lab/nginx image (a web server of its own user with worker
# processes): Debian 12's package unpacked under /var/cache/migrator/nginx, never installed
# (no service, no /etc/nginx on this machine).
NGINX=/var/cache/migrator/nginx
if [ ! -x "$NGINX/root/usr/sbin/nginx" ]; then
    apt_update
    say "unpacking nginx (Debian 12's package, not installed) into $NGINX"
    rm -rf "$NGINX"; mkdir -p "$NGINX/deb"
    (cd "$NGINX/deb" && apt-get download -qq nginx 2>/dev/null)
    dpkg-deb -x "$NGINX"/deb/nginx_*.deb "$NGINX/root"
    "$NGINX/root/usr/sbin/nginx" -v 2>/dev/null
fi

if criu_ok; then
    say "criu $(criu --version | sed -n 's/^Version: *//p') present at $(command -v criu)"
else
    # Debian 12's criu 3.17 fails `criu check` on this kernel and 4.1 cannot dump TCP sockets
    # on Linux >= 6.16; 4.2.x works. Its upstream tarball comes from sid's source archive,
    # reached through the URI this machine already uses for Debian.
    uri=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v -- '-security' | head -1)
    [ -n "$uri" ] || uri=$(grep -hsE '^deb ' /etc/apt/sources.list | awk '{print $2}' | grep -v -- '-security' | head -1)
    [ -n "$uri" ] || { echo "setup: no Debian source URI found in /etc/apt" >&2; exit 1; }
    if [ ! -f /etc/apt/sources.list.d/migrator-sid-src.list ]; then
        say "adding deb-src for sid (pinned to 100) from $uri"
        echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri sid main" \
            > /etc/apt/sources.list.d/migrator-sid-src.list
        printf 'Package: *\nPin: release n=sid\nPin-Priority: 100\n' > /etc/apt/preferences.d/migrator-sid
        apt_updated=0
    fi
    apt_update
    say "installing CRIU build dependencies"
    apt-get install -y -qq --no-install-recommends "${CRIU_BUILD_DEPS[@]}" >/dev/null
    build=/var/cache/migrator/criu-build
    mkdir -p "$build"
    pushd "$build" >/dev/null
    if ! ls criu_4.2*.orig.tar.* >/dev/null 2>&1; then
        say "downloading criu source (sid)"
        apt-get source --download-only criu/sid >/dev/null 2>&1 || true
    fi
    tarball=$(find . -maxdepth 1 -name "criu_4.2*.orig.tar.*" -printf "%f\n" | sort -V | tail -1)
    [ -n "$tarball" ] || { echo "setup: could not download criu 4.2 source from sid" >&2; exit 1; }
    rm -rf src && mkdir src && tar -xf "$tarball" -C src --strip-components=1
    for p in "$PATCHES"/*.patch; do
        say "patching criu: $(basename "$p")"
        patch -d src -p1 --quiet < "$p"
    done
    say "building criu from $tarball (about a minute)"
    make -C src -j"$(nproc)" criu >build.log 2>&1 || { tail -30 build.log >&2; exit 1; }
    install -m 0755 src/criu/criu /usr/local/sbin/criu
    install -d /usr/local/share/migrator && patches_hash > "$PATCH_STAMP"
    popd >/dev/null
    say "installed $(criu --version | sed -n 's/^Version: *//p') (patched) at /usr/local/sbin/criu"
fi

# The newer Docker engines a lab host can run (26, 28): unpacked, never installed.
bash "$(dirname "$0")/engines.sh"

# Docker Compose v2 (`docker compose`), for the tests of compose projects: Debian 12 has
# only the Python v1; trixie's package (a Go binary needing only libc) is reached through
# the entry engines.sh added (pinned to 1: installed at this version only, never upgraded).
COMPOSE=2.26.1-4
if [ "$(dpkg-query -W -f='${Version}' docker-compose 2>/dev/null)" != "$COMPOSE" ]; then
    say "installing docker-compose $COMPOSE (trixie)"
    apt-get install -y -qq --no-install-recommends "docker-compose=$COMPOSE" >/dev/null 2>&1 ||
        { apt-get update -qq; apt-get install -y -qq --no-install-recommends "docker-compose=$COMPOSE" >/dev/null; }
fi

cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
venv=${VENV:-.venv}
if [ ! -x "$venv/bin/migrator" ] || [ pyproject.toml -nt "$venv/.installed" ]; then
    say "installing the migrator package into $venv"
    "$PY" -m venv "$venv"
    "$venv/bin/pip" install -q -e '.[dev]'
    touch "$venv/.installed"
else
    say "python environment up to date ($venv)"
fi
say "done"
