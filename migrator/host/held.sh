#!/usr/bin/env bash
# held.sh: start a dump whose processes stay frozen once their images are complete, until
# a verdict (release.sh): "commit" lets CRIU kill them (they run on the target now),
# anything else makes CRIU resume them, untouched. The dump runs detached from this SSH
# session (setsid), so a controller that dies leaves it waiting for `migrator recover`.
#
#   held.sh --hold DIR --pid PID --img DIR --lock DIR --conf FILE [--address-moves]
#           -- DUMP_COMMAND...
#
# --address-moves: the container's address moves with it to the target (the L2's, not the
# host's): while held, the source stops answering ARP for it (post-dump.sh).
#
# DUMP_COMMAND must make CRIU run HOLD/post-dump as its action script (written here; it
# runs post-dump.sh for the dump of PID only). Returns 0 once the images are complete, or
# the dump's status with its output on stderr when it failed first. HOLD/rc gets the
# dump's status when it ends.
# shellcheck source=lib.sh
. "${BASH_SOURCE[0]%/*}/lib.sh"

hold='' pid='' img='' lock='' conf='' address_moves=0
parse hold pid img lock conf address-moves! -- "$@"
set -- "${REST[@]}"
need hold "$hold"; need pid "$pid"; need img "$img"; need lock "$lock"; need conf "$conf"
[ $# -gt 0 ] || die "held.sh: no dump command after --"

umask 077; mkdir -p "$hold"; rm -f "$hold/dumped" "$hold/verdict" "$hold/rc" "$hold/moves"
[ "$address_moves" = 0 ] || : > "$hold/moves"
[ -p "$hold/tick" ] || mkfifo "$hold/tick"
printf '%s\n' "$pid" > "$hold/pid"; printf '%s\n' "$img" > "$hold/img"
# CRIU runs it at every step of the dump: only two of them start the script
# shellcheck disable=SC2016  # the action script's own variable, expanded when CRIU runs it
printf '#!/bin/bash\ncase ${CRTOOLS_SCRIPT_ACTION:-} in pre-dump|post-dump) ;; *) exit 0 ;; esac\nexec bash %q --hold %q --lock %q --conf %q\n' \
  "${BASH_SOURCE[0]%/*}/post-dump.sh" "$hold" "$lock" "$conf" > "$hold/post-dump"
chmod 0700 "$hold/post-dump"
# shellcheck disable=SC2016  # the inner script's own variables
setsid bash -c '"$@" > "$0/out" 2>&1; echo $? > "$0/rc.new"; mv "$0/rc.new" "$0/rc"' "$hold" "$@" \
  </dev/null >/dev/null 2>&1 &
await_file "$hold/tick" 0 "$hold/dumped" "$hold/rc"
[ -e "$hold/dumped" ] && exit 0
cat "$hold/out" >&2; exit "$(cat "$hold/rc")"
