"""`migrator recover`: finish or roll back the migrations whose controller died."""

from __future__ import annotations

from dataclasses import dataclass, field

from . import journal
from .errors import MigratorError
from .inventory import Inventory
from .probes import answers
from .rollback import Sides
from .transport import Host


@dataclass
class Recovered:
    migration_id: str
    container: str
    source: str
    target: str
    phase: str
    outcome: str  # completed | rolled_back | failed | running
    notes: list[str] = field(default_factory=list)


def recover(inv: Inventory, only: str | None = None) -> list[Recovered]:
    """Forward when the target copy was already started and answers, otherwise back to the
    source. Also removes what a rolled-back migration could not remove while a host was
    unreachable. An entry stays in the journal until nothing of it is left, so running this
    again retries what failed."""
    out = []
    for entry in journal.load_all():
        if only and only not in (entry.migration_id, entry.container):
            continue
        result = Recovered(entry.migration_id, entry.container, entry.source, entry.target, entry.phase, "failed")
        if entry.phase != journal.PENDING_CLEANUP and entry.alive():
            result.outcome = "running"
            result.notes.append(f"its controller (pid {entry.pid}) still runs")
            out.append(result)
            continue
        try:
            with Host(inv.host(entry.source)) as src, Host(inv.host(entry.target)) as dst:
                sides = Sides(entry, src, dst)
                if entry.phase == journal.PENDING_CLEANUP:
                    safe, left = sides.remove_target_copy()
                    result.notes += left + (sides.undo_and_clean() if safe else [])
                    result.outcome = "rolled_back"
                else:
                    forward = False
                    if entry.phase in ("restore", "verify", "cleanup") and entry.target_id:
                        info = sides.target_engine.inspect(entry.target_id)
                        forward = bool(info and info["State"].get("Running")) and answers(
                            dst, sides.target_engine, entry.target_id, entry.ports, timeout=10)
                    if forward:
                        entry.phase = "cleanup"
                        result.notes += sides.finish()
                        result.outcome = "completed"
                    else:
                        back, left = sides.roll_back()
                        result.notes += left
                        result.outcome = "rolled_back" if back else "failed"
                        if back:
                            entry.phase = journal.PENDING_CLEANUP
        except MigratorError as ex:
            result.notes.append(str(ex))
        if result.outcome in ("completed", "rolled_back") and not result.notes:
            entry.remove()
        else:
            entry.save()
        out.append(result)
    return out
