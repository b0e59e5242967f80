#!/usr/bin/env bash
# restore-action.sh: CRIU's action script of a restore (restore.sh writes the file CRIU
# runs, which runs this). Once CRIU has locked the restored container's network
# (post-setup-namespaces), new connections to it are refused until the restore unlocks it,
# not dropped. When it unlocks it (network-unlock): the published ports' guard is lifted, and
# the host's neighbour entries for the container's addresses are flushed (clients that tried
# before left them unresolved, and the kernel would ask again only a second later).
#
#   restore-action.sh --published "PORT ..."     (CRTOOLS_* from CRIU)
# shellcheck source=lib.sh
. "${BASH_SOURCE[0]%/*}/lib.sh"

published=''
parse published -- "$@"
[ -n "${CRTOOLS_INIT_PID:-}" ] || exit 0
case ${CRTOOLS_SCRIPT_ACTION:-} in
  post-setup-namespaces) refuse "$CRTOOLS_INIT_PID" ;;
  network-unlock)
    read -ra guarded <<< "$published"
    guard -D "${guarded[@]}"
    for a in $(nsenter -t "$CRTOOLS_INIT_PID" -n ip -o addr show scope global | awk '{ print $4 }'); do
      ip neigh flush to "${a%/*}" 2>/dev/null || :
    done ;;
esac
exit 0
