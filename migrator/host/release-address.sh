#!/usr/bin/env bash
# release-address.sh: on a host whose copy of a container does not run (a move's target
# after a rollback: its dockerd may have died while it set the container up), no network
# namespace Docker left behind may still hold the container's ADDRESSes: such an interface
# answers ARP for an address the source holds again. Each one found is removed; the
# namespaces are Docker's to remove. Prints what it removed.
#
#   release-address.sh --address IP [--address IP]...
# shellcheck source=lib.sh
. "${BASH_SOURCE[0]%/*}/lib.sh"

address=()
parse address+ -- "$@"
[ "${#address[@]}" -gt 0 ] || die "release-address.sh: --address is required"
for ns in /run/docker/netns/* /var/run/docker/netns/*; do
  [ -e "$ns" ] || continue
  for a in "${address[@]}"; do
    nsenter --net="$ns" ip -o addr show to "$a" 2>/dev/null | awk '{ sub(/@.*/, "", $2); print $2 }' |
      while read -r i; do
        nsenter --net="$ns" ip link del "$i" 2>/dev/null && echo "$a on $i in $ns"
      done
  done
done
exit 0
