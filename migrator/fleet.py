"""Fleet operations on top of `migrate`: placement, drain, evacuate.

Plan, then act: a plan is data (what goes where, what cannot move and why) that
`--dry-run` prints and that the run then executes. One container's failure never stops
the others; each ends migrated, or rolled back and running on its source.
"""

from __future__ import annotations

import re
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
    name: str
    labels: dict[str, str]
    usable: bool
    why: str = ""
    mem_available: int = 0
    disk_free: int = 0
    ports: set[tuple[int, str]] = field(default_factory=set)
    planned: int = 0
    planned_mem: int = 0


@dataclass
class Move:
    container: str
    source: str
    target: str | None
    memory: int = 0
    reason: str = ""
    pinned: bool = False
    outcome: str = "planned"  # planned | migrated | rolled_back | failed | stays
    error: str | None = None
    report: dict[str, Any] | None = None


@dataclass
class Plan:
    source: str
    moves: list[Move]
    targets: list[dict[str, Any]]

    @property
    def movable(self) -> list[Move]:
        return [m for m in self.moves if m.target]

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "moves": [asdict(m) for m in self.moves], "targets": self.targets}


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


def plan_drain(inv: Inventory, source: str, to: list[str] | None = None,
               select: str | None = None) -> Plan:
    """Where each running container of `source` goes: not cordoned, reachable, room for its
    memory and checkpoint, free ports, label rules honoured, spread over the targets."""
    inv.host(source)
    names = [inv.host(t).name for t in to] if to else [n for n in inv.hosts if n != source]
    names = [n for n in names if n != source]
    with ThreadPoolExecutor(max(1, min(8, len(names)))) as ex:
        cands = list(ex.map(lambda n: _candidate(inv, n), names))
    sel_key, _, sel_val = (select or "").partition("=")
    moves: list[tuple[Move, Spec]] = []
    with Host(inv.host(source)) as h:
        engine = Engine(h)
        for ct in engine.containers():
            info = engine.inspect(ct["Id"])
            if info is None:
                continue
            spec = Spec(info)
            labels = info["Config"].get("Labels") or {}
            if select and labels.get(sel_key) != sel_val:
                continue
            mem = int((engine.stats(spec.id).get("memory_stats") or {}).get("usage") or 0)
            m = Move(spec.name, source, None, memory=mem)
            if str(labels.get(PIN_LABEL, "")).lower() == "true":
                m.pinned, m.outcome, m.reason = True, "stays", f"pinned ({PIN_LABEL}=true)"
            moves.append((m, spec))
    for m, spec in sorted(moves, key=lambda x: -x[0].memory):
        if m.pinned:
            continue
        labels = spec.inspect["Config"].get("Labels") or {}
        try:
            rules = parse_constraints(labels.get(CONSTRAINT_LABEL, ""))
        except MigratorError as ex:
            m.reason = f"label {CONSTRAINT_LABEL}: {ex}"
            continue
        ports = {(p, proto) for _ip, p, proto in spec.published_ports()}
        why: dict[str, str] = {}
        fits = []
        for c in cands:
            if not c.usable:
                why[c.name] = c.why
            elif not satisfies(c.labels, rules):
                why[c.name] = f"labels do not match {labels[CONSTRAINT_LABEL]}"
            elif c.mem_available - c.planned_mem < m.memory * MEM_MARGIN:
                why[c.name] = "not enough memory"
            elif c.disk_free < m.memory * DISK_MARGIN:
                why[c.name] = "not enough disk"
            elif ports & c.ports:
                why[c.name] = "port " + ", ".join(f"{p}/{proto}" for p, proto in sorted(ports & c.ports)) + " taken"
            else:
                fits.append(c)
        if not fits:
            m.reason = "no target: " + "; ".join(f"{k}: {v}" for k, v in why.items()) if why else "no targets"
            continue
        best = min(fits, key=lambda c: (c.planned, -(c.mem_available - c.planned_mem), c.name))
        m.target = best.name
        best.planned += 1
        best.planned_mem += m.memory
        best.ports |= ports
    targets = [{"name": c.name, "usable": c.usable, "why": c.why, "planned": c.planned} for c in cands]
    return Plan(source, [m for m, _ in moves], targets)


def execute(inv: Inventory, plan: Plan, parallel: int = 1,
            events: Callable[[str, Event], None] | None = None) -> list[Move]:
    """Run the plan's moves, at most `parallel` at once. Every move ends with an outcome."""

    def one(m: Move) -> Move:
        assert m.target
        try:
            mig = Migration(inv, m.container, m.source, m.target,
                            events=(lambda evacuation: events(m.container, evacuation)) if events else None)
            m.report = mig.run().to_dict()
            m.outcome = "migrated"
        except MigratorError as ex:
            m.error = str(ex)
            rep = ex.report
            m.report = rep.to_dict() if rep is not None and hasattr(rep, "to_dict") else None
            m.outcome = (m.report or {}).get("status") or "failed"
        return m

    with ThreadPoolExecutor(max(1, parallel)) as ex:
        list(ex.map(one, plan.movable))
    for m in plan.moves:
        if not m.target and not m.pinned:
            m.outcome = "stays"
    return plan.moves


def drain(inv: Inventory, source: str, *, to: list[str] | None = None, select: str | None = None,
          parallel: int = 1, dry_run: bool = False,
          events: Callable[[str, Event], None] | None = None, reason: str = "drain") -> Plan:
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
    execute(inv, plan, parallel, events)
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
