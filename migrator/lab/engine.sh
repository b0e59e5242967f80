#!/usr/bin/env bash
# engine.sh HOST_DIR: inside one lab host's mount namespace, before its dockerd starts, the
# Docker engine it runs: the binaries under the directory HOST_DIR/engine-root names
# (scripts/engines.sh unpacked them), bind-mounted over the system's; the system's own when
# that file is empty or missing. Run again, it first undoes what it did before.
set -euo pipefail
H=$1
root=$(cat "$H/engine-root" 2>/dev/null || true)
for b in usr/sbin/dockerd usr/sbin/docker-proxy usr/bin/containerd usr/bin/containerd-shim-runc-v2 usr/bin/ctr \
         usr/bin/docker-init; do
  while awk -v m="/$b" '$5 == m { found = 1 } END { exit !found }' /proc/self/mountinfo; do umount "/$b"; done
  if [ -n "$root" ] && [ -e "$root/$b" ] && [ -e "/$b" ]; then mount --bind "$root/$b" "/$b"; fi
done
