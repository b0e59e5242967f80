#!/usr/bin/env bash
# upper-dir.sh: where a container's writable layer is on the host under the containerd
# image store, whose `docker inspect` names none: from containerd's snapshot of the
# container (created or running), else, for a running one, from its root mount.
#
#   upper-dir.sh --container ID [--pid PID]
#
# Prints the directory; exits 1 when it cannot be found.
# shellcheck source=lib.sh
. "${BASH_SOURCE[0]%/*}/lib.sh"

container='' pid=''
parse container pid -- "$@"
need container "$container"
# dockerd's own containerd, or the system's (Docker 29 installs use that one)
for sock in /run/docker/containerd/containerd.sock /run/containerd/containerd.sock; do
  [ -S "$sock" ] || continue
  up=$(ctr -a "$sock" -n moby snapshots --snapshotter overlayfs mounts /x "$container" 2>/dev/null |
       tr ' ,' '\n' | sed -n 's/^upperdir=//p' | head -1) || :
  [ -n "$up" ] && [ -d "$up" ] && { echo "$up"; exit 0; }
done
if [ -n "$pid" ] && [ "$pid" != 0 ]; then
  # mountinfo: ... MOUNTPOINT ... - FSTYPE SOURCE SUPER_OPTIONS
  up=$(awk '$5 == "/" { for (i = 7; i <= NF; i++) if ($i == "-") { print $(i + 3); exit } }' "/proc/$pid/mountinfo" |
       tr ',' '\n' | sed -n 's/^upperdir=//p' | head -1)
  [ -n "$up" ] && [ -d "$up" ] && { echo "$up"; exit 0; }
fi
exit 1
