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


FORWARD_PHASES = ("restore", "verify", "cleanup")


def _forward(entry: journal.Entry, sides: Sides) -> bool:
    """Can it go forward: its target copy was started, runs and answers."""
    if entry.phase not in FORWARD_PHASES or not entry.target_id:
        return False
    info = sides.target_engine.inspect(entry.target_id)
    return bool(info and info["State"].get("Running")) and answers(
        sides.dst, sides.target_engine, entry.target_id, entry.ports, timeout=10)


def recover(inv: Inventory, only: str | None = None) -> list[Recovered]:
    """Forward when the target copy was already started and answers, otherwise back to the
    source. The members of one unit (a compose project's move, `Entry.group`) go the same
    way: forward once one of them was committed (in cleanup) or all of them can, else all
    back. Also removes what a rolled-back migration could not remove while a host was
    unreachable. An entry stays in the journal until nothing of it is left, so running this
    again retries what failed."""
    out: list[Recovered] = []
    todo: list[tuple[journal.Entry, Recovered, Sides]] = []
    hosts: list[Host] = []
    try:
        for entry in journal.load_all():
            if only and only not in (entry.migration_id, entry.container, entry.group):
                continue
            result = Recovered(entry.migration_id, entry.container, entry.source, entry.target, entry.phase,
                               "failed")
            out.append(result)
            if entry.phase != journal.PENDING_CLEANUP and entry.alive():
                result.outcome = "running"
                result.notes.append(f"its controller (pid {entry.pid}) still runs")
                continue
            if entry.phase == journal.CLONE:  # the copy runs or it does not: what is left is to remove
                entry.phase = journal.PENDING_CLEANUP
            try:
                src, dst = Host(inv.host(entry.source)), Host(inv.host(entry.target))
            except MigratorError as ex:  # a host no longer in the inventory
                result.notes.append(str(ex))
                continue
            hosts += [src, dst]
            todo.append((entry, result, Sides(entry, src, dst)))
        forward: dict[str, bool] = {}
        for entry, result, sides in todo:
            if entry.phase == journal.PENDING_CLEANUP:
                continue
            try:
                forward[entry.migration_id] = _forward(entry, sides)
            except MigratorError as ex:
                forward[entry.migration_id] = False
                result.notes.append(str(ex))
        for group in {e.group for e, _, _ in todo if e.group}:
            members = [e for e, _, _ in todo if e.group == group and e.phase != journal.PENDING_CLEANUP]
            back = len(members) < sum(e.group == group for e, _, _ in todo)  # one was rolled back
            together = any(e.phase == "cleanup" for e in members) or (
                not back and all(forward[e.migration_id] for e in members))
            for e in members:
                forward[e.migration_id] = together and forward[e.migration_id]
        for entry, result, sides in todo:
            _act(entry, result, sides, forward.get(entry.migration_id, False))
    finally:
        for h in hosts:
            h.close()
    return out


def _act(entry: journal.Entry, result: Recovered, sides: Sides, forward: bool) -> None:
    try:
        if entry.phase == journal.PENDING_CLEANUP:
            safe, left = sides.remove_target_copy()
            result.notes += left + (sides.undo_and_clean() if safe else [])
            result.outcome = "rolled_back"
        elif forward:
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
