#!/usr/bin/env bash
# dumpable.sh: what this host's CRIU would fail to dump in the container whose init is PID,
# found before any freeze. Prints a line per cause found, nothing when the dump can go on:
#
#   rlimits UID PID        a process of another user whose rlimits CRIU cannot read. CRIU
#                          reads them with prlimit(), which for another user's process needs
#                          CAP_SYS_RESOURCE; where root lacks it (some sandboxes) every dump
#                          fails, unless this CRIU reads /proc/PID/limits instead (migrator's
#                          patch, scripts/criu-patches: its binary carries that message, no
#                          CRIU option tells it)
#   ghost PID BYTES PATH   a regular file deleted from disk but held open, over CRIU's
#                          ghost-limit (1 MiB unless set): CRIU copies such files into the
#                          checkpoint, and refuses larger ones
#
#   dumpable.sh --pid PID
# shellcheck source=lib.sh
. "${BASH_SOURCE[0]%/*}/lib.sh"

pid='' criu=${CRIU:-criu} limit=1048576
parse pid -- "$@"
need pid "$pid"
ns=$(readlink "/proc/$pid/ns/pid") || exit 0
patched=0
grep -q 'read from /proc/%d/limits' "$(command -v "$criu")" 2>/dev/null && patched=1
for p in /proc/[0-9]*; do
  [ "$(readlink "$p/ns/pid" 2>/dev/null)" = "$ns" ] || continue
  if [ "$patched" = 0 ] && ! prlimit --pid "${p#/proc/}" --nofile >/dev/null 2>&1; then
    uid=$(awk '/^Uid:/ { print $2 }' "$p/status" 2>/dev/null || :)
    [ -z "$uid" ] || echo "rlimits $uid ${p#/proc/}"
  fi
  for fd in "$p"/fd/*; do
    target=$(readlink "$fd" 2>/dev/null) || continue
    case $target in /memfd:*) continue ;; *' (deleted)') ;; *) continue ;; esac
    [ -f "$fd" ] || continue
    size=$(stat -L -c '%b %B' "$fd" 2>/dev/null | awk '{ print $1 * $2 }')  # allocated, as CRIU counts
    size=${size:-0}
    [ "$size" -le "$limit" ] || echo "ghost ${p#/proc/} $size ${target% (deleted)}"
  done
done
exit 0
