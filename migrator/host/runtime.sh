#!/usr/bin/env bash
# runtime.sh: Docker's runc state of a container, for when dockerd cannot be asked.
#
#   runtime.sh root --container ID      print Docker's runc root that knows ID (exit 1: none)
#   runtime.sh stopped --container ID   exit 0 when ID has no live process (killing it if
#                                       it has); 2 when that cannot be made sure
#
# Docker keeps its runc state under /run/docker/runtime-*/moby. A restore that was under way
# when dockerd died goes on without it, and runc knows the container only once it is done:
# `stopped` waits for it first (up to 60 s).
# shellcheck source=lib.sh
. "${BASH_SOURCE[0]%/*}/lib.sh"

what=${1:-}; shift || :
container=''
parse container -- "$@"
need container "$container"
case $what in
  root)
    for r in /run/docker/runtime-*/moby /var/run/docker/runtime-*/moby; do
      [ -d "$r/$container" ] && { echo "$r"; exit 0; }
    done
    exit 1 ;;
  stopped)
    for _ in $(seq 120); do pgrep -f -- "[r]unc .*restore .*$container" >/dev/null || break; sleep 0.5; done
    pgrep -f -- "[r]unc .*restore .*$container" >/dev/null && exit 2
    st=1
    for root in /run/docker/runtime-*/moby; do
      [ -d "$root" ] || continue
      if runc --root "$root" state "$container" >/dev/null 2>&1; then
        runc --root "$root" kill "$container" KILL 2>/dev/null
        sleep 0.5
        runc --root "$root" delete --force "$container" >/dev/null 2>&1 || st=2
      fi
    done
    [ "$st" = 1 ] ;;
  *) die "runtime.sh: root or stopped, not '$what'" ;;
esac
