"""Fleet operations on top of `migrate`: placement, drain, evacuate.

Plan, then act: a plan is data (what goes where, what cannot move and why) that
`--dry-run` prints and that the run then executes. One container's failure never stops
the others; each ends migrated, or rolled back and running on its source.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from . import hosts, store
from .container import Spec
from .engine import Engine
from .errors import MigratorError, PlanError
from .hosts import free_bytes, mem_info
from .inventory import Inventory
from .migrate import Event, Migration
from .preflight import DISK_MARGIN, MEM_MARGIN
from .probes import memory_usage
from .project import ProjectMove, project_of
from .shared import Shared
from .transport import Host

PIN_LABEL = "migrator.pin"
CONSTRAINT_LABEL = "migrator.constraint"
CONSTRAINT_RE = re.compile(r"^\s*([A-Za-z0-9_.-]+)\s*(==|!=)\s*([^,]*?)\s*$")


def parse_constraints(text: str) -> list[tuple[str, str, str]]:
    """`zone==a,size!=small`: every term must hold for a host's inventory labels."""
    out = []
    for term in text.split(","):
        if not term.strip():
            continue
        m = CONSTRAINT_RE.match(term)
        if not m:
            raise MigratorError(f"bad constraint {term!r}",
                                hint="use key==value or key!=value, comma-separated")
        out.append((m[1], m[2], m[3]))
    return out


def satisfies(labels: dict[str, str], constraints: list[tuple[str, str, str]]) -> bool:
    return all((labels.get(k) == v) == (op == "==") for k, op, v in constraints)


@dataclass
class Candidate:
    """A possible target as placement sees it: its facts, and what the plan booked on it."""
    name: str
    labels: dict[str, str]
    usable: bool
    why: str = ""
    mem_available: int = 0
    disk_free: int = 0
    ports: set[tuple[int, str]] = field(default_factory=set)
    planned: int = 0
    planned_mem: int = 0
    planned_disk: int = 0


@dataclass
class Move:
    container: str
    source: str
    target: str | None
    memory: int = 0
    reason: str = ""
    pinned: bool = False
    project: str = ""  # its compose project: moved with the project's other containers, as one unit
    outcome: str = "planned"  # planned | migrated | rolled_back | failed | stays
    error: str | None = None
    report: dict[str, Any] | None = None


@dataclass
class Want:
    """A container placement must find a target for (with the rest of its compose project)."""
    move: Move
    ports: set[tuple[int, str]] = field(default_factory=set)
    constraint: str = ""  # its migrator.constraint label
    also: list[Move] = field(default_factory=list)  # its project's other containers: they go where it goes

    @property
    def moves(self) -> list[Move]:
        return [self.move, *self.also]

    @property
    def memory(self) -> int:
        return sum(m.memory for m in self.moves)


@dataclass
class Plan:
    source: str
    moves: list[Move]
    targets: list[dict[str, Any]]
    seconds: float = 0.0  # how long carrying it out took
    to: list[str] | None = None  # what it was made from: the drain's --to and --select
    select: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        """A plan as `to_dict` (`drain --dry-run --json`) wrote it."""
        try:
            known = {f.name for f in dataclasses.fields(Move)}
            moves = [Move(**{k: v for k, v in m.items() if k in known}) for m in d["moves"]]
            return cls(str(d["source"]), moves, list(d.get("targets") or []), to=d.get("to"), select=d.get("select"))
        except (KeyError, TypeError, AttributeError) as ex:
            raise PlanError(f"not a drain plan (as `drain --dry-run --json` writes one): {ex}") from None

    @property
    def movable(self) -> list[Move]:
        return [m for m in self.moves if m.target]

    def summary(self) -> dict[str, Any]:
        """How many moves ended each way, and the longest downtime of those that moved."""
        counts: dict[str, int] = {}
        for m in self.moves:
            counts[m.outcome] = counts.get(m.outcome, 0) + 1
        downtimes = [float((m.report or {}).get("downtime_s") or 0) for m in self.moves if m.outcome == "migrated"]
        return {"outcomes": counts, "seconds": self.seconds, "max_downtime_s": max(downtimes, default=0.0)}

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "to": self.to, "select": self.select, "moves": [asdict(m) for m in self.moves],
                "targets": self.targets, "summary": self.summary()}


def _why_not(c: Candidate, w: Want, rules: list[tuple[str, str, str]]) -> str | None:
    """Why `w` cannot go to `c` after what the plan booked there, or None when it fits."""
    if not c.usable:
        return c.why
    if not satisfies(c.labels, rules):
        return f"labels do not match {w.constraint}"
    booked = " (after the moves planned there)" if c.planned else ""
    if c.mem_available - c.planned_mem < w.memory * MEM_MARGIN:
        return "not enough memory" + booked
    if c.disk_free - c.planned_disk < w.memory * DISK_MARGIN:
        return "not enough disk" + booked
    if w.ports & c.ports:
        return "port " + ", ".join(f"{p}/{proto}" for p, proto in sorted(w.ports & c.ports)) + " taken"
    return None


def place(wants: list[Want], cands: list[Candidate]) -> None:
    """Give each wanted container a target, or the reason it has none (every candidate's):
    not cordoned, reachable, room for its memory and checkpoint after what the plan already
    booked there, free ports, label rules honoured; the largest first, spread over the
    candidates. A pure function of the facts: no host is asked anything."""
    for w in sorted(wants, key=lambda w: -w.memory):
        try:
            rules = parse_constraints(w.constraint)
        except MigratorError as ex:
            for m in w.moves:
                m.reason = f"label {CONSTRAINT_LABEL}: {ex}"
            continue
        why: dict[str, str] = {}
        fits = []
        for c in cands:
            reason = _why_not(c, w, rules)
            if reason is None:
                fits.append(c)
            else:
                why[c.name] = reason
        if not fits:
            for m in w.moves:
                m.reason = "no target: " + "; ".join(f"{k}: {v}" for k, v in why.items()) if why else "no targets"
            continue
        best = min(fits, key=lambda c: (c.planned, -(c.mem_available - c.planned_mem), c.name))
        for m in w.moves:
            m.target = best.name
        _book(best, w)


def _book(c: Candidate, w: Want) -> None:
    """What moving `w` there takes of candidate c, for the moves planned after it."""
    c.planned += len(w.moves)
    c.planned_mem += w.memory
    c.planned_disk += int(w.memory * DISK_MARGIN)
    c.ports |= w.ports


def still_fits(planned: Plan, moves: list[Move], wants: list[Want], cands: list[Candidate]) -> list[str]:
    """Why a plan made earlier cannot be carried out as it is on the facts of now (as
    `gather` finds them), a line each, or nothing: the containers are the same, and every
    planned move still fits its target (booked as `place` books them)."""
    target = {m.container: m.target for m in planned.moves}
    now = {m.container for m in moves}
    out = [f"{c} no longer runs on {planned.source}" for c in sorted(set(target) - now)]
    out += [f"{c} was not in the plan" for c in sorted(now - set(target))]
    by_name = {c.name: c for c in cands}
    for w in sorted(wants, key=lambda w: -w.memory):
        where = {target.get(m.container) for m in w.moves if m.container in target}
        if not where or where == {None}:
            continue  # not in the plan (said above), or planned to stay
        t = next(iter(where)) if len(where) == 1 else None
        c = by_name.get(t or "")
        try:
            why = ("its containers were planned apart" if t is None else f"{t} is not a target of this drain"
                   if c is None else _why_not(c, w, parse_constraints(w.constraint)))
        except MigratorError as ex:
            why = str(ex)
        if why:
            out.append(f"{w.move.container} cannot go to {t or 'one host'} now: {why}")
        elif c is not None:
            _book(c, w)
    return out


def _candidate(inv: Inventory, name: str) -> Candidate:
    spec = inv.host(name)
    c = Candidate(name, dict(spec.labels), False)
    try:
        with Host(spec) as h:
            engine = Engine(h)
            info = engine.info()
            mark = hosts.cordoned(h)
            if mark is not None:
                c.why = "cordoned"
                return c
            c.mem_available = mem_info(h).get("MemAvailable", 0)
            c.disk_free = free_bytes(h, info.get("DockerRootDir", "/var/lib/docker"))
            c.ports = set(hosts.taken_ports(h, engine))
            c.usable = True
    except MigratorError as ex:
        c.why = f"unreachable: {ex.message}"
    return c


def gather(inv: Inventory, source: str, to: list[str] | None = None,
           select: str | None = None) -> tuple[list[Move], list[Want], list[Candidate]]:
    """The facts a drain of `source` is planned from: its running containers (as moves, the
    pinned ones staying; each unit to place a Want) and each possible target."""
    inv.host(source)
    names = [inv.host(t).name for t in to] if to else [n for n in inv.hosts if n != source]
    names = [n for n in names if n != source]
    with ThreadPoolExecutor(max(1, min(8, len(names)))) as ex:
        cands = list(ex.map(lambda n: _candidate(inv, n), names))
    sel_key, _, sel_val = (select or "").partition("=")
    moves: list[Move] = []
    wants: list[Want] = []
    with Host(inv.host(source)) as h:
        engine = Engine(h)
        specs = []
        for ct in engine.containers():
            info = engine.inspect(ct["Id"])
            if info is None:
                continue
            labels = info["Config"].get("Labels") or {}
            if select and labels.get(sel_key) != sel_val:
                continue
            specs.append(Spec(info))
        memory = memory_usage(h, engine, {spec.id: spec.pid for spec in specs})
    units: dict[str, list[Spec]] = {}  # a compose project's containers are one unit; others each their own
    for spec in specs:
        units.setdefault(project_of(spec) or f"\0{spec.id}", []).append(spec)
    for unit in units.values():
        unit_moves = [Move(spec.name, source, None, memory=memory.get(spec.id, 0), project=project_of(spec))
                      for spec in unit]
        moves += unit_moves
        labels = [spec.inspect["Config"].get("Labels") or {} for spec in unit]
        pinned = [m.container for m, lab in zip(unit_moves, labels, strict=True)
                  if str(lab.get(PIN_LABEL, "")).lower() == "true"]
        if pinned:
            for m in unit_moves:
                m.pinned, m.outcome = True, "stays"
                m.reason = f"pinned ({PIN_LABEL}=true)" if m.container in pinned else \
                    f"its project {m.project} has a pinned container ({', '.join(pinned)})"
            continue
        wants.append(Want(unit_moves[0], {(p, proto) for spec in unit for _ip, p, proto in spec.published_ports()},
                          ",".join(c for lab in labels if (c := lab.get(CONSTRAINT_LABEL, ""))), unit_moves[1:]))
    return moves, wants, cands


def plan_drain(inv: Inventory, source: str, to: list[str] | None = None,
               select: str | None = None) -> Plan:
    """Where each running container of `source` goes (`place`, from the hosts' facts)."""
    moves, wants, cands = gather(inv, source, to, select)
    place(wants, cands)
    targets = [{"name": c.name, "usable": c.usable, "why": c.why, "planned": c.planned} for c in cands]
    return Plan(source, sorted(moves, key=lambda m: -m.memory), targets, to=to, select=select)


def execute(inv: Inventory, plan: Plan, parallel: int = 1,
            events: Callable[[str, Event], None] | None = None, frozen: int = 1, **options: Any) -> list[Move]:
    """Run the plan's moves, at most `parallel` at once and `frozen` of them in their freeze
    window, sharing what is the same for all of them (`Shared`). Every move ends with an
    outcome, told as an "end" event. `options`: each Migration's (bind_mounts,
    remove_source_volumes, connections, hooks)."""
    shared = Shared(frozen)
    t0 = time.monotonic()
    units: dict[str, list[Move]] = {}  # a compose project's moves go together (ProjectMove)
    for m in plan.movable:
        units.setdefault(m.project or f"\0{m.container}", []).append(m)

    def one(unit: list[Move]) -> None:
        first = unit[0]
        assert first.target
        reports: dict[str, Any] = {}
        try:
            if first.project:
                rep: Any = ProjectMove(inv, first.project, first.source, first.target, shared=shared, events=events,
                                       names=[m.container for m in unit], **options).run()
            else:
                rep = Migration(inv, first.container, first.source, first.target, shared=shared,
                                events=(lambda ev: events(first.container, ev)) if events else None, **options).run()
            error = None
        except MigratorError as ex:
            rep, error = ex.report, str(ex)
        for r in getattr(rep, "moves", None) or ([rep] if rep is not None and hasattr(rep, "to_dict") else []):
            reports[r.container] = r.to_dict()
        for m in unit:
            m.report, m.error = reports.get(m.container), error
            m.outcome = "migrated" if error is None else (m.report or {}).get("status") or "failed"
            if events:
                said = (f"in {m.report.get('total_s', 0):.1f} s, downtime {m.report.get('downtime_s', 0):.2f} s"
                        if m.outcome == "migrated" and m.report else m.error or "")
                events(m.container, Event("end", m.outcome, f"{m.source} -> {m.target}: {m.outcome} {said}".rstrip()))

    with ThreadPoolExecutor(max(1, parallel)) as ex:
        list(ex.map(one, units.values()))
    for m in plan.moves:
        if not m.target and not m.pinned:
            m.outcome = "stays"
    plan.seconds = round(time.monotonic() - t0, 3)
    return plan.moves


def drain(inv: Inventory, source: str, *, to: list[str] | None = None, select: str | None = None,
          parallel: int = 1, dry_run: bool = False, frozen: int = 1,
          events: Callable[[str, Event], None] | None = None, reason: str = "drain", planned: Plan | None = None,
          **options: Any) -> Plan:
    """Plan the drain, cordon the host, move. With `planned` (the plan `--dry-run` printed),
    carry out exactly that one, once it is checked against the facts of now: refused,
    naming why, if a move no longer fits its target or the containers changed. `options`:
    each move's (execute)."""
    if planned is not None:
        if planned.source != source:
            raise PlanError(f"the plan is a drain of {planned.source}, not of {source}")
        changed = still_fits(planned, *gather(inv, source, planned.to, planned.select))
        if changed:
            raise PlanError(f"the facts changed since the plan was made: {'; '.join(changed)}",
                            hint=f"see a new plan with `migrator drain {source} --dry-run`")
        plan = planned
    else:
        plan = plan_drain(inv, source, to, select)
    unplaced = [m for m in plan.moves if not m.target and not m.pinned]
    if unplaced and not plan.movable and all(not t["usable"] for t in plan.targets):
        raise PlanError(f"nothing can leave {source}: no usable target ("
                        + "; ".join(f"{t['name']}: {t['why']}" for t in plan.targets) + ")",
                        hint="uncordon or add a host, or pass --to")
    if dry_run:
        return plan
    with Host(inv.host(source)) as h:
        hosts.cordon(h, reason)
    execute(inv, plan, parallel, events, frozen, **options)
    return plan


def drain_ok(plan: Plan) -> bool:
    return all(m.outcome in ("migrated", "stays") and (m.target or m.pinned) for m in plan.moves)


# --- evacuate --------------------------------------------------------------------------------
@dataclass
class Evacuation:
    host: str
    reachable: bool
    plan: Plan | None = None
    restored: list[dict[str, Any]] = field(default_factory=list)
    lost: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "reachable": self.reachable,
                "plan": self.plan.to_dict() if self.plan else None,
                "restored": self.restored, "lost": self.lost, "notes": self.notes}

    @property
    def ok(self) -> bool:
        if self.plan is not None:
            return drain_ok(self.plan)
        return not self.lost


def evacuate(inv: Inventory, host: str, *, parallel: int = 4, dry_run: bool = False,
             events: Callable[[str, Event], None] | None = None) -> Evacuation:
    """A failing host: drain it while it answers; otherwise bring back every container that
    has a replicated checkpoint (`persist --replicate-to`) from its newest replica."""
    spec = inv.host(host)
    status = hosts.probe(spec, timeout=5)
    evacuation = Evacuation(host, status.reachable)
    if status.reachable:
        evacuation.plan = drain(inv, host, parallel=parallel, dry_run=dry_run, events=events, reason="evacuate")
        return evacuation
    newest: dict[str, tuple[store.Stored, str]] = {}
    for name in inv.hosts:
        if name == host:
            continue
        try:
            with Host(inv.host(name), connect_timeout=5) as h:
                for s in store.list_(h):
                    if s.source_host == host and (s.container not in newest or
                                                  s.created > newest[s.container][0].created):
                        newest[s.container] = (s, name)
        except MigratorError:
            continue
    for container, (s, where) in sorted(newest.items()):
        entry: dict[str, Any] = {"container": container, "host": where, "checkpoint": s.name,
                                 "taken": s.created}
        if dry_run:
            entry["outcome"] = "planned"
        else:
            try:
                with Host(inv.host(where)) as h:
                    store.restore(h, container, s.name)
                entry["outcome"] = "restored"
            except MigratorError as ex:
                entry["outcome"] = "failed"
                evacuation.lost.append({"container": container, "why": str(ex)})
        evacuation.restored.append(entry)
    evacuation.notes.append(f"{host} is unreachable: containers of {host} without a replicated checkpoint "
                    "(`migrator persist --replicate-to`) are not known elsewhere and cannot be recovered; "
                    f"if {host} comes back, stop its copies of the restored containers before it serves")
    return evacuation
