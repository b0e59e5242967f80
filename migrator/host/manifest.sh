#!/usr/bin/env bash
# manifest.sh: write DIR/MANIFEST, a CRC of every file of DIR (cheap; SSH authenticates the
# bytes on the wire, this catches what breaks on either disk or in our own copying), or with
# --verify, fail unless DIR matches its MANIFEST.
#
#   manifest.sh --dir DIR [--verify]
# shellcheck source=lib.sh
. "${BASH_SOURCE[0]%/*}/lib.sh"

dir='' verify=0
parse dir verify! -- "$@"
need dir "$dir"
if [ "$verify" = 1 ]; then verify_manifest "$dir"; else manifest "$dir" > "$dir/MANIFEST"; fi
