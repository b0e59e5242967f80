"""Processes on this machine, for the lab: run a command, find what runs in a host's
namespaces or cgroups, stop it by pid."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from pathlib import Path

from ..controller import alive
from ..errors import LabError
from ..transport import wait_for

log = logging.getLogger(__name__)


def run(argv: list[str], check: bool = True, **kw: object) -> subprocess.CompletedProcess[str]:
    log.debug("lab$ %s", " ".join(argv))
    kw.setdefault("text", True)
    r = subprocess.run(argv, capture_output=True, **kw)  # type: ignore[call-overload]
    if check and r.returncode != 0:
        msg = r.stderr or r.stdout
        msg = msg.decode(errors="replace") if isinstance(msg, bytes) else msg
        raise LabError(f"`{' '.join(argv)}` failed: {msg.strip()[-400:]}")
    return r  # type: ignore[no-any-return]


def read_pid(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return 0


def all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def ns_id(pid: int, kind: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def in_mount_ns(pid: int) -> list[int]:
    """Every process in the mount namespace of `pid` (a lab host's anchor)."""
    mnt = ns_id(pid, "mnt")
    return [p for p in all_pids() if mnt and ns_id(p, "mnt") == mnt]


def cgroup_pids(parent: str) -> set[int]:
    pids: set[int] = set()
    base = Path("/sys/fs/cgroup")
    for ctl in base.iterdir() if base.exists() else []:
        top = ctl / parent
        if top.is_dir():
            for procs in top.rglob("cgroup.procs"):
                try:
                    pids |= {int(x) for x in procs.read_text().split()}
                except OSError:
                    pass
    return pids


def remove_cgroups(parent: str) -> None:
    base = Path("/sys/fs/cgroup")
    for ctl in base.iterdir() if base.exists() else []:
        top = ctl / parent
        if top.is_dir():
            for sub in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                try:
                    sub.rmdir()
                except OSError:
                    pass
            try:
                top.rmdir()
            except OSError:
                pass


def terminate(pids: list[int], grace: float) -> None:
    """SIGTERM, and SIGKILL what is still alive after `grace` seconds; waits until gone."""
    live = [p for p in pids if alive(p)]
    for p in live:
        try:
            os.kill(p, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(p) for p in live):
        time.sleep(0.1)
    for p in live:
        if alive(p):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
    wait_for(lambda: not any(alive(p) for p in live), 5)
