#!/usr/bin/env bash
# measure-link.sh: the direct path's speed: the time one ssh connection to the target takes
# to set up, and the time MIB MiB of zeros take through a new one (ssh does not compress).
# Prints "SETUP_NS TOTAL_NS".
#
#   measure-link.sh --ssh WORDS --mib N
# shellcheck source=lib.sh
. "${BASH_SOURCE[0]%/*}/lib.sh"

ssh='' mib=''
parse ssh mib -- "$@"
need ssh "$ssh"; need mib "$mib"
eval "SSH=($ssh)"
s=$(date +%s%N); "${SSH[@]}" true || exit 1; m=$(date +%s%N)
dd if=/dev/zero bs=1M count="$mib" status=none | "${SSH[@]}" sink || exit 1
e=$(date +%s%N)
echo $(( m - s )) $(( e - m ))
