#!/usr/bin/env bash
# transfer.sh: on the source, send data to the target over SSH, several streams at once
# through one multiplexed connection; each stream is counted on the wire by dd, whose
# progress goes to stderr as "JNAME N bytes" lines.
#
#   transfer.sh --ssh WORDS --zstd WORDS
#               [--job NAME --producer COMMAND --remote REQUEST --compress 0|1]...
#               [--follow-img DIR --follow-dst DIR --pages-writer REQUEST [--raw-pages]
#                --dumped TEXT --pagemap TEXT -- DUMP...]
#
# --ssh: the ssh command to the target (words quoted for bash); --zstd: the compressor here.
# Each --job runs its --producer here and its output, compressed with --compress 1, into
# its --remote, a request for receive.sh on the target (the key's forced command: it
# decompresses what it is told is compressed). --follow-dst is %-encoded like a request.
# With --follow-img, DUMP runs first (it returns when the images are complete). The first
# process's pages (all of a one-process container's) go from CRIU into SSH through a named
# pipe: never written here, and read by ssh itself; --pages-writer writes them on the target.
# Every other pages-*.img is sent while it grows. When the dump fails, the senders stop and
# this exits with its status; when it succeeds, its pagemap images (base64, behind
# --pagemap) and --dumped are said on stderr, then the jobs start.
# shellcheck source=lib.sh
. "${BASH_SOURCE[0]%/*}/lib.sh"

ssh='' zstd='' follow_img='' follow_dst='' pages_writer='' raw_pages=0 dumped='' pagemap=''
job=() producer=() remote=() compress=()
parse ssh zstd job+ producer+ remote+ compress+ follow-img follow-dst pages-writer raw-pages! dumped pagemap \
  -- "$@"
set -- "${REST[@]}"
need ssh "$ssh"; need zstd "$zstd"
if [ ${#producer[@]} != ${#job[@]} ] || [ ${#remote[@]} != ${#job[@]} ] || [ ${#compress[@]} != ${#job[@]} ]; then
  die "transfer.sh: each --job needs its --producer, --remote and --compress"
fi
SSH=() ZSTD=()
eval "SSH=($ssh)"; eval "ZSTD=($zstd)"; img=$follow_img dst=$follow_dst z=$((1 - raw_pages))

# send NAME Z REMOTE: stdin, through the compressor if Z is 1, to REMOTE on the target.
send() {
  { if [ "$2" = 1 ]; then "${ZSTD[@]}"; else cat; fi; } \
    | dd bs=1M iflag=fullblock status=progress 2> >(stdbuf -oL tr '\r' '\n' | sed -u "s/^/J$1 /" >&2) \
    | "${SSH[@]}" "$3"
}

pids=()
# wait_all: every sender started; exit 1 if any failed.
wait_all() {
  local p rc=0
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  exit $rc
}

if [ -n "$img" ]; then
  need follow-dst "$dst"; need pages-writer "$pages_writer"; [ $# -gt 0 ] || die "transfer.sh: no dump after --"
  declare -A seen; n=1
  umask 077; mkdir -p "$img"; mkfifo "$img/pages-1.img" "$img/../tick"; seen[pages-1.img]=1
  exec 5<>"$img/../tick"  # a pipe nobody writes: `read -t` on it sleeps without starting a process
  hold_deep "$img/pages-1.img" & holder=$!  # holds the pages pipe open, 1 MiB deep, until the dump ends
  if [ "$z" = 1 ]; then
    ( set -o pipefail; send p1 1 "$pages_writer" < "$img/pages-1.img" ) & pids+=($!)
  else
    "${SSH[@]}" "$pages_writer" < "$img/pages-1.img" & pids+=($!)
  fi
  "$@" & dump=$!
  while :; do
    alive=0; kill -0 "$dump" 2>/dev/null && alive=1
    for f in "$img"/pages-*.img; do
      b=${f##*/}
      [[ -e $f && $b =~ ^pages-[0-9]+\.img$ && -z ${seen[$b]:-} ]] || continue
      seen[$b]=1; n=$((n + 1))
      to_target="write $z $dst/$b"
      if [ $alive = 1 ]; then
        ( set -o pipefail; tail -c +1 -s 0.02 -f --pid="$dump" "$f" | send "p$n" "$z" "$to_target" ) & pids+=($!)
      else
        ( set -o pipefail; send "p$n" "$z" "$to_target" < "$f" ) & pids+=($!)
      fi
    done
    [ $alive = 1 ] || break
    read -r -t 0.01 _ <&5 || :
  done
  wait "$dump"; rc=$?
  kill "$holder" 2>/dev/null; wait "$holder"
  exec 4<>"$img/pages-1.img"; exec 4>&-  # frees a sender still waiting for CRIU to open it (EOF)
  if [ $rc != 0 ]; then kill "${pids[@]}" 2>/dev/null; wait; exit $rc; fi
  for f in "$img"/pagemap-*.img; do [ ! -e "$f" ] || echo "$pagemap$(base64 -w0 "$f")" >&2; done
  echo "$dumped" >&2
fi
for i in "${!job[@]}"; do
  # shellcheck disable=SC2294  # the producer is a command line, quoted by the controller
  ( set -o pipefail; eval "${producer[i]}" | send "${job[i]}" "${compress[i]}" "${remote[i]}" ) & pids+=($!)
done
wait_all
