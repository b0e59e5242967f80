"""The controller's journal: one file per unfinished operation, rewritten at every phase,
so that `migrator recover` can finish or roll back what a killed controller left.

It lives on the controller (`controller.state_dir()`), 0600 files in a 0700 directory.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .controller import alive, atomic_write, state_dir

PENDING_CLEANUP = "cleanup-pending"  # phase of a rolled-back migration (the source runs) with leftovers to remove
CLONE = "clone"  # phase of a clone under way: if its controller dies, only its leftovers are to remove
# Field names of journals written before they were spelled out (still recovered).
_OLD_NAMES = {"mid": "migration_id", "tid": "target_id"}


def journal_dir() -> Path:
    d = state_dir() / "journal"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    return d


@dataclass
class Entry:
    migration_id: str
    container: str
    container_id: str
    source: str
    target: str
    inventory: str
    keep_source: bool = False
    phase: str = "resolve"
    target_id: str = ""  # the container made on the target
    ports: list[int] = field(default_factory=list)
    target_started: bool = False  # the target copy was (being) started: it may run
    src_img: str = ""  # the source's CRIU images (a rollback restores from them if its processes are gone)
    dst_img: str = ""
    # What was made or changed, in order, so it can be undone by anyone who reads this.
    undo: list[dict[str, Any]] = field(default_factory=list)
    group: str = ""  # the unit it moves with (a compose project's move): finished or rolled back together
    keep_connections: bool = False  # dumped with its connections (a rollback restores them so too)
    address_moves: bool = False  # its address (the L2's) goes with it: one host at a time answers for it
    addresses: list[str] = field(default_factory=list)  # those addresses
    started: float = field(default_factory=time.time)
    pid: int = field(default_factory=os.getpid)

    @property
    def path(self) -> Path:
        return journal_dir() / f"{self.migration_id}.json"

    def save(self) -> None:
        atomic_write(self.path, json.dumps(asdict(self)), 0o600, durable=True)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    def alive(self) -> bool:
        """Is the process that wrote it still running (on this controller)?"""
        return self.pid == os.getpid() or alive(self.pid)


def load_all() -> list[Entry]:
    out = []
    for p in sorted(journal_dir().glob("*.json")):
        try:
            fields = json.loads(p.read_text())
            out.append(Entry(**{_OLD_NAMES.get(k, k): v for k, v in fields.items()}))
        except (ValueError, TypeError):
            continue
    return out


def unfinished(source: str, container: str) -> Entry | None:
    """An unfinished operation on this container (by name or id) whose process is gone."""
    for entry in load_all():
        mine = container == entry.container or (len(container) >= 12 and entry.container_id.startswith(container))
        if entry.source == source and mine and not entry.alive() and entry.phase not in (PENDING_CLEANUP, CLONE):
            return entry
    return None
