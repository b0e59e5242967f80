#!/usr/bin/env bash
# authorized-keys.sh: add a key line to the user's authorized_keys, or remove the lines that
# end in a comment. Under a lock (flock on a file beside it), so that migrations to one
# host at once (drain --parallel) never lose each other's keys; written whole to a temporary
# beside the real file (behind a symlink, which stays a link) with the file's owner and
# mode, then renamed over it, so sshd never reads half a file.
#
#   authorized-keys.sh add --line LINE
#   authorized-keys.sh remove --comment COMMENT
# shellcheck source=lib.sh
. "${BASH_SOURCE[0]%/*}/lib.sh"

what=${1:-}; shift || :
line='' comment=''
parse line comment -- "$@"
case $what in
  add) need line "$line" ;;
  remove) need comment "$comment" ;;
  *) die "authorized-keys.sh: add or remove, not '$what'" ;;
esac
umask 077
dir=${HOME:?}/.ssh
mkdir -p "$dir"
file=$(readlink -f "$dir/authorized_keys")
exec 9> "$dir/.authorized_keys.lock"
flock -w 30 9 || die "$dir/authorized_keys: its lock is held by another process for 30 s"
[ -e "$file" ] || [ "$what" = add ] || exit 0
tmp=$(mktemp "${file%/*}/.authorized_keys.XXXXXX")
trap 'rm -f "$tmp"' EXIT
if [ -e "$file" ]; then
  if [ "$what" = add ]; then
    cat "$file" > "$tmp"
    [ ! -s "$file" ] || [ -z "$(tail -c 1 "$file")" ] || echo >> "$tmp"  # a last line without its newline
    printf '%s\n' "$line" >> "$tmp"
  else
    awk -v c=" $comment" 'length($0) < length(c) || substr($0, length($0) - length(c) + 1) != c' "$file" > "$tmp"
  fi
  chmod --reference="$file" "$tmp"
  chown --reference="$file" "$tmp" 2>/dev/null || :
else
  printf '%s\n' "$line" > "$tmp"
fi
mv -f "$tmp" "$file"
