"""CRIU through Docker on one host: dump, restore, and what surrounds them.

Docker 20.10 passes no CRIU options per container, but runc reads /etc/criu/runc.conf for
every dump and restore on the host. Established TCP connections and in-flight connects make
a stock dump fail, so for the window of one dump or restore we write our options there
(under a host-wide lock) and put the file back exactly as it was.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .container import Spec
from .engine import Engine
from .errors import CommandError, LockedError, MigratorError
from .transport import Host, wait_for

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
    host.run(["bash", "-c", 'umask 077; mkdir -p "$1" && chmod 0700 "$1" "$(dirname "$1")"', "_", d])
    return d


def remove_workdir(host: Host, mid: str) -> None:
    host.run(["rm", "-rf", "--one-file-system", workdir(mid)], check=False)


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
    root = engine.info().get("DockerRootDir", "/var/lib/docker")
    return f"{root}/containers/{container_id}/checkpoints/{name}"


RUNC_LOCK = f"{STATE_DIR}/locks/runc-conf"
# Put runc.conf back as it was: the saved copy, or no file when there was none. A run that
# died before saving anything changed nothing, and this then changes nothing either.
_PUT_BACK = ('if [ -e "$2/runc.conf.orig" ]; then mv "$2/runc.conf.orig" "$1"; '
             'elif [ -e "$2/runc.conf.absent" ]; then rm -f "$1"; fi')


@contextlib.contextmanager
def criu_options(host: Host, op: str, options: list[str]) -> Iterator[None]:
    """Hold the host's runc.conf with `options` added for the duration of the block."""
    lock = RUNC_LOCK

    def put_back() -> None:
        host.run(["bash", "-c", _PUT_BACK, "_", RUNC_CONF, lock], check=False)

    if not wait_for(lambda: _try_lock(host, lock, owner(op=op), put_back), LOCK_WAIT_S, 0.2):
        raise LockedError(f"{host.name}: {RUNC_CONF} is held by another operation "
                          f"({_lock_owner(host, lock)})",
                          hint=f"if none runs, put {lock}/runc.conf.orig back and remove {lock} "
                          f"on {host.name}")
    try:
        host.run(["bash", "-c",
                  'if [ -e "$1" ]; then cp -p "$1" "$2/runc.conf.orig"; else : > "$2/runc.conf.absent"; fi; '
                  'mkdir -p "$(dirname "$1")"; '
                  '{ [ ! -e "$2/runc.conf.orig" ] || cat "$2/runc.conf.orig"; printf "%s\\n" "${@:3}"; } '
                  '> "$1.new" && mv "$1.new" "$1"',
                  "_", RUNC_CONF, lock, *options])
        yield
    finally:
        put_back()
        host.run(["rm", "-rf", lock], check=False)


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
    ip = _container_ip(info)
    if ip is None:
        argv: list[str | int] = ["nsenter", "-t", Spec(info).pid, "-n", "bash", "-c",
                                 'exec 3<>"/dev/tcp/127.0.0.1/$1"', "_", port]
    else:
        argv = ["bash", "-c", 'exec 3<>"/dev/tcp/$1/$2"', "_", ip, port]
    try:
        return host.run(["timeout", "2", *argv], check=False, timeout=10).ok
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
    """Write MANIFEST: a checksum of every file in directory, for the receiving side."""
    host.run(["bash", "-c", 'cd "$1" && find . -type f ! -name MANIFEST -print0 | sort -z | '
              'xargs -0 -r b2sum > MANIFEST', "_", directory])


def verify_manifest(host: Host, directory: str) -> None:
    r = host.run(["bash", "-c", 'cd "$1" && b2sum --quiet --strict -c MANIFEST', "_", directory],
                 check=False)
    if not r.ok:
        raise MigratorError(f"{host.name}: checkpoint in {directory} does not match its checksums: "
                            f"{(r.stdout + r.stderr).strip()[-300:]}")


def runtime_stopped(host: Host, container_id: str) -> bool:
    """Without dockerd, ask runc itself: True when the container has no live process (or
    after killing it). Docker keeps its runc state under /run/docker/runtime-*/moby."""
    script = (
        'st=1; for root in /run/docker/runtime-*/moby; do [ -d "$root" ] || continue; '
        'if runc --root "$root" state "$1" >/dev/null 2>&1; then '
        'runc --root "$root" kill "$1" KILL 2>/dev/null; sleep 0.5; '
        'runc --root "$root" delete --force "$1" >/dev/null 2>&1 || st=2; fi; done; '
        '[ "$st" = 1 ]'
    )
    try:
        return host.run(["bash", "-c", script, "_", container_id], check=False, timeout=60).ok
    except MigratorError:
        return False
