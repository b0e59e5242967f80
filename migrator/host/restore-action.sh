#!/usr/bin/env bash
# restore-action.sh: CRIU's action script of migrator's restores (runc.conf names it while
# restore.sh runs; CRIU runs it at every step of every restore on the host, this one's or
# not). It acts only in a restore whose images have migrator-restore (restore.sh writes
# it: the published host ports). Once CRIU has locked the restored container's network
# (post-setup-namespaces), new connections to it are refused until the restore unlocks it,
# not dropped. When it unlocks it (network-unlock): the published ports' guard is lifted,
# and the host's neighbour entries for the container's addresses are flushed (clients that
# tried before left them unresolved, and the kernel would ask again only a second later).
#
#   restore-action.sh     (CRTOOLS_* from CRIU)
case ${CRTOOLS_SCRIPT_ACTION:-} in post-setup-namespaces|network-unlock) ;; *) exit 0 ;; esac
[ -n "${CRTOOLS_INIT_PID:-}" ] && [ -f "${CRTOOLS_IMAGE_DIR:-}/migrator-restore" ] || exit 0
# shellcheck source=lib.sh
. "${BASH_SOURCE[0]%/*}/lib.sh"

case $CRTOOLS_SCRIPT_ACTION in
  post-setup-namespaces) refuse "$CRTOOLS_INIT_PID" ;;
  network-unlock)
    read -ra guarded < "$CRTOOLS_IMAGE_DIR/migrator-restore"
    guard -D "${guarded[@]}"
    for a in $(nsenter -t "$CRTOOLS_INIT_PID" -n ip -o addr show scope global | awk '{ print $4 }'); do
      ip neigh flush to "${a%/*}" 2>/dev/null || :
    done ;;
esac
exit 0
