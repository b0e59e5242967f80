#!/usr/bin/env bash
# restore-action.sh: CRIU's action script of migrator's restores (runc.conf names it while
# restore.sh runs; CRIU runs it at every step of every restore on the host, this one's or
# not). It acts only in a restore whose images have migrator-restore (restore.sh writes
# it: the published host ports). Once CRIU has locked the restored container's network
# (post-setup-namespaces), new connections to it are refused until the restore unlocks it,
# not dropped. When it unlocks it (network-unlock): the published ports' guard is lifted,
# and the host's neighbour entries for the container's addresses are flushed (clients that
# tried before left them unresolved, and the kernel would ask again only a second later).
# A second line says more: "keep" (restored connections came with it: packets are dropped,
# not refused, until then), "announce" (its address came with it: announced from here),
# "late" (restored at `runc create`, before Docker networks it: kept connections need its
# addresses, the third line, on a stand-in interface meanwhile; restore.sh announces it).
# The fourth names what restore.sh holds off on the host until the unlock (hold_inbound).
#
#   restore-action.sh     (CRTOOLS_* from CRIU)
case ${CRTOOLS_SCRIPT_ACTION:-} in post-setup-namespaces|network-unlock) ;; *) exit 0 ;; esac
[ -n "${CRTOOLS_INIT_PID:-}" ] && [ -f "${CRTOOLS_IMAGE_DIR:-}/migrator-restore" ] || exit 0
# shellcheck source=lib.sh
. "${BASH_SOURCE[0]%/*}/lib.sh"

{ read -ra guarded; read -r how; read -ra addresses; read -r inbound; } < "$CRTOOLS_IMAGE_DIR/migrator-restore"
case $CRTOOLS_SCRIPT_ACTION in
  post-setup-namespaces)
    if [[ " $how " != *" keep "* ]]; then refuse "$CRTOOLS_INIT_PID"
    elif [[ " $how " = *" late "* ]]; then stand_in "$CRTOOLS_INIT_PID" "${addresses[@]}"; fi ;;
  network-unlock)
    guard -D "${guarded[@]}"
    [ -z "$inbound" ] || release_inbound "$inbound"
    [[ " $how " != *" announce "* ]] || [[ " $how " = *" late "* ]] || speak "$CRTOOLS_INIT_PID"
    # the restored connections, counted before any new one can come (restore.sh says it)
    [[ " $how " != *" keep "* ]] ||
      nsenter -t "$CRTOOLS_INIT_PID" -n ss -tnH state established 2>/dev/null | wc -l \
        > "/run/migrator-sockets-$CRTOOLS_INIT_PID"
    for a in $(nsenter -t "$CRTOOLS_INIT_PID" -n ip -o addr show scope global | awk '{ print $4 }'); do
      ip neigh flush to "${a%/*}" 2>/dev/null || :
    done ;;
esac
exit 0
