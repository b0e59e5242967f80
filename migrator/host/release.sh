#!/usr/bin/env bash
# release.sh: give a held dump (held.sh) its verdict, unless it already ended, wait until
# runc returns and print its status. Prints nothing when no dump was held in DIR. Safe to
# run again: a dump that ended keeps its status.
#
#   release.sh --hold DIR --verdict commit|abort
# shellcheck source=lib.sh
. "${BASH_SOURCE[0]%/*}/lib.sh"

hold='' verdict=''
parse hold verdict -- "$@"
need hold "$hold"; need verdict "$verdict"
[ -d "$hold" ] || exit 0
[ -e "$hold/rc" ] || { printf '%s\n' "$verdict" > "$hold/verdict.new"; mv "$hold/verdict.new" "$hold/verdict"; }
await_file "$hold/tick" 60 "$hold/rc" || die "the dump held in $hold did not end"
cat "$hold/rc"
