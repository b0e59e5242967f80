#!/usr/bin/env bash
# receive.sh: the receiving side of a transfer, on the target. As the forced command of a
# transfer's single-use key (--allow FILE) it takes its request from SSH_ORIGINAL_COMMAND
# (words separated by spaces, each %-encoded) and writes only in the places FILE lists;
# FILE is written by the controller over its own session, outside every place it lists, so
# the key cannot change it. Run by the controller itself (a relayed copy), the request is
# its arguments and no place is checked.
#
#   receive.sh --allow FILE
#   receive.sh -- REQUEST...
#
# Requests (Z is 1 when stdin is zstd-compressed):
#   true                      nothing (the link's check)
#   sink                      read stdin to its end (the link's speed)
#   untar Z DIR [verify]      a tar on stdin into DIR; with verify, DIR must then match
#                             its MANIFEST
#   write Z FILE              stdin into FILE, new or over a plain file (never through a link)
#   pages Z FILE [JOB]        stdin over FILE in place (in-place.sh)
#   rsync --server --daemon . an rsync daemon whose modules are FILE's dir and file places,
#                             each chrooted to it: mN for FILE's line N (from 0)
# FILE's lines: "tree PATH" (a work dir: it and anything under it), "dir PATH" (that
# directory), "file PATH" (that file, as the only one its directory's module takes).
# shellcheck source=lib.sh
. "${BASH_SOURCE[0]%/*}/lib.sh"

here=${BASH_SOURCE[0]%/*}
allow=''
parse allow -- "$@"
if [ -n "$allow" ]; then
  [ -f "$allow" ] || die "receive.sh: this transfer is over ($allow is gone)"
  read -ra words <<< "${SSH_ORIGINAL_COMMAND:-}"
  req=()
  for w in "${words[@]}"; do w=${w//[%]/\\x}; req+=("$(printf '%b' "$w")"); done
else
  req=("${REST[@]}")
fi
[ ${#req[@]} -gt 0 ] || die "receive.sh: no request"

refuse() { die "receive.sh: refused: $*"; }

# into DIR KINDS: cd into DIR, if FILE has a place of one of KINDS (tree, dir) that is DIR
# (a tree: or holds it). Checked where the cd landed (links resolved), so a link planted in
# a work dir does not lead elsewhere.
into() {
  cd -- "$1" 2>/dev/null || refuse "no directory $1"
  [ -n "$allow" ] || return 0
  local at kind p real
  at=$(pwd -P)
  while read -r kind p; do
    [[ " $2 " == *" $kind "* ]] || continue
    real=$(realpath -e -- "$p" 2>/dev/null) || continue
    [[ $at == "$real" || ($kind == tree && $at == "$real"/*) ]] && return 0
  done < "$allow"
  refuse "$1 is not a place of this transfer"
}

# file_in FILE: cd into FILE's directory, if it is in a work dir of this transfer's, and
# set `name` to FILE's name there.
file_in() {
  name=${1##*/}
  [[ $1 == /* && -n $name && $name != . && $name != .. ]] || refuse "not a file path: $1"
  into "${1%/*}/" tree
}

unz() { if [ "$1" = 1 ]; then zstd -d -q -c; else cat; fi; }

set -o pipefail
case "${req[0]}:${#req[@]}" in
  true:1) exit 0 ;;
  sink:1) exec cat > /dev/null ;;
  untar:3 | untar:4)
    [ "${req[3]:-verify}" = verify ] || refuse "untar ${req[3]}"
    into "${req[2]}" "tree dir"
    unz "${req[1]}" | tar --numeric-owner --xattrs '--xattrs-include=*' -xpf - || exit 1
    [ ${#req[@]} = 3 ] || exec bash "$here/manifest.sh" --dir "$(pwd -P)" --verify ;;
  write:3)
    file_in "${req[2]}"; umask 077
    unz "${req[1]}" | dd of="$name" oflag=nofollow bs=1M status=none ;;
  pages:3 | pages:4)
    file_in "${req[2]}"
    unz "${req[1]}" | bash "$here/in-place.sh" --file "$(pwd -P)/$name" ${req[3]:+--job "${req[3]}"} ;;
  rsync:4)
    [ "${req[*]}" = "rsync --server --daemon ." ] || refuse "${req[*]}"
    [ -n "$allow" ] || refuse "rsync without the places of a transfer"
    conf=$(mktemp "$allow.rsyncd.XXXXXX") || exit 1
    trap 'rm -f "$conf"' EXIT
    {
      printf 'log file = /dev/null\ntransfer logging = no\nreverse lookup = no\nuse chroot = yes\nread only = no\n'
      printf 'write only = yes\nlist = no\nuid = 0\ngid = 0\nnumeric ids = yes\n'
      n=0
      while read -r kind p; do
        if [ "$kind" = dir ] && real=$(realpath -e -- "$p" 2>/dev/null) && [ -d "$real" ]; then
          printf '[m%d]\npath = %s\n' "$n" "$real"
        elif [ "$kind" = file ] && real=$(realpath -e -- "${p%/*}/" 2>/dev/null); then
          printf '[m%d]\npath = %s\ninclude = /%s\nexclude = *\n' "$n" "$real" "${p##*/}"
        fi
        n=$((n + 1))
      done < "$allow"
    } > "$conf"
    rsync --server --daemon --config="$conf" . ;;
  *) refuse "${req[*]}" ;;
esac
