"""Locks on a host: one operation per container at a time, and runc.conf's, held for the
length of one CRIU command.

Both are host-side `mkdir` locks (`lib.sh`'s lock_take). They differ in who can tell that
an owner is gone: a container lock is held by a process of a controller, so only that
controller can (`_stale`); the runc.conf lock by a process on the host (criu-run.sh).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from . import hostscripts
from .controller import alive, controller_id
from .errors import CheckpointError, LockedError, tail
from .layout import RUNC_CONF, RUNC_LOCK, lock_path
from .transport import CommandResult, Host

log = logging.getLogger(__name__)

# A move to another host: established connections are restored closed (clients reconnect
# to the new address); connections still being set up are skipped.
MIGRATE_CRIU_OPTS = ["tcp-close", "skip-in-flight"]
# ... or, where the address moves with the container (networks.MOVING), restored as they
# were (the same address on the target): clients go on on the same connection.
KEEP_CRIU_OPTS = ["tcp-established", "skip-in-flight"]


def connection_opts(keep: bool) -> list[str]:
    return KEEP_CRIU_OPTS if keep else MIGRATE_CRIU_OPTS
LOCK_WAIT_S = 120


def owner(**what: Any) -> dict[str, Any]:
    """What a lock says of its owner: the operation, and this process of this controller."""
    return {**what, "controller": controller_id(), "pid": os.getpid(), "since": time.time()}


def _stale(owner_text: str) -> bool:
    """A lock left by a dead process of this same controller (it was killed): safe to take."""
    try:
        o = json.loads(owner_text)
    except ValueError:
        return False
    if not isinstance(o, dict) or o.get("controller") != controller_id() or not isinstance(o.get("pid"), int):
        return False
    return o["pid"] != os.getpid() and not alive(o["pid"])


def _take(host: Host, path: str, who: str, taking_over: str | None = None) -> CommandResult:
    extra = ["--from", taking_over] if taking_over is not None else []
    return host.run(hostscripts.argv(host, "lock.sh", "take", "--dir", path, "--owner", who, *extra), check=False)


def take_lock(host: Host, container_id: str, who: dict[str, Any],
              on_stale: Callable[[], None] | None = None) -> None:
    """One operation per container at a time, held on the container's own host. A lock
    whose owner was a process of this controller that no longer exists is taken over
    (after `on_stale` repairs what that process left half done)."""
    path, me = lock_path(container_id), json.dumps(who)
    r = _take(host, path, me)
    if not r.ok and _stale(r.stdout.strip()):
        log.warning("%s: taking over %s from a dead process of this controller", host.name, path)
        if on_stale:
            on_stale()
        r = _take(host, path, me, taking_over=r.stdout.strip())
    if not r.ok:
        raise LockedError(f"{host.name}: container {who.get('container', container_id)} is locked by "
                          f"another operation: {r.stdout.strip() or 'unknown owner'}",
                          hint=f"if none runs (its controller died), remove {path} on {host.name}")


def release_lock(host: Host, container_id: str) -> None:
    host.run(hostscripts.argv(host, "lock.sh", "release", "--dir", lock_path(container_id)), check=False)


def criu_argv(host: Host, argv: list[str | int], options: list[str] | None = None) -> list[str | int]:
    """argv that runs argv with our CRIU options in runc.conf for exactly its duration."""
    opts = MIGRATE_CRIU_OPTS if options is None else options
    return hostscripts.argv(host, "criu-run.sh", "--lock", RUNC_LOCK, "--conf", RUNC_CONF, "--wait", LOCK_WAIT_S,
                            *[w for o in opts for w in ("--opt", o)], "--", *argv)


def criu_result(host: Host, what: str, r: CommandResult) -> str:
    """The output of a criu_argv command, or the error it makes."""
    if r.rc == 75:
        raise LockedError(f"{host.name}: {r.stderr.strip()}", hint=f"if nothing runs there, remove {RUNC_LOCK}")
    if not r.ok:
        # CRIU's Error lines (up to five) and where its log is kept: criu_failed in lib.sh
        raise CheckpointError(f"{host.name}: {what} failed: {tail(r.stderr, 6, 1200)}")
    return r.stdout


def criu_run(host: Host, what: str, argv: list[str | int], options: list[str] | None = None,
             timeout: float | None = 3600) -> str:
    """Run argv on host with our CRIU options in runc.conf for exactly its duration."""
    return criu_result(host, what, host.run(criu_argv(host, argv, options), check=False, timeout=timeout))
