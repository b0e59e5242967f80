#!/usr/bin/env bash
# criu-run.sh: run a command with migrator's CRIU options added to runc.conf for exactly
# its duration. runc reads /etc/criu/runc.conf for every restore on the host that Docker
# starts, and Docker passes no CRIU options per container, so the file is changed under a
# hold (lib.sh's hold_join) and put back exactly as it was when the last command that
# wanted the same options ends, also when this script's SSH session dies. Commands that
# want the same options share one change of the file and run at once; others wait. A
# holder found dead is dropped (and the file put back when it was the last). The command
# sees CRIU_RUN_PID, its holder (a held dump's post-dump step leaves early, see held.sh).
#
#   criu-run.sh --lock DIR --conf FILE [--wait SECONDS] [--opt OPTION]... -- COMMAND...
#
# Exits with COMMAND's status, or 75 when other options held it for SECONDS (default 120).
# shellcheck source=lib.sh
. "${BASH_SOURCE[0]%/*}/lib.sh"

lock='' conf='' wait=120 opt=()
parse lock conf wait opt+ -- "$@"
set -- "${REST[@]}"
need lock "$lock"; need conf "$conf"

want=$(printf '%s\n' "${opt[@]}")$'\n'
deadline=$((SECONDS + wait))
until holders=$(hold_join "$lock" "$conf" $$ "$want"); do
  if [ "$SECONDS" -ge "$deadline" ]; then echo "$conf is held by pid ${holders:-unknown}" >&2; exit 75; fi
  sleep 0.2
done
export CRIU_RUN_PID=$$
trap 'hold_leave "$lock" "$conf" $$' EXIT
trap 'exit 129' HUP INT TERM
"$@"
