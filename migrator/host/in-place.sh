#!/usr/bin/env bash
# in-place.sh: stdin over FILE from its start, without allocating anew what FILE already
# has (prepare.sh set it aside), then cut to what came. With --job, says the byte count as a
# transfer job line ("JJOB N bytes") on stderr.
#
#   in-place.sh --file FILE [--job NAME]
# shellcheck source=lib.sh
. "${BASH_SOURCE[0]%/*}/lib.sh"

file='' job=''
parse file job -- "$@"
need file "$file"
umask 077
deepen_stdin
s=$(dd of="$file" bs=1M conv=notrunc oflag=nofollow 2>&1) || { echo "$s" >&2; exit 1; }
n=$(printf '%s' "$s" | sed -n 's/^\([0-9]*\) bytes.*/\1/p')
truncate -s "$n" "$file"
[ -z "$job" ] || echo "J$job $n bytes" >&2
