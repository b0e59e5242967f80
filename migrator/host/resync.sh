#!/usr/bin/env bash
# resync.sh: copy again, by content, every file of SRC changed since SINCE (by its ctime),
# into DEST over SSH. rsync's quick check (size and modification time) skips a file
# rewritten in place with the same size within the same second as the copy before
# (database pages are such files); a file's ctime moves on every change and cannot be set
# back, so a final delta that also resends these (rsync --ignore-times: its delta
# algorithm, by checksums) is exact. Prints rsync's --stats.
#
#   resync.sh --src DIR --dest HOST:DIR --ssh "SSH COMMAND" --since EPOCH_SECONDS
# shellcheck source=lib.sh
. "${BASH_SOURCE[0]%/*}/lib.sh"

src='' dest='' ssh='' since=''
parse src dest ssh since -- "$@"
need src "$src"; need dest "$dest"; need ssh "$ssh"; need since "$since"
set -o pipefail
cd "$src" || die "resync.sh: no directory $src"
find . -newerct "@$since" ! -type d -print0 |
  rsync -aHAX --numeric-ids --from0 --files-from=- --ignore-times --stats -e "$ssh" ./ "${dest%/}/"
