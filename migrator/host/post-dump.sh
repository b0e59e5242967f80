#!/usr/bin/env bash
# post-dump.sh: CRIU's action script of a held dump (held.sh writes HOLD/post-dump, which
# runs this). Acts only for the dump of the process held.sh was given.
# - pre-dump: freeze the container first (lib.sh's freeze), so CRIU finds it frozen.
# - post-dump: the images are complete and the processes still frozen behind CRIU's
#   network lock. Write the MANIFEST, put runc.conf back and free its lock (CRIU read it
#   long before), say so (HOLD/dumped), make the address refuse connections instead of
#   dropping them (or, when the address moves with it, HOLD/moves, stop answering ARP),
#   and wait for the verdict (HOLD/verdict): "commit" lets CRIU kill the processes;
#   anything else fails this step, and CRIU resumes them untouched.
#
#   post-dump.sh --hold DIR --lock DIR --conf FILE     (CRTOOLS_* from CRIU)
# shellcheck source=lib.sh
. "${BASH_SOURCE[0]%/*}/lib.sh"

hold='' lock='' conf=''
parse hold lock conf -- "$@"
case ${CRTOOLS_SCRIPT_ACTION:-} in pre-dump|post-dump) ;; *) exit 0 ;; esac
[ "${CRTOOLS_INIT_PID:-}" = "$(cat "$hold/pid")" ] || exit 0
if [ "$CRTOOLS_SCRIPT_ACTION" = pre-dump ]; then freeze "$hold/tick" "$CRTOOLS_INIT_PID"; exit 0; fi
img=$(cat "$hold/img")
chmod -R go-rwx "$img"; manifest "$img" > "$img/MANIFEST"
# runc.conf back as it was, and its lock free, for the length of the hold (when criu-run.sh
# of this dump still holds it)
[ -z "${CRIU_RUN_PID:-}" ] || hold_leave "$lock" "$conf" "$CRIU_RUN_PID"
: > "$hold/dumped"
if [ -e "$hold/moves" ]; then
  # The address moves with the container: packets to it stay dropped here (CRIU's lock;
  # connections restored on the target live on), and it answers ARP only on the target
  # from now on. Given back here on abort.
  silence "$CRTOOLS_INIT_PID" > "$hold/silenced"
else
  # Clients get a TCP reset here from now on, as if the source were gone, so they turn to
  # the target at once; CRIU's own unlock, on abort, flushes these with its chain.
  refuse "$CRTOOLS_INIT_PID"
fi
await_file "$hold/tick" 0 "$hold/verdict"
[ "$(cat "$hold/verdict")" = commit ] && exit 0
if [ -e "$hold/moves" ] && [ -s "$hold/silenced" ]; then
  mapfile -t silenced < "$hold/silenced"; speak "$CRTOOLS_INIT_PID" "${silenced[@]}"
fi
exit 1
