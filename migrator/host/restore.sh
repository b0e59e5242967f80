#!/usr/bin/env bash
# restore.sh: start a created container from the CRIU images in IMG through Docker
# (`docker start --checkpoint`, so it stays a normal Docker container) without copying the
# memory pages: Docker's checkpoint dir CPDIR gets the small image files and relative links
# to the pages (CRIU reads them after entering the container's root, where an absolute link
# would point inside the container).
#
#   restore.sh --img DIR --cpdir DIR --name CHECKPOINT --container ID [--verify]
#              [--pages "FILE:SIZE ..."] [--action] [--published "PORT ..."]
#              [--wait SECONDS] [--at-create] [--keep-connections] [--announce]
#              [--addresses "IP ..."] [-- PORT...]
#
# --verify: IMG must match its MANIFEST; --pages: the pages files must have these sizes.
# --at-create (Docker 28 and newer): the images are not given to Docker but to migrator's
# runc wrapper (runc-wrapper.sh), which restores them at the `runc create` of a plain
# `docker start`. --action: CRIU runs restore-action.sh (runc.conf names it, the same for
# every restore, so concurrent restores share one change of runc.conf): it finds this
# restore's PUBLISHED host ports, guarded until the container's network is up, in the
# images it restores (migrator-restore, written here). Returns once the container accepts
# connections on each PORT (fails after --wait, default 30 s). --keep-connections: the
# images hold established connections (tcp-established): the action drops, never refuses,
# packets to it while it restores. --announce: its address came with it (the L2's): the
# action tells the neighbours where it is once it is restored. Both need --action; with
# --keep-connections, "sockets N" on stdout: the connections restored. At create, its
# connections need its --addresses while CRIU restores them, before Docker networks it: the
# action puts them on a stand-in interface, removed here once Docker's is up. Else Docker
# networks it first: packets for those addresses are held off on the host until CRIU
# unlocks the restored network (hold_inbound). What a restore leaves is removed when this
# ends, whether it started the container or not.
# shellcheck source=lib.sh
. "${BASH_SOURCE[0]%/*}/lib.sh"

img='' cpdir='' name='' container='' verify=0 pages='' action=0 published='' wait=30 at_create=0 keep_connections=0 announce=0 addresses=''
parse img cpdir name container verify! pages action! published wait at-create! keep-connections! announce! addresses -- "$@"
set -- "${REST[@]}"
need img "$img"; need cpdir "$cpdir"; need name "$name"; need container "$container"
read -ra guarded <<< "$published"
set -e
[ "$verify" = 0 ] || verify_manifest "$img"
check_pages "$img" "$pages"
up=$(printf '../%.0s' $(seq 30))
# Docker's checkpoint dir, containerd's copy of it in its /tmp (it has our links to the
# pages), the action's facts and its guard (CRIU's action ends that as soon as it can).
mark=/var/lib/migrator/restore-at-create/$container
inbound=migrator-${container:0:12}  # the nftables table of hold_inbound
leftovers() {
  [ -z "${keeper:-}" ] || kill "$keeper" 2>/dev/null || :
  [ "$keep_connections" = 0 ] || release_inbound "$inbound"
  rm -rf "$cpdir" "$mark" "$img/migrator-restore" "$kept_log"
  for l in /tmp/ctrd-checkpoint*/pages-*.img; do
    [ -L "$l" ] && [ "$(readlink "$l")" = "$up${img#/}/${l##*/}" ] && rm -rf "${l%/*}"
  done
  [ "$action" = 0 ] || guard -D "${guarded[@]}"
  return 0
}
trap leftovers EXIT
# CRIU writes its restore log in runc's work dir, which containerd deletes with the task
# when the restore fails: a process holding it open from when it appears (keep_log) keeps
# what CRIU wrote, copied out for criu_failed to show.
kept_log=/run/migrator-restore-$container.log
keep_log() {
  local f end=$((SECONDS + wait + 30))
  while [ "$SECONDS" -lt "$end" ]; do
    for f in "/run/docker/containerd/daemon/io.containerd.runtime.v2.task/moby/$container/work/restore.log" \
             "/run/containerd/io.containerd.runtime.v2.task/moby/$container/work/restore.log"; do
      [ -f "$f" ] && exec 3<"$f" sleep "$((wait + 30))"
    done
    sleep 0.02
  done
}
if [ "$at_create" = 1 ]; then
  runc migrator-info >/dev/null 2>&1 || die "restore.sh: this host's runc is not migrator's wrapper (runc-wrapper.sh)"
  rm -rf "$mark"; mkdir -p "$mark"; printf '%s\n' "$img" > "$mark/images"
  start=(docker start "$container")
else
  rm -rf "$cpdir"; mkdir -p "$cpdir"; chmod 0700 "$cpdir"
  for f in "$img"/pages-*.img; do [ ! -e "$f" ] || ln -s "$up${f#/}" "$cpdir/${f##*/}"; done
  find "$img" -maxdepth 1 -type f ! -name 'pages-*.img' ! -name MANIFEST -exec cp -p -t "$cpdir" {} +
  start=(docker start --checkpoint "$name" "$container")
fi
if [ "$action" = 1 ]; then
  # in the directory CRIU restores from: Docker's checkpoint dir (containerd copies it
  # whole), or at create, the images themselves
  if [ "$at_create" = 1 ]; then facts=$img; else facts=$cpdir; fi
  printf '%s\n' "$published" > "$facts/migrator-restore"
  { [ "$keep_connections" = 0 ] || printf 'keep '; [ "$announce" = 0 ] || printf 'announce '
    [ "$at_create" = 0 ] || printf late; echo; printf '%s\n%s\n' "$addresses" "$inbound"; } >> "$facts/migrator-restore"
  guard -I "${guarded[@]}"
  if [ "$keep_connections" = 1 ] && [ "$at_create" = 0 ]; then  # (at create it has no network yet)
    # shellcheck disable=SC2016  # a Go template
    mapfile -t parents < <(docker inspect -f '{{range $n, $_ := .NetworkSettings.Networks}}{{$n}}{{"\n"}}{{end}}' \
      "$container" | xargs -r -n1 docker network inspect -f '{{index .Options "parent"}}' | sort -u | grep .)
    hold_inbound "$inbound" "$addresses" "${parents[@]}"
  fi
fi
# prepare.sh's reserve: the restored process gets its memory. Freed while Docker sets up
# the container (before CRIU allocates any), not before.
rm -f "$img/../reserve" & freed=$!
# Newer engines refuse a restore on the daemon that made the checkpoint a moment before
# ("content sha256:... already exists", moby issue 42900); seconds later it works.
for try in 1 2 3; do
  if [ "$at_create" = 0 ]; then
    [ -z "${keeper:-}" ] || kill "$keeper" 2>/dev/null || :
    keep_log & keeper=$!
  fi
  out=$("${start[@]}" 2>&1 >/dev/null) && break
  case $out in *"already exists"*) [ "$try" = 3 ] || { sleep 3; continue; } ;; esac
  echo "$out" >&2
  # CRIU's own account of it: the log runc names ("log file: ..."), or the wrapper's
  log=$(grep -o 'log file: [^ ]*' <<< "$out" | head -1 | cut -d' ' -f3 || :)
  [ -f "$log" ] || { cat "/proc/$keeper/fd/3" > "$kept_log" 2>/dev/null && log=$kept_log; } || :
  [ -f "$log" ] || log=$mark/restore.log
  [ ! -f "$log" ] || criu_failed "$log" "restore-${container:0:12}"
  exit 1
done
wait "$freed" || :
read -r pid ip _ < <(docker inspect -f \
  '{{.State.Pid}} {{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' "$container")
if [ "$at_create" = 1 ]; then  # Docker has networked it now
  [ "$keep_connections" = 0 ] || nsenter -t "$pid" -n ip link del "$STAND_IN" 2>/dev/null || :
  [ "$announce" = 0 ] || speak "$pid"
fi
if [ "$keep_connections" = 1 ] && [ -f "/run/migrator-sockets-$pid" ]; then
  echo "sockets $(cat "/run/migrator-sockets-$pid")"; rm -f "/run/migrator-sockets-$pid"
fi
[ $# -gt 0 ] || exit 0
deadline=$((SECONDS + wait))
for port; do
  until accepts "$pid" "${ip:-}" "$port"; do
    [ "$SECONDS" -lt "$deadline" ] || { echo "restored, but port $port does not answer after $wait s" >&2; exit 1; }
    sleep 0.02
  done
done
