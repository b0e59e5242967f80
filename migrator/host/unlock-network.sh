#!/usr/bin/env bash
# unlock-network.sh: remove a network lock CRIU left in the network namespace of PID (a
# failed dump can leave the container "Up" but cut off: a CRIU chain ending in DROP, jumped
# to from INPUT and OUTPUT, in iptables and ip6tables). Exits 0 when it found one.
#
#   unlock-network.sh --pid PID
# shellcheck source=lib.sh
. "${BASH_SOURCE[0]%/*}/lib.sh"

pid=''
parse pid -- "$@"
need pid "$pid"
found=1
for t in iptables ip6tables; do
  if nsenter -t "$pid" -n "$t" -w -S CRIU >/dev/null 2>&1; then
    found=0
    nsenter -t "$pid" -n "$t" -w -D INPUT -j CRIU
    nsenter -t "$pid" -n "$t" -w -D OUTPUT -j CRIU
    nsenter -t "$pid" -n "$t" -w -F CRIU
    nsenter -t "$pid" -n "$t" -w -X CRIU
  fi
done
exit $found
