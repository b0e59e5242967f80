"""CRIU through Docker on one host: dump, restore, and what surrounds them.

Dumps go through runc directly (`runc checkpoint --image-path`), not `docker checkpoint
create`: Docker copies every page through containerd's content store on dump and again on
restore, which is most of the time at any real size. Restores go through Docker (`docker
start --checkpoint`) so the container stays a normal Docker container, with the memory
pages left where they are: the checkpoint directory Docker reads holds the small image
files and relative symlinks to the pages (Docker tars that directory; CRIU follows the
links from its image directory on the host).

Docker 20.10 passes no CRIU options per container, but runc reads /etc/criu/runc.conf for
every dump and restore on the host. Established TCP connections and in-flight connects make
a stock dump fail, so a host-side wrapper holds a lock, adds our options for the one
command, and puts the file back exactly as it was when the command ends, also when its SSH
session dies (the lock names the wrapper's pid on the host; a dead one is taken over).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import shell
from .container import Spec
from .engine import Engine
from .errors import CommandError, LockedError, MigratorError
from .hosts import free_bytes
from .transport import CommandResult, Host, wait_for

log = logging.getLogger(__name__)

RUNC_CONF = "/etc/criu/runc.conf"
STATE_DIR = "/var/lib/migrator"
# A move to another host: established connections are restored closed (clients reconnect
# to the new address); connections still being set up are skipped.
MIGRATE_CRIU_OPTS = ["tcp-close", "skip-in-flight"]
LOCK_WAIT_S = 120


def workdir(mid: str) -> str:
    return f"{STATE_DIR}/work/{mid}"


def make_workdir(host: Host, mid: str) -> str:
    d = workdir(mid)
    host.run(["bash", "-c", 'umask 077; mkdir -p "$1" "$2" && chmod 0700 "$1" "$(dirname "$1")" "$2"', "_", d,
              f"{SHM_DIR}/{mid}"])
    return d


def remove_workdir(host: Host, op: str) -> None:
    """The work dir and the tmpfs image dir of one operation (they hold process memory)."""
    host.run(["rm", "-rf", "--one-file-system", workdir(op), f"{SHM_DIR}/{op}"], check=False)


def lock_path(container_id: str) -> str:
    return f"{STATE_DIR}/locks/{container_id}"


def controller_id() -> str:
    """This controller, across machines and reboots: a lock it left names it."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = "?"
    return f"{socket.gethostname()}:{boot}"


def owner(**what: Any) -> dict[str, Any]:
    return {**what, "controller": controller_id(), "pid": os.getpid(), "since": time.time()}


def _stale(owner_text: str) -> bool:
    """A lock left by a dead process of this same controller (it was killed): safe to take."""
    try:
        o = json.loads(owner_text)
    except ValueError:
        return False
    if not isinstance(o, dict) or o.get("controller") != controller_id() or not isinstance(o.get("pid"), int):
        return False
    if o["pid"] == os.getpid():
        return False
    try:
        os.kill(o["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _try_lock(host: Host, path: str, who: dict[str, Any],
              on_stale: Callable[[], None] | None = None) -> bool:
    """mkdir is atomic: the one that makes the directory holds the lock; it names its owner.
    A lock whose owner was a process of this controller that no longer exists is taken over
    (after `on_stale` repairs what that process left half done)."""
    take = ["bash", "-c", 'umask 077; mkdir -p "$(dirname "$1")" && mkdir "$1" && '
            'printf "%s" "$2" > "$1/owner"', "_", path, json.dumps(who)]
    if host.run(take, check=False).ok:
        return True
    if _stale(_lock_owner(host, path)):
        log.warning("%s: taking over %s from a dead process of this controller", host.name, path)
        if on_stale:
            on_stale()
        host.run(["rm", "-rf", path], check=False)
        return host.run(take, check=False).ok
    return False


def _lock_owner(host: Host, path: str) -> str:
    return host.run(["cat", f"{path}/owner"], check=False).stdout.strip() or "unknown owner"


def take_lock(host: Host, container_id: str, who: dict[str, Any]) -> None:
    """One operation per container at a time, held on the container's own host."""
    path = lock_path(container_id)
    if not _try_lock(host, path, who):
        raise LockedError(f"{host.name}: container {who.get('container', container_id)} is locked by "
                          f"another operation: {_lock_owner(host, path)}",
                          hint=f"if none runs (its controller died), remove {path} on {host.name}")


def release_lock(host: Host, container_id: str) -> None:
    host.run(["rm", "-rf", lock_path(container_id)], check=False)


def checkpoint_dir(engine: Engine, container_id: str, name: str) -> str:
    return f"{engine.docker_root}/containers/{container_id}/checkpoints/{name}"


RUNC_LOCK = f"{STATE_DIR}/locks/runc-conf"
SHM_DIR = "/dev/shm/migrator"

# put_back: runc.conf ($conf) as it was before the holder of $lock changed it, lock released.
_PUT_BACK = r"""
put_back() {
  if [ -e "$lock/runc.conf.orig" ]; then mv -f "$lock/runc.conf.orig" "$conf"
  elif [ -e "$lock/runc.conf.absent" ]; then rm -f "$conf"; fi
  rm -rf "$lock"
}
"""

# criu-run LOCK CONF WAIT N OPT... CMD...: runc.conf with OPTs added, for CMD only (a held
# dump's post-dump step puts it back early: CRIU read it long before; the lock then names
# another pid, or none, and is left alone here). CMD sees CRIU_RUN_PID, the lock's owner.
_CRIU_RUN = _PUT_BACK + r"""
lock=$1 conf=$2 wait=$3 n=$4; shift 4
opts=("${@:1:$n}"); shift "$n"
mkdir -p "$(dirname "$lock")"
deadline=$((SECONDS + wait))
until mkdir "$lock" 2>/dev/null; do
  owner=$(cat "$lock/pid" 2>/dev/null || true)
  if [ -n "$owner" ] && ! kill -0 "$owner" 2>/dev/null; then put_back; continue; fi
  if [ "$SECONDS" -ge "$deadline" ]; then echo "$conf is held by pid ${owner:-unknown}" >&2; exit 75; fi
  sleep 0.2
done
echo $$ > "$lock/pid"; export CRIU_RUN_PID=$$
trap '[ "$(cat "$lock/pid" 2>/dev/null)" != $$ ] || put_back' EXIT
trap 'exit 129' HUP INT TERM
if [ -e "$conf" ]; then cp -p "$conf" "$lock/runc.conf.orig"; else : > "$lock/runc.conf.absent"; fi
mkdir -p "$(dirname "$conf")"
{ [ ! -e "$lock/runc.conf.orig" ] || cat "$lock/runc.conf.orig"; printf '%s\n' "${opts[@]}"; } > "$conf.new"
mv "$conf.new" "$conf"
"$@"
"""

# manifest DIR: a CRC line per regular file (pages CRIU wrote into a pipe have none: SSH's
# MAC covered them on the wire); verify_manifest DIR: every file MANIFEST names is there with
# that CRC, or it says not.
_MANIFEST = r"""
manifest() { (cd "$1" && find . -type f ! -name MANIFEST -print0 | sort -z | xargs -0 -r cksum -a crc); }
verify_manifest() {
  diff <(cd "$1" && sed 's/^[0-9]* [0-9]* //' MANIFEST | tr '\n' '\0' | xargs -0 -r cksum -a crc 2>&1) \
    "$1/MANIFEST" >/dev/null && [ -s "$1/MANIFEST" ] && return
  echo "checkpoint in $1 does not match its checksums; not restoring from it" >&2; return 1
}
"""

# accepts PID IP PORT: a TCP connect to the container's own address (a leftover network
# lock fails it); with no address (host or no network), from inside its network namespace.
_ACCEPTS = r"""
accepts() {
  if [ -n "$2" ]; then timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$2" "$3" 2>/dev/null
  else timeout 2 nsenter -t "$1" -n bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$3" 2>/dev/null; fi
}
"""

# refuse PID: inside CRIU's network lock of PID's network namespace (its CRIU chain, which
# first lets CRIU's own packets through), answer TCP with a reset instead of dropping it, so
# that clients turn away at once instead of waiting out a SYN retransmit (1 s and more).
# Flushed with the lock's chain; nothing to do where there is no lock.
_REFUSE = r"""
refuse() {
  local t
  for t in iptables ip6tables; do
    nsenter -t "$1" -n "$t" -w -I CRIU 2 -p tcp --tcp-flags RST RST -j ACCEPT 2>/dev/null &&
      nsenter -t "$1" -n "$t" -w -I CRIU 3 -p tcp -j REJECT --reject-with tcp-reset 2>/dev/null
  done
  return 0
}
"""

# guard -I|-D PORT...: on the host, refuse (TCP reset) or stop refusing the new connections
# Docker forwards from these published ports to a container: between Docker publishing them
# and the container's network being up they are dropped, and a client waits out a SYN
# retransmit (1 s and more) instead of retrying at once.
_GUARD = r"""
guard() {
  local op=$1 p t; shift
  for p; do for t in iptables ip6tables; do
    "$t" -w "$op" DOCKER-USER -p tcp --syn -m conntrack --ctstate DNAT --ctorigdstport "$p" \
      -j REJECT --reject-with tcp-reset 2>/dev/null || :
  done; done
}
"""

# CRIU's action script of a restore (start_from_images), behind a line setting `published`
# (the ports guarded while Docker sets the container up). Once CRIU has locked the restored
# container's network (post-setup-namespaces), new connections to it are refused until the
# restore unlocks it, not dropped. When it unlocks it: no more guard, and as clients that
# tried before left the host's neighbour entry for its address unresolved (the kernel asks
# again only a second later), ask now.
_RESTORE_ACTION = _REFUSE + _GUARD + r"""
[ -n "${CRTOOLS_INIT_PID:-}" ] || exit 0
case ${CRTOOLS_SCRIPT_ACTION:-} in
  post-setup-namespaces) refuse "$CRTOOLS_INIT_PID" ;;
  network-unlock)
    guard -D $published
    for a in $(nsenter -t "$CRTOOLS_INIT_PID" -n ip -o addr show scope global | awk '{ print $4 }'); do
      ip neigh flush to "${a%/*}" 2>/dev/null || :
    done ;;
esac
exit 0
"""

# place-and-start IMG CPDIR NAME CONTAINER VERIFY WAIT PAGES ACTION PUBLISHED PORT...: check
# IMG against its MANIFEST (VERIFY=1) and each pages file against its size in PAGES
# ("pages-1.img:SIZE ..."), make Docker's checkpoint dir with the small files copied and the
# pages linked (relatively: CRIU reads them after entering the container's root, where an
# absolute link would point inside the container), put $RESTORE_ACTION at ACTION (CRIU's
# action script, when not empty) and guard the PUBLISHED host ports ("PORT ...") until it
# ends the guard, start from it, and wait up to WAIT s until the container accepts
# connections on each PORT.
_PLACE_AND_START = _MANIFEST + _ACCEPTS + _GUARD + r"""
set -e
img=$1 cpdir=$2 name=$3 ctr=$4 verify=$5 wait=$6 pages=$7 action=$8 published=$9; shift 9
[ "$verify" = 0 ] || verify_manifest "$img"
for p in $pages; do
  n=$(stat -c %s "$img/${p%:*}" 2>/dev/null || echo 0)
  [ "$n" = "${p##*:}" ] || { echo "${p%:*} in $img has $n bytes, its pagemap says ${p##*:}; not restoring from it" >&2
                             exit 1; }
done
up=$(printf '../%.0s' $(seq 30))
# What a restore leaves, removed when this ends, whether it started the container or not:
# Docker's checkpoint dir, containerd's copy of it in its /tmp (it has our links to the
# pages), the action script and its guard (CRIU's action ends that as soon as it can).
leftovers() {
  rm -rf "$cpdir"
  for l in /tmp/ctrd-checkpoint*/pages-*.img; do
    [ -L "$l" ] && [ "$(readlink "$l")" = "$up${img#/}/${l##*/}" ] && rm -rf "${l%/*}"
  done
  [ -z "$action" ] || { guard -D $published; rm -f "$action"; rmdir "${action%/*}" 2>/dev/null || :; }
  return 0
}
trap leftovers EXIT
rm -rf "$cpdir"; mkdir -p "$cpdir"; chmod 0700 "$cpdir"
for f in "$img"/pages-*.img; do [ ! -e "$f" ] || ln -s "$up${f#/}" "$cpdir/${f##*/}"; done
find "$img" -maxdepth 1 -type f ! -name 'pages-*.img' ! -name MANIFEST -exec cp -p -t "$cpdir" {} +
if [ -n "$action" ]; then
  mkdir -p "${action%/*}"
  printf '#!/bin/bash\npublished=%q\n%s' "$published" "$RESTORE_ACTION" > "$action"; chmod 0700 "$action"
  guard -I $published
fi
# prepare_memory's reserve: the restored process gets its memory. Freed while Docker sets
# up the container (~0.1 s before CRIU allocates any), not before.
rm -f "$img/../reserve" & freed=$!
docker start --checkpoint "$name" "$ctr" >/dev/null
wait "$freed" || :
[ $# -gt 0 ] || exit 0
read -r pid ip _ < <(docker inspect -f \
  '{{.State.Pid}} {{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' "$ctr")
deadline=$((SECONDS + wait))
for port; do
  until accepts "$pid" "${ip:-}" "$port"; do
    [ "$SECONDS" -lt "$deadline" ] || { echo "restored, but port $port does not answer after $wait s" >&2; exit 1; }
    sleep 0.02
  done
done
"""

# dump ROOT IMG WORK LEAVE CONTAINER: runc straight into IMG (tmpfs when it fits). Without
# Docker's runtime root (another exec-root), Docker's own checkpoint is the fallback.
_DUMP = _MANIFEST + r"""
set -e
root=$1 img=$2 work=$3 leave=$4 ctr=$5
umask 077; mkdir -p "$img" "$work"
if [ -n "$root" ]; then
  args=(--root "$root" checkpoint --image-path "$img" --work-path "$work")
  [ "$leave" = 1 ] && args+=(--leave-running)
  runc "${args[@]}" "$ctr" || { tail -5 "$work/dump.log" >&2 2>/dev/null; exit 1; }
else
  rmdir "$img"
  args=(--checkpoint-dir "$(dirname "$img")")
  [ "$leave" = 1 ] && args+=(--leave-running)
  docker checkpoint create "${args[@]}" "$ctr" "$(basename "$img")" >/dev/null
fi
[ -e "$img/MANIFEST" ] && exit 0  # a held dump's post-dump step wrote it
chmod -R go-rwx "$img"
manifest "$img" > "$img/MANIFEST"
"""

# await SECONDS FILE...: until one of the FILEs exists (SECONDS 0: no bound; returns 1 when
# they ran out), sleeping on $hold/tick, a pipe nobody writes (`read -t` on it sleeps
# without starting a process).
_AWAIT = r"""
await() {
  local end=$((SECONDS + $1)) bound=$1 f; shift
  exec 3<>"$hold/tick"
  while :; do
    for f; do [ -e "$f" ] && return 0; done
    [ "$bound" = 0 ] || [ "$SECONDS" -lt "$end" ] || return 1
    read -r -t 0.01 _ <&3 || :
  done
}
"""

# freeze PID: freeze the cgroup of PID (its freezer, v1 or v2) and wait until it is frozen,
# looking every millisecond (sleeping on $hold/tick, as `await`) for up to 2 s (then thawed
# back: CRIU freezes it its own way).
# CRIU finding it frozen goes straight on; freezing it itself, it looks every 100 ms, and a
# process freezes in far less, so that is ~0.1 s of downtime saved. CRIU freezes it again
# when it resumes the processes: whoever makes it resume them thaws it (`repair`).
_FREEZE = r"""
freeze() {
  local cg f want on off i
  exec 3<>"$hold/tick"
  if cg=$(sed -n 's/^[0-9]*:freezer:\(.*\)$/\1/p' "/proc/$1/cgroup") && [ -n "$cg" ]; then
    f=/sys/fs/cgroup/freezer$cg/freezer.state want=FROZEN on=FROZEN off=THAWED
  elif cg=$(sed -n 's/^0::\(.*\)$/\1/p' "/proc/$1/cgroup") && [ -n "$cg" ]; then
    f=/sys/fs/cgroup$cg/cgroup.freeze want=1 on=1 off=0
  else return 0; fi
  [ -w "$f" ] && echo "$on" > "$f" 2>/dev/null || return 0
  for ((i = 0; i < 2000; i++)); do
    if [ "$want" = FROZEN ]; then [ "$(< "$f")" = FROZEN ] && return 0
    else grep -qx 'frozen 1' "${f%/*}/cgroup.events" && return 0; fi
    read -r -t 0.001 _ <&3 || :
  done
  echo "$off" > "$f"
}
"""

# CRIU's action script of a held dump (see `dump_argv`), in HOLD. Before the dump, freeze
# the container (see _FREEZE). After it (post-dump), the images are complete and the
# container's processes are still frozen behind CRIU's network lock: write the MANIFEST, say
# so (HOLD/dumped), and wait for the controller's verdict (HOLD/verdict): "commit" lets CRIU
# kill the processes (they run on the target now); anything else makes CRIU resume them,
# untouched. Only for the dump of the container it was made for.
_POST_DUMP = ("#!/bin/bash\n" + _MANIFEST + _PUT_BACK + _AWAIT + _FREEZE + _REFUSE
              + f"lock={shell.quote(RUNC_LOCK)} conf={shell.quote(RUNC_CONF)}\n") + r"""
case ${CRTOOLS_SCRIPT_ACTION:-} in pre-dump|post-dump) ;; *) exit 0 ;; esac
hold=${0%/*}
[ "${CRTOOLS_INIT_PID:-}" = "$(cat "$hold/pid")" ] || exit 0
if [ "$CRTOOLS_SCRIPT_ACTION" = pre-dump ]; then freeze "$CRTOOLS_INIT_PID"; exit 0; fi
img=$(cat "$hold/img")
chmod -R go-rwx "$img"; manifest "$img" > "$img/MANIFEST"
# runc.conf back as it was, and its lock free, for the length of the hold
[ -z "${CRIU_RUN_PID:-}" ] || [ "$(cat "$lock/pid" 2>/dev/null)" != "$CRIU_RUN_PID" ] || put_back
: > "$hold/dumped"
# From now on clients get a TCP reset here, not silence, so they turn to the target at once
# (as if the source were gone); CRIU's own unlock, on abort, flushes these with its chain.
refuse "$CRTOOLS_INIT_PID"
await 0 "$hold/verdict"
[ "$(cat "$hold/verdict")" = commit ]
"""

# held HOLD PID IMG CMD...: run CMD (a dump whose CRIU calls HOLD/post-dump) detached from
# this session, so that it outlives it; return once the dump is complete (0) or failed (its
# status, its output on stderr). HOLD/rc gets CMD's status when it ends.
_HELD = _AWAIT + r"""
hold=$1 pid=$2 img=$3; shift 3
umask 077; mkdir -p "$hold"; rm -f "$hold/dumped" "$hold/verdict" "$hold/rc"
[ -p "$hold/tick" ] || mkfifo "$hold/tick"
printf '%s\n' "$pid" > "$hold/pid"; printf '%s\n' "$img" > "$hold/img"
printf '%s' "$POST_DUMP" > "$hold/post-dump"; chmod 0700 "$hold/post-dump"
setsid bash -c '"$@" > "$0/out" 2>&1; echo $? > "$0/rc.new"; mv "$0/rc.new" "$0/rc"' "$hold" "$@" \
  </dev/null >/dev/null 2>&1 &
await 0 "$hold/dumped" "$hold/rc"
[ -e "$hold/dumped" ] && exit 0
cat "$hold/out" >&2; exit "$(cat "$hold/rc")"
"""

# release HOLD VERDICT: give a held dump its verdict (unless it already ended), wait until
# runc returns and print its status (none: the dump was never held here).
_RELEASE = _AWAIT + r"""
hold=$1
[ -d "$hold" ] || exit 0
[ -e "$hold/rc" ] || { printf '%s\n' "$2" > "$hold/verdict.new"; mv "$hold/verdict.new" "$hold/verdict"; }
await 60 "$hold/rc" || { echo "the dump held in $hold did not end" >&2; exit 1; }
cat "$hold/rc"
"""


def criu_argv(argv: list[str | int], options: list[str] | None = None) -> list[str | int]:
    """argv that runs argv with our CRIU options in runc.conf for exactly its duration."""
    opts = MIGRATE_CRIU_OPTS if options is None else options
    return ["bash", "-c", _CRIU_RUN, "criu-run", RUNC_LOCK, RUNC_CONF, LOCK_WAIT_S, len(opts), *opts, *argv]


def criu_result(host: Host, what: str, r: CommandResult) -> str:
    """The output of a criu_argv command, or the error it makes."""
    if r.rc == 75:
        raise LockedError(f"{host.name}: {r.stderr.strip()}", hint=f"if nothing runs there, remove {RUNC_LOCK}")
    if not r.ok:
        raise MigratorError(f"{host.name}: {what} failed: {_tail(r.stderr)}")
    return r.stdout


def criu_run(host: Host, what: str, argv: list[str | int], options: list[str] | None = None,
             timeout: float | None = 3600) -> str:
    """Run argv on host with our CRIU options in runc.conf for exactly its duration."""
    return criu_result(host, what, host.run(criu_argv(argv, options), check=False, timeout=timeout))


def _tail(text: str) -> str:
    return " ".join(text.strip().splitlines()[-4:])[-500:] or "no output"


def runtime_root(host: Host, container_id: str) -> str:
    """Docker's runc state directory for this container ('' when not found)."""
    r = host.run(["bash", "-c", 'for r in /run/docker/runtime-*/moby /var/run/docker/runtime-*/moby; do '
                  '[ -d "$r/$1" ] && { echo "$r"; exit 0; }; done; exit 1', "_", container_id], check=False)
    return r.stdout.strip() if r.ok else ""


def image_dir(host: Host, op: str, need_bytes: int) -> str:
    """Where the CRIU images go: tmpfs when it has room (1.5x), else the work dir on disk."""
    free = free_bytes(host, "/dev/shm")
    return f"{SHM_DIR}/{op}/img" if free > need_bytes * 1.5 else f"{workdir(op)}/img"


def hold_dir(op: str) -> str:
    return f"{workdir(op)}/hold"


# prepare IMG MIB: two files of MIB MiB of zeros beside each other, written at once; exit 3
# without writing when the host has not that memory available twice (with a margin).
_PREPARE = r"""
umask 077
avail=$(awk '/^MemAvailable:/ { print $2 }' /proc/meminfo)
[ "${avail:-0}" -ge $(( $2 * 1024 * 9 / 4 )) ] || exit 3
dd if=/dev/zero of="$1/pages-1.img" bs=1M count="$2" status=none & a=$!
dd if=/dev/zero of="$1/../reserve" bs=1M count="$2" status=none & b=$!
wait "$a" && wait "$b"
"""


def prepare_memory(host: Host, img: str, need_bytes: int) -> bool:
    """Before the freeze, put to use on the target the memory the restore will need:
    IMG/pages-1.img, which the incoming pages overwrite in place (`in_place`), and a reserve
    of the same size that the restore frees just before it starts (its process gets that
    memory back). Faulting in fresh memory is then no part of the downtime. Only when the
    host has that memory available twice and its tmpfs the room; returns whether it did."""
    mib = need_bytes // 1048576 + 1
    if not img.startswith(SHM_DIR + "/") or free_bytes(host, "/dev/shm") < 2.5 * need_bytes:
        return False
    r = host.run(["bash", "-c", _PREPARE, "prepare", img, mib], check=False, timeout=600)
    if r.rc == 3:  # not worth an out-of-memory risk there: the restore allocates as it goes
        return False
    if not r.ok:
        host.run(["rm", "-f", f"{img}/pages-1.img", f"{img}/../reserve"], check=False)
        raise MigratorError(f"{host.name}: could not set aside {mib} MiB for the restore: {_tail(r.stderr)}",
                            hint="free memory there or pick another target")
    return True


# perl -e PIPE_SIZE [FIFO]: make the pipe on stdin, or FIFO (opened read-write), 1 MiB deep
# (F_SETPIPE_SZ); a stream of memory pages through the default 64 KiB pipes between CRIU,
# ssh, sshd and dd moved ~15% slower here (800 MB: 1.26 s against 1.10 s, mean of 5).
PIPE_SIZE = 'my $f = \\*STDIN; if (@ARGV) { open($f, "+<", $ARGV[0]) or die } fcntl($f, 1031, 1 << 20) or die;'


def in_place(path: str, job: str = "") -> str:
    """A remote command (POSIX sh): stdin over the file at `path` from its start, without
    allocating anew what it already has (see prepare_memory), then cut to what came; with
    `job`, says the byte count as a transfer job line (J<job> N bytes) on stderr."""
    p = shell.quote(path)
    say = f' && echo "J{job} $n bytes" >&2' if job else ""
    return (f"umask 077; perl -e {shell.quote(PIPE_SIZE)} 2>/dev/null; "
            f's=$(dd of={p} bs=1M conv=notrunc 2>&1) || {{ echo "$s" >&2; exit 1; }}; '
            f"n=$(printf '%s' \"$s\" | sed -n 's/^\\([0-9]*\\) bytes.*/\\1/p'); "
            f'truncate -s "$n" {p}{say}')


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    v = shift = 0
    while True:
        b = buf[i]
        i += 1
        v |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return v, i


def _fields(msg: bytes) -> dict[int, int]:
    """The varint fields of a protobuf message (all a CRIU pagemap entry needs), by number."""
    out, i = {}, 0
    while i < len(msg):
        key, i = _varint(msg, i)
        kind = key & 7
        if kind == 0:
            out[key >> 3], i = _varint(msg, i)
        elif kind == 2:
            n, i = _varint(msg, i)
            i += n
        else:
            i += 8 if kind == 1 else 4
    return out


PE_PARENT, PE_PRESENT = 1, 4  # CRIU's pagemap entry flags (criu/include/pagemap.h)


def pages_size(pagemap: bytes) -> tuple[int, int]:
    """(pages file id, its size in bytes) from a CRIU pagemap image: two magic words, then
    messages behind their 32-bit length: a head naming the pages-<id>.img, then one entry per
    run of pages (nr_pages, field 5, or the older field 2; in the file when PRESENT)."""
    msgs, i = [], 8
    while i + 4 <= len(pagemap):
        n = int.from_bytes(pagemap[i:i + 4], "little")
        msgs.append(_fields(pagemap[i + 4:i + 4 + n]))
        i += 4 + n
    if not msgs:
        raise ValueError("no pagemap head")
    size = 0
    for e in msgs[1:]:
        flags = e.get(4, PE_PARENT if e.get(3) else PE_PRESENT)
        if flags & PE_PRESENT:
            size += e.get(5, e.get(2, 0)) * 4096
    return msgs[0].get(1, 0), size


def expected_pages(pagemaps: list[bytes]) -> dict[str, int]:
    """{pages file name: size} from a checkpoint's CRIU pagemap images: what the pages files
    must measure on the target. Streamed pages are in no MANIFEST, and pages cut short on the
    way would make CRIU's restore spin, not fail (start_from_images checks them)."""
    want: dict[str, int] = {}
    for pm in pagemaps:
        try:
            pages_id, size = pages_size(pm)
        except (ValueError, IndexError) as ex:
            raise MigratorError(f"a pagemap image of the checkpoint cannot be read ({ex}); not restoring from it") \
                from ex
        if size:
            want[f"pages-{pages_id}.img"] = want.get(f"pages-{pages_id}.img", 0) + size
    return want


def dump_argv(container_id: str, img: str, *, root: str, leave_running: bool = False,
              hold: tuple[str, int] | None = None) -> list[str | int]:
    """argv that checkpoints the container's processes into `img` (CRIU images, 0600, and
    their MANIFEST). With `hold` (the operation id and the container's pid), the dump keeps
    the processes frozen once the images are complete, in a process of its own on the host,
    and the argv returns then: `release` later commits (they die) or aborts (they resume)."""
    work = f"{os.path.dirname(img)}/criu-work"
    argv: list[str | int] = ["bash", "-c", _DUMP, "dump", root, img, work, int(leave_running), container_id]
    if hold is None:
        return criu_argv(argv)
    h = hold_dir(hold[0])
    return ["env", f"POST_DUMP={_POST_DUMP}", "bash", "-c", _HELD, "held", h, hold[1], img,
            *criu_argv(argv, [*MIGRATE_CRIU_OPTS, f"action-script {h}/post-dump"])]


def dump(host: Host, container_id: str, img: str, *, root: str, leave_running: bool = False,
         hold: tuple[str, int] | None = None) -> None:
    r = host.run(dump_argv(container_id, img, root=root, leave_running=leave_running, hold=hold),
                 check=False, timeout=3600)
    try:
        criu_result(host, f"checkpoint of {container_id[:12]}", r)
    except MigratorError:
        if hold:
            release(host, hold[0], commit=False)
        repair(host, container_id)  # a dump that died part-way may have left it frozen and cut off
        raise


def release(host: Host, op: str, *, commit: bool) -> int | None:
    """End the held dump of operation `op`: commit (CRIU kills the frozen processes) or not
    (CRIU resumes them). Returns runc's status, None when no dump was held there. Safe to
    call again: a dump that ended keeps its status."""
    r = host.run(["bash", "-c", _RELEASE, "release", hold_dir(op), "commit" if commit else "abort"],
                 check=False, timeout=90)
    if not r.ok:
        raise MigratorError(f"{host.name}: {r.stderr.strip() or 'releasing the held dump failed'}")
    return int(r.stdout.strip()) if r.stdout.strip().isdigit() else None


def repair(host: Host, container_id: str) -> None:
    """Undo what a dump that died part-way can leave on a container that is still "Up":
    frozen (a frozen process still completes TCP handshakes) and behind CRIU's network lock.
    Both steps are harmless on a healthy container."""
    info = Engine(host).inspect(container_id)
    if info and info["State"].get("Running"):
        thaw(host, container_id)
        unlock_network(host, int(info["State"].get("Pid") or 0))


# sample PID: how well the process's memory compresses, and how fast: 2 MiB at four places
# in its largest anonymous writable mapping, read live (before any freeze).
_SAMPLE = r"""
pid=$1 best=0 start=0
while read -r range perms _ _ _ path; do
  [[ $perms == rw* && -z $path ]] || continue
  s=$((16#${range%-*})) e=$((16#${range#*-}))
  (( e - s > best )) && { best=$((e - s)); start=$s; }
done < "/proc/$pid/maps"
(( best >= 4194304 )) || exit 0
chunks() {
  for q in 1 3 5 7; do
    dd if="/proc/$pid/mem" bs=1M iflag=skip_bytes,count_bytes skip=$(( start + best * q / 8 / 4096 * 4096 )) \
       count=$(( best / 4 < 2097152 ? best / 4 : 2097152 )) status=none
  done
}
s=$(date +%s%N); packed=$(chunks | zstd -1 -q -c | wc -c); e=$(date +%s%N)
echo "$(chunks | wc -c) $packed $(( (e - s) / 1000 ))"
"""


def memory_sample(host: Host, pid: int) -> tuple[int, int, float] | None:
    """(raw bytes, compressed bytes, seconds) of a sample of the process's memory, or None."""
    r = host.run(["bash", "-c", _SAMPLE, "sample", pid], check=False)
    parts = r.stdout.split()
    if r.ok and len(parts) == 3 and all(p.isdigit() for p in parts) and int(parts[0]) > 0:
        return int(parts[0]), int(parts[1]), int(parts[2]) / 1e6
    return None


def start_from_images(host: Host, engine: Engine, container_id: str, img: str, name: str,
                      options: list[str] | None = None, *, verify: bool = False, ports: list[int] | None = None,
                      wait: int = 30, pages: dict[str, int] | None = None, action: bool = True,
                      published: list[int] | None = None) -> None:
    """`docker start --checkpoint` from the CRIU images in `img`, without copying the pages;
    with `verify`, only if they match their MANIFEST, and the pages files the sizes in
    `pages` (expected_pages); with `ports`, returns once the container accepts connections
    on them (fails after `wait` s). With `action`, CRIU runs _RESTORE_ACTION: clients are
    refused, not dropped, while it restores, and from the `published` host ports (TCP) while
    Docker sets the container up."""
    cpdir = checkpoint_dir(engine, container_id, name)
    sizes = " ".join(f"{f}:{n}" for f, n in sorted((pages or {}).items()))
    path = f"{workdir(name)}/restore-action" if action else ""
    opts = [*(MIGRATE_CRIU_OPTS if options is None else options), *([f"action-script {path}"] if action else [])]
    criu_run(host, f"restore of {container_id[:12]}",
             ["env", f"RESTORE_ACTION={_RESTORE_ACTION if action else ''}", "bash", "-c", _PLACE_AND_START, "place",
              img, cpdir, name, container_id, int(verify), wait, sizes, path, " ".join(map(str, published or [])),
              *(ports or [])], opts)


def thaw(host: Host, container_id: str) -> None:
    """Resume a container a dead CRIU left frozen (runc's freezer); harmless when running."""
    root = runtime_root(host, container_id)
    if root:
        host.run(["runc", "--root", root, "resume", container_id], check=False)


def unlock_network(host: Host, pid: int) -> bool:
    """Remove a network lock CRIU left in the container's netns (a failed dump leaves the
    container "Up" but cut off). Returns True when one was found."""
    if pid <= 0:
        return False
    script = (
        'found=1; for t in iptables ip6tables; do '
        'if nsenter -t "$1" -n "$t" -w -S CRIU >/dev/null 2>&1; then found=0; '
        'nsenter -t "$1" -n "$t" -w -D INPUT -j CRIU; nsenter -t "$1" -n "$t" -w -D OUTPUT -j CRIU; '
        'nsenter -t "$1" -n "$t" -w -F CRIU; nsenter -t "$1" -n "$t" -w -X CRIU; fi; done; exit $found'
    )
    found = host.run(["bash", "-c", script, "_", pid], check=False).ok
    if found:
        log.warning("%s: removed CRIU's leftover network lock in pid %d's namespace", host.name, pid)
    return found


def _accepts(host: Host, info: dict, port: int) -> bool:
    """A TCP connect from the host to the container's own address (a leftover network lock
    fails this); host- or none-networked containers are probed inside their namespace."""
    argv: list[str | int] = ["bash", "-c", _ACCEPTS + 'accepts "$@"', "_", Spec(info).pid,
                             _container_ip(info) or "", port]
    try:
        return host.run(argv, check=False, timeout=10).ok
    except CommandError:
        return False


def open_ports(host: Host, engine: Engine, name: str) -> list[int]:
    """The container's TCP ports that accept connections now: what must answer again."""
    info = engine.inspect(name)
    if not info or not info["State"].get("Running"):
        return []
    return [p for p in Spec(info).container_tcp_ports() if _accepts(host, info, p)]


def answers(host: Host, engine: Engine, name: str, ports: list[int], timeout: float = 10.0) -> bool:
    """The container runs and accepts connections on `ports` (those that did before)."""

    def check() -> bool:
        info = engine.inspect(name)
        if not info or not info["State"].get("Running"):
            return False
        return all(_accepts(host, info, p) for p in ports)

    return wait_for(check, timeout, 0.05)


def _container_ip(info: dict) -> str | None:
    nets = (info.get("NetworkSettings") or {}).get("Networks") or {}
    for ep in nets.values():
        if ep.get("IPAddress"):
            return str(ep["IPAddress"])
    return None


def manifest(host: Host, directory: str) -> None:
    """Write MANIFEST: a CRC of every file (cheap at GB/s; SSH already authenticates the
    bytes, this catches what breaks on either disk or in our own copying)."""
    host.run(["bash", "-c", _MANIFEST + 'manifest "$1" > "$1/MANIFEST"', "_", directory])


def verify_argv(directory: str) -> list[str]:
    """argv that fails unless directory matches its MANIFEST (run on the receiving host)."""
    return ["bash", "-c", _MANIFEST + 'verify_manifest "$1"', "_", directory]


def verify_manifest(host: Host, directory: str) -> None:
    r = host.run(verify_argv(directory), check=False)
    if not r.ok:
        raise MigratorError(f"{host.name}: {r.stderr.strip() or 'checksum check of ' + directory + ' failed'}")


def runtime_stopped(host: Host, container_id: str) -> bool:
    """Without dockerd, ask runc itself: True when the container has no live process (or
    after killing it). Docker keeps its runc state under /run/docker/runtime-*/moby. A
    restore that was under way when dockerd died goes on without it, and runc knows the
    container only once it is done: wait for it first (False if it does not end)."""
    script = (
        'for _ in $(seq 120); do pgrep -f -- "[r]unc .*restore .*$1" >/dev/null || break; sleep 0.5; done; '
        'pgrep -f -- "[r]unc .*restore .*$1" >/dev/null && exit 2; '
        'st=1; for root in /run/docker/runtime-*/moby; do [ -d "$root" ] || continue; '
        'if runc --root "$root" state "$1" >/dev/null 2>&1; then '
        'runc --root "$root" kill "$1" KILL 2>/dev/null; sleep 0.5; '
        'runc --root "$root" delete --force "$1" >/dev/null 2>&1 || st=2; fi; done; '
        '[ "$st" = 1 ]'
    )
    try:
        return host.run(["bash", "-c", script, "_", container_id], check=False, timeout=120).ok
    except MigratorError:
        return False
