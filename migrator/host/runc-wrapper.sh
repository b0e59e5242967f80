#!/usr/bin/env bash
# runc-wrapper.sh: runc for Docker 28 and newer hosts, which cannot `docker start
# --checkpoint` a container with a network namespace of its own (Docker sets its network
# up from the restored task's pid, 0 until the restore has run; moby
# daemon/start_linux.go, containerd issue 12141). Installed as the `runc` that containerd's
# shim runs (in the lab: bind-mounted over /usr/sbin/runc; on a real host: earlier on
# dockerd's PATH, e.g. /usr/local/sbin/runc), it passes every call to the real runc
# ($MIGRATOR_REAL_RUNC, else /run/migrator/runc.real where the lab puts it, else
# /usr/sbin/runc), except for a container that restore.sh
# marked: its `runc create` restores it from its CRIU images instead (a plain `docker start`:
# the task then has its real pid when Docker sets up its network, in the empty network
# namespace CRIU made), and its `runc start` is a no-op (it runs already). The container
# stays a normal Docker container.
#
#   runc-wrapper.sh migrator-info      says it is there (preflight asks)
real=${MIGRATOR_REAL_RUNC:-/usr/sbin/runc}
[ -n "${MIGRATOR_REAL_RUNC:-}" ] || [ ! -x /run/migrator/runc.real ] || real=/run/migrator/runc.real
[ "${1:-}" != migrator-info ] || { echo "migrator runc wrapper 1 (real runc: $real)"; exit 0; }
[ "$(readlink -f "$real")" != "$(readlink -f "$0")" ] || { echo "runc-wrapper: $real is this wrapper" >&2; exit 1; }
args=("$@") global=() i=0
while [ "$i" -lt ${#args[@]} ]; do
  case ${args[i]} in
    --root|--log|--log-format|--criu|--rootless) global+=("${args[i]}" "${args[i + 1]}"); i=$((i + 2)) ;;
    --systemd-cgroup|--debug) global+=("${args[i]}"); i=$((i + 1)) ;;
    *) break ;;
  esac
done
cmd=${args[i]:-} rest=("${args[@]:i+1}")
id=''
[ ${#rest[@]} = 0 ] || id=${rest[${#rest[@]} - 1]}
mark=/var/lib/migrator/restore-at-create/$id
if [ "$cmd" = create ] && [ -n "$id" ] && [ -f "$mark/images" ]; then
  bundle='' pid_file=''
  set -- "${rest[@]}"
  while [ $# -gt 1 ]; do
    case $1 in --bundle) bundle=$2; shift 2 ;; --pid-file) pid_file=$2; shift 2 ;; *) shift ;; esac
  done
  # Its stdio is the shim's, as for a create: runc hands it to the restored processes (they
  # keep writing to the container's log), and runc's own errors go to its --log.
  "$real" "${global[@]}" restore --detach --bundle "$bundle" --pid-file "$pid_file" \
    --image-path "$(cat "$mark/images")" --work-path "$mark" --empty-ns network "$id" || exit
  : > "$mark/restored"
  exit 0
fi
if [ "$cmd" = start ] && [ -f "$mark/restored" ]; then exit 0; fi
exec "$real" "$@"
