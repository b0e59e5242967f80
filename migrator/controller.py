"""The machine migrator runs on (the controller): who it is, its processes, its files."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def controller_id() -> str:
    """This controller, across machines and reboots: a lock it left names it."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = "?"
    return f"{socket.gethostname()}:{boot}"


def alive(pid: int) -> bool:
    """Is process `pid` of this machine running? A zombie is not; one we may not signal is."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return True


def atomic_write(path: Path, data: str | bytes, mode: int = 0o600, *, durable: bool = False) -> None:
    """Write `path` whole or not at all (a temporary beside it, renamed over it), with
    `mode`; with `durable`, on disk before it replaces the old one."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def state_dir() -> Path:
    """The controller's own state: `$MIGRATOR_STATE_DIR`, else `$XDG_STATE_HOME/migrator`,
    else ~/.local/state/migrator."""
    if os.environ.get("MIGRATOR_STATE_DIR"):
        return Path(os.environ["MIGRATOR_STATE_DIR"])
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return base / "migrator"
