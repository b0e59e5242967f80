#!/usr/bin/env bash
# criu-run.sh: run a command with migrator's CRIU options added to runc.conf for exactly
# its duration. runc reads /etc/criu/runc.conf for every dump and restore on the host, and
# Docker passes no CRIU options per container, so the file is changed under a lock and put
# back exactly as it was when the command ends, also when this script's SSH session dies.
# A lock whose owner (this script's pid on the host) is dead is taken over, after its
# runc.conf is put back. The command sees CRIU_RUN_PID, the lock's owner (a held dump's
# post-dump step puts the file back early and frees the lock; it is then left alone here).
#
#   criu-run.sh --lock DIR --conf FILE [--wait SECONDS] [--opt OPTION]... -- COMMAND...
#
# Exits with COMMAND's status, or 75 when the lock stayed held for SECONDS (default 120).
# shellcheck source=lib.sh
. "${BASH_SOURCE[0]%/*}/lib.sh"

lock='' conf='' wait=120 opt=()
parse lock conf wait opt+ -- "$@"
set -- "${REST[@]}"
need lock "$lock"; need conf "$conf"

deadline=$((SECONDS + wait))
until lock_take "$lock" $$; do
  owner=$(lock_owner "$lock")
  if [[ $owner =~ ^[0-9]+$ ]] && ! kill -0 "$owner" 2>/dev/null; then put_back "$lock" "$conf"; continue; fi
  if [ "$SECONDS" -ge "$deadline" ]; then echo "$conf is held by pid ${owner:-unknown}" >&2; exit 75; fi
  sleep 0.2
done
export CRIU_RUN_PID=$$
trap '[ "$(lock_owner "$lock")" != $$ ] || put_back "$lock" "$conf"' EXIT
trap 'exit 129' HUP INT TERM
if [ -e "$conf" ]; then cp -p "$conf" "$lock/runc.conf.orig"; else : > "$lock/runc.conf.absent"; fi
mkdir -p "$(dirname "$conf")"
{ [ ! -e "$lock/runc.conf.orig" ] || cat "$lock/runc.conf.orig"; printf '%s\n' "${opt[@]}"; } > "$conf.new"
mv "$conf.new" "$conf"
"$@"
