#!/usr/bin/env bash
# engine.sh HOST_DIR: inside one lab host's mount namespace, before its dockerd starts, the
# Docker engine it runs: the binaries under the directory HOST_DIR/engine-root names
# (scripts/engines.sh unpacked them), bind-mounted over the system's; the system's own when
# that file is empty or missing. When HOST_DIR/runc-wrapper names migrator's runc wrapper
# (Docker 28 and newer), it becomes the host's runc, the real one at /run/migrator/runc.real
# (the host's own /run). Run again, it first undoes what it did before.
set -euo pipefail
H=$1
root=$(cat "$H/engine-root" 2>/dev/null || true)
wrapper=$(cat "$H/runc-wrapper" 2>/dev/null || true)
mounted() { awk -v m="$1" '$5 == m { found = 1 } END { exit !found }' /proc/self/mountinfo; }
while mounted /usr/sbin/runc; do umount /usr/sbin/runc; done
while mounted /run/migrator/runc.real; do umount /run/migrator/runc.real; done
rm -f /run/migrator/runc.real
if [ -n "$wrapper" ]; then
  mkdir -p /run/migrator; : > /run/migrator/runc.real
  mount --bind /usr/sbin/runc /run/migrator/runc.real
  mount --bind "$wrapper" /usr/sbin/runc
fi
for b in usr/sbin/dockerd usr/sbin/docker-proxy usr/bin/containerd usr/bin/containerd-shim-runc-v2 usr/bin/ctr \
         usr/bin/docker-init; do
  while mounted "/$b"; do umount "/$b"; done
  if [ -n "$root" ] && [ -e "$root/$b" ] && [ -e "/$b" ]; then mount --bind "$root/$b" "/$b"; fi
done
