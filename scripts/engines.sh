#!/usr/bin/env bash
# Fetches the newer Docker engines the lab can give a host (`migrator lab up --engine
# HOST=26|28`): Debian's own packages of them, from trixie (26) and sid (28), downloaded at
# pinned versions and unpacked under /var/cache/migrator/engines/VERSION/root. Nothing is
# installed over the system's packages: a lab host bind-mounts these binaries over the
# system's inside its own mount namespace. Their runc needs a newer glibc than Debian 12
# has; the system's runc works with both. Idempotent: a second run only checks.
set -euo pipefail

say() { printf 'engines: %s\n' "$*"; }
CACHE=/var/cache/migrator/engines
# VERSION  SUITE  docker.io/docker-cli version  containerd version
ENGINES=(
  "26 trixie 26.1.5+dfsg1-9+deb13u1+b1 1.7.24~ds1-6+deb13u1"
  "28 sid 28.5.2+dfsg4-5 2.1.9+ds1-5"
)

missing=()
for e in "${ENGINES[@]}"; do
  read -r v _ docker _ <<< "$e"
  [ -x "$CACHE/$v/root/usr/sbin/dockerd" ] && [ "$(cat "$CACHE/$v/version" 2>/dev/null)" = "$docker" ] ||
    missing+=("$e")
done
if [ ${#missing[@]} = 0 ]; then say "present: $(cd "$CACHE" && echo */ | tr -d /)"; exit 0; fi

# Binary entries for the suites, pinned to priority 1 (nothing is ever upgraded from them),
# from the URI this machine already uses for Debian.
uri=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v -- '-security' | head -1)
[ -n "$uri" ] || uri=$(grep -hsE '^deb ' /etc/apt/sources.list | awk '{print $2}' | grep -v -- '-security' | head -1)
[ -n "$uri" ] || { echo "engines: no Debian URI found in /etc/apt" >&2; exit 1; }
list=/etc/apt/sources.list.d/migrator-engines.list pin=/etc/apt/preferences.d/migrator-engines
want_list="" want_pin=""
for e in "${ENGINES[@]}"; do
  read -r _ suite _ <<< "$e"
  want_list+="deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri $suite main"$'\n'
  want_pin+="Package: *"$'\n'"Pin: release n=$suite"$'\n'"Pin-Priority: 1"$'\n\n'
done
if [ "$(cat "$list" 2>/dev/null)"$'\n' != "$want_list" ] || [ "$(cat "$pin" 2>/dev/null)"$'\n\n' != "$want_pin" ]; then
  say "adding binary entries for $(printf '%s\n' "${ENGINES[@]}" | awk '{print $2}' | xargs) (pinned to 1)"
  printf '%s' "$want_list" > "$list"
  printf '%s' "$want_pin" > "$pin"
fi
say "apt-get update"
apt-get update -qq
for e in "${missing[@]}"; do
  read -r v _ docker containerd <<< "$e"
  say "Docker $docker with containerd $containerd into $CACHE/$v"
  rm -rf "${CACHE:?}/$v"; mkdir -p "$CACHE/$v/debs" "$CACHE/$v/root"
  if ! (cd "$CACHE/$v/debs" && apt-get download -qq "docker.io=$docker" "docker-cli=$docker" \
          "containerd=$containerd" >../download.log 2>&1); then
    cat "$CACHE/$v/download.log" >&2; exit 1
  fi
  for d in "$CACHE/$v/debs"/*.deb; do dpkg-deb -x "$d" "$CACHE/$v/root"; done
  "$CACHE/$v/root/usr/sbin/dockerd" --version >/dev/null
  printf '%s' "$docker" > "$CACHE/$v/version"
done
say "done"
