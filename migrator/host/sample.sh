#!/usr/bin/env bash
# sample.sh: how well a process's memory compresses, and how fast: 2 MiB at four places in
# its largest anonymous writable mapping, read live (before any freeze). Prints
# "RAW_BYTES COMPRESSED_BYTES MICROSECONDS", or nothing when the mapping is under 4 MiB.
#
#   sample.sh --pid PID
# shellcheck source=lib.sh
. "${BASH_SOURCE[0]%/*}/lib.sh"

pid=''
parse pid -- "$@"
need pid "$pid"
best=0 start=0
while read -r range perms _ _ _ path; do
  [[ $perms == rw* && -z $path ]] || continue
  s=$((16#${range%-*})) e=$((16#${range#*-}))
  (( e - s > best )) && { best=$((e - s)); start=$s; }
done < "/proc/$pid/maps"
(( best >= 4194304 )) || exit 0
chunks() {
  local q
  for q in 1 3 5 7; do
    dd if="/proc/$pid/mem" bs=1M iflag=skip_bytes,count_bytes skip=$(( start + best * q / 8 / 4096 * 4096 )) \
       count=$(( best / 4 < 2097152 ? best / 4 : 2097152 )) status=none
  done
}
s=$(date +%s%N); packed=$(chunks | zstd -1 -q -c | wc -c); e=$(date +%s%N)
echo "$(chunks | wc -c) $packed $(( (e - s) / 1000 ))"
