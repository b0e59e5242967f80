#!/usr/bin/env bash
# lock.sh: a lock on the host (one operation per container at a time), held by a process of
# a controller: the controller judges whether its owner is gone (lib.sh's lock_take is the
# one lock primitive; criu-run.sh's runc.conf lock uses it with a host-side owner).
#
#   lock.sh take --dir DIR --owner TEXT                 exit 0: taken; 1: held (owner on stdout)
#   lock.sh take --dir DIR --owner TEXT --from TEXT     the same, taking it over from a
#                                                       holder named TEXT (and only from it)
#   lock.sh release --dir DIR
# shellcheck source=lib.sh
. "${BASH_SOURCE[0]%/*}/lib.sh"

what=${1:-}; shift || :
dir='' owner='' from=''
parse dir owner from -- "$@"
need dir "$dir"
case $what in
  take)
    need owner "$owner"
    if [ -n "$from" ] && [ "$(lock_owner "$dir")" = "$from" ]; then rm -rf "$dir"; fi
    lock_take "$dir" "$owner" && exit 0
    lock_owner "$dir"; exit 1 ;;
  release) rm -rf "$dir" ;;
  *) die "lock.sh: take or release, not '$what'" ;;
esac
