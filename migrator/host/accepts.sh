#!/usr/bin/env bash
# accepts.sh: does the container accept TCP connections on PORT? A connect to its own
# address (a leftover network lock fails it), or, with no address (host or no network),
# from inside the network namespace of PID.
#
#   accepts.sh --pid PID --port PORT [--ip ADDRESS]
# shellcheck source=lib.sh
. "${BASH_SOURCE[0]%/*}/lib.sh"

pid='' ip='' port=''
parse pid ip port -- "$@"
need pid "$pid"; need port "$port"
accepts "$pid" "$ip" "$port"
