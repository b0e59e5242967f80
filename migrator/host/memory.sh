#!/usr/bin/env bash
# memory.sh: the memory each process's container uses, from its memory cgroup (what
# `docker stats` reports as usage, without Docker's half-second sampling): a line
# "PID BYTES" per PID whose cgroup could be read (PROC_ROOT and CGROUP_ROOT are for tests
# on fake trees).
#
#   memory.sh -- PID...
# shellcheck source=lib.sh
. "${BASH_SOURCE[0]%/*}/lib.sh"

parse -- "$@"
proc=${PROC_ROOT:-/proc} root=${CGROUP_ROOT:-/sys/fs/cgroup}
for pid in "${REST[@]}"; do
  if cg=$(sed -n 's/^[0-9]*:\([^:]*,\)\{0,1\}memory\(,[^:]*\)\{0,1\}:\(.*\)$/\3/p' "$proc/$pid/cgroup" 2>/dev/null) \
      && [ -n "$cg" ]; then
    f=$root/memory$cg/memory.usage_in_bytes
  elif cg=$(sed -n 's/^0::\(.*\)$/\1/p' "$proc/$pid/cgroup" 2>/dev/null) && [ -n "$cg" ]; then
    f=$root$cg/memory.current
  else
    continue
  fi
  read -r n < "$f" 2>/dev/null && [[ $n =~ ^[0-9]+$ ]] && echo "$pid $n"
done
exit 0
