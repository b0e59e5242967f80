#!/usr/bin/env bash
# prepare.sh: before the freeze, put to use on the target the memory a restore will need:
# IMG/pages-1.img, which the incoming pages overwrite in place (in-place.sh), and a reserve
# beside IMG of the same size, which restore.sh frees just before the restore starts (its
# process then gets memory already in use instead of fresh pages).
#
#   prepare.sh --img DIR --mib N
#
# Exits 3 without writing anything when the host has not that memory available twice
# (with a margin).
# shellcheck source=lib.sh
. "${BASH_SOURCE[0]%/*}/lib.sh"

img='' mib=''
parse img mib -- "$@"
need img "$img"; need mib "$mib"
umask 077
avail=$(awk '/^MemAvailable:/ { print $2 }' /proc/meminfo)
[ "${avail:-0}" -ge $(( mib * 1024 * 9 / 4 )) ] || exit 3
dd if=/dev/zero of="$img/pages-1.img" bs=1M count="$mib" status=none & a=$!
dd if=/dev/zero of="$img/../reserve" bs=1M count="$mib" status=none & b=$!
wait "$a" && wait "$b"
