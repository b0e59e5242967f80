"""The controller's journal: one file per unfinished operation, rewritten at every phase,
so that `migrator recover` can finish or roll back what a killed controller left.

It lives on the controller (`$MIGRATOR_STATE_DIR`, else `$XDG_STATE_HOME/migrator`, else
~/.local/state/migrator), 0600 files in a 0700 directory.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


def state_dir() -> Path:
    if os.environ.get("MIGRATOR_STATE_DIR"):
        return Path(os.environ["MIGRATOR_STATE_DIR"])
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return base / "migrator"


def journal_dir() -> Path:
    d = state_dir() / "journal"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    return d

PENDING_CLEANUP = "cleanup-pending"  # phase of a rolled-back migration (the source runs) with leftovers to remove


@dataclass
class Entry:
    mid: str
    container: str
    container_id: str
    source: str
    target: str
    inventory: str
    keep_source: bool = False
    phase: str = "resolve"
    tid: str = ""
    ports: list[int] = field(default_factory=list)
    target_started: bool = False  # the target copy was (being) started: it may run
    src_img: str = ""  # the source's CRIU images (a rollback restores from them if its processes are gone)
    dst_img: str = ""
    # What was made or changed, in order, so it can be undone by anyone who reads this.
    undo: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    pid: int = field(default_factory=os.getpid)

    @property
    def path(self) -> Path:
        return journal_dir() / f"{self.mid}.json"

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(self), f)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    def alive(self) -> bool:
        """Is the process that wrote it still running (on this controller)?"""
        if self.pid == os.getpid():
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def load_all() -> list[Entry]:
    out = []
    for p in sorted(journal_dir().glob("*.json")):
        try:
            out.append(Entry(**json.loads(p.read_text())))
        except (ValueError, TypeError):
            continue
    return out


def unfinished(source: str, container: str) -> Entry | None:
    """An unfinished operation on this container (by name or id) whose process is gone."""
    for e in load_all():
        mine = container == e.container or (len(container) >= 12 and e.container_id.startswith(container))
        if e.source == source and mine and not e.alive() and e.phase != PENDING_CLEANUP:
            return e
    return None
