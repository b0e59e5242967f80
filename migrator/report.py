"""What a migration tells as it goes (events) and reports at its end (phases, downtime,
what became of its connections and hooks), as data: the CLI, fleet operations and the
benchmark render or sum them."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

PHASES = ["resolve", "preflight", "presync", "freeze", "transfer", "filesystem", "restore", "verify",
          "cleanup"]


@dataclass
class Event:
    kind: str  # "phase" (start), "done" (phase end), "bytes", "info", "warn"
    phase: str
    message: str = ""
    bytes: int = 0


Events = Callable[[Event], None]


@dataclass
class PhaseReport:
    name: str
    seconds: float
    bytes: int = 0


@dataclass
class MigrationReport:
    migration_id: str
    container: str
    source: str
    target: str
    status: str = "failed"  # migrated | rolled_back | failed | planned
    downtime_s: float = 0.0
    total_s: float = 0.0
    bytes_sent: int = 0
    transfer: str = ""  # direct | relay
    phases: list[PhaseReport] = field(default_factory=list)
    preflight: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    volumes_left: list[str] = field(default_factory=list)  # named volumes still on the source
    connections: str = ""  # kept (restored as they were: its address moved with it) | closed
    sockets_restored: int = 0  # connections restored on the target (kept ones)
    hooks: list[dict[str, Any]] = field(default_factory=list)  # what the --hook commands did (hooks.HookRun)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def new_id() -> str:
    return time.strftime("mig-%Y%m%d-%H%M%S-", time.gmtime()) + secrets.token_hex(3)
