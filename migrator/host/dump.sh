#!/usr/bin/env bash
# dump.sh: checkpoint a container's processes into CRIU images, 0600, with their MANIFEST.
# Through runc straight into the image directory (tmpfs when it fits), not `docker
# checkpoint create`, which copies every page through containerd's content store. Without
# Docker's runtime root (another exec-root), Docker's own checkpoint is the fallback.
#
#   dump.sh --img DIR --work DIR --container ID [--root RUNC_ROOT] [--leave-running]
#           [--opt OPTION]...
#
# Through runc, the OPTIONs reach CRIU in a configuration file of this dump's own
# (CRIU_CONFIG_FILE, which runc's CRIU inherits): runc.conf, which every CRIU run of the
# host reads, is left alone, so dumps on one host need not wait for each other. Docker's
# own checkpoint reads only runc.conf: run it under criu-run.sh, which puts them there.
#
# A held dump's post-dump step writes the MANIFEST itself (then it is left as it is).
# shellcheck source=lib.sh
. "${BASH_SOURCE[0]%/*}/lib.sh"

root='' img='' work='' container='' leave_running=0 opt=()
parse root img work container leave-running! opt+ -- "$@"
need img "$img"; need work "$work"; need container "$container"
set -e
umask 077; mkdir -p "$img" "$work"
if [ -n "$root" ]; then
  args=(--root "$root" checkpoint --image-path "$img" --work-path "$work")
  [ "$leave_running" = 0 ] || args+=(--leave-running)
  # runc sets tcp-established in its request to CRIU, which outranks this file: its flag
  for o in "${opt[@]}"; do [ "$o" != tcp-established ] || args+=(--tcp-established); done
  printf '%s\n' "${opt[@]}" > "$work/criu.conf"
  CRIU_CONFIG_FILE=$work/criu.conf runc "${args[@]}" "$container" || { criu_failed "$work/dump.log" "dump-${container:0:12}"; exit 1; }
else
  rmdir "$img"
  args=(--checkpoint-dir "$(dirname "$img")")
  [ "$leave_running" = 0 ] || args+=(--leave-running)
  docker checkpoint create "${args[@]}" "$container" "$(basename "$img")" >/dev/null
fi
[ -e "$img/MANIFEST" ] && exit 0
chmod -R go-rwx "$img"
manifest "$img" > "$img/MANIFEST"
