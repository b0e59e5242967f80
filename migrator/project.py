"""A compose project moved as one unit: every running container of it, dependencies first,
each source held frozen until the whole project runs on the target; then all commit, or
all roll back.

Compose finds a project's containers by their labels and its network by name (and labels),
so recreating each container with its labels on a network made like the source's is what
makes `docker compose -p NAME ps` list them on the target and their names resolve there.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from .container import Spec, validate_name
from .engine import Engine
from .errors import MigrationFailed, MigratorError, RollbackFailed, internal
from .inventory import Inventory
from .migrate import Event, Migration, MigrationReport
from .shared import Shared
from .transport import Host

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
DEPENDS_LABEL = "com.docker.compose.depends_on"  # "db:service_started:false,cache:..." (compose >= 2.17)


def project_of(spec: Spec) -> str:
    return str((spec.inspect["Config"].get("Labels") or {}).get(PROJECT_LABEL) or "")


def order(specs: list[Spec]) -> list[Spec]:
    """Dependencies before their dependents (compose's own depends_on label); otherwise by
    service and name. A cycle (compose refuses them) keeps the rest in name order."""
    def labels(s: Spec) -> dict[str, str]:
        return dict(s.inspect["Config"].get("Labels") or {})

    service = {s.id: labels(s).get(SERVICE_LABEL, s.name) for s in specs}
    needs = {s.id: {d.split(":", 1)[0] for d in labels(s).get(DEPENDS_LABEL, "").split(",") if d.strip()}
             for s in specs}
    left = sorted(specs, key=lambda s: (service[s.id], s.name))
    out: list[Spec] = []
    while left:
        ready = [s for s in left if not needs[s.id] & {service[o.id] for o in left if o is not s}]
        nxt = ready[0] if ready else left[0]
        out.append(nxt)
        left.remove(nxt)
    return out


@dataclass
class ProjectReport:
    project: str
    source: str
    target: str
    status: str = "failed"  # migrated | rolled_back | failed | planned
    moves: list[MigrationReport] = field(default_factory=list)
    total_s: float = 0.0
    error: str | None = None

    @property
    def warnings(self) -> list[str]:
        return [w for m in self.moves for w in m.warnings]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "containers": [m.container for m in self.moves]}


class ProjectMove:
    def __init__(self, inv: Inventory, project: str, source: str, target: str, *,
                 events: Callable[[str, Event], None] | None = None, shared: Shared | None = None,
                 names: list[str] | None = None, **options: Any) -> None:
        self.inv, self.source, self.target = inv, source, target
        self.project = validate_name(project)
        self.options = options  # Migration's: keep_source, relay, bind_mounts, remove_source_volumes
        self.events = events
        self.names = names  # only these of its containers (a drain's plan); else every running one
        self.shared = shared or Shared()  # checks, link and images once for the project's moves
        self.group = time.strftime("prj-%Y%m%d-%H%M%S-", time.gmtime()) + secrets.token_hex(3)
        self.report = ProjectReport(self.project, source, target)

    def _events(self, container: str) -> Callable[[Event], None] | None:
        tell = self.events
        return (lambda ev: tell(container, ev)) if tell else None

    def members(self) -> list[Spec]:
        with Host(self.inv.host(self.source)) as h:
            engine = Engine(h)
            found = [engine.inspect(c["Id"]) for c in engine.containers()]
        specs = order([Spec(i) for i in found if i and project_of(Spec(i)) == self.project
                       and (self.names is None or Spec(i).name in self.names)])
        if not specs:
            raise MigratorError(f"{self.source}: no running container of compose project {self.project!r}",
                                hint=f"`docker compose ls` on {self.source} lists its projects")
        return specs

    def run(self, dry_run: bool = False) -> ProjectReport:
        t0 = time.monotonic()
        migrations: list[Migration] = []
        try:
            for spec in self.members():
                migrations.append(Migration(self.inv, spec.name, self.source, self.target, shared=self.shared,
                                            group=self.group, events=self._events(spec.name), **self.options))
            self.report.moves = [m.report for m in migrations]
            self._prepare(migrations)
            if dry_run:
                for m in migrations:
                    m.plan_only()
                self.report.status = "planned"
                return self.report
            self._move(migrations)
            for m in migrations:
                m.commit()
            self.report.status = "migrated"
            return self.report
        except MigratorError as ex:
            self.report.error = self.report.error or str(ex)
            ex.report = self.report
            raise
        finally:
            for m in migrations:
                m.close()
            self.report.total_s = round(time.monotonic() - t0, 3)

    def _prepare(self, migrations: list[Migration]) -> None:
        """Every member preflighted before any freezes; one refusal ends them all (exit 2)."""
        ready: list[Migration] = []
        try:
            for m in migrations:
                m.prepare()
                ready.append(m)
        except MigratorError:
            for m in ready:
                m.plan_only()
            raise

    def _move(self, migrations: list[Migration]) -> None:
        """Every member presynced, then each switched in order, its source held once moved;
        a failure rolls back every member that began, the last first, and raises for the
        project."""
        moved: list[Migration] = []
        failed = migrations[0]
        try:
            for failed in migrations:
                moved.append(failed)
                failed.presync()
            for failed in migrations:
                failed.switch()
            return
        except MigratorError as ex:
            cause = ex
        except Exception as ex:  # a bug of ours: the members come back all the same
            cause = internal(ex)
        for m in moved:  # journaled first: a controller dying in here leaves `recover` no member to forward
            if m.entry is not None:
                m.entry.phase = "rollback"
                m.entry.save()
        left: list[str] = []
        for m in reversed(moved):
            why = cause if m is failed else MigratorError(f"{failed.container} of the project failed: {cause}")
            try:
                m.abort(why)
            except MigrationFailed:
                m.report.status = "rolled_back"
            except RollbackFailed as ex:
                left.append(str(ex))
        for m in migrations[len(moved):]:  # never frozen: only their preparation to undo
            m.plan_only()
            m.report.status = "rolled_back"
        self.report.status = "failed" if left else "rolled_back"
        where = f"compose project {self.project} {self.source} -> {self.target}"
        if left:
            raise RollbackFailed(f"move of {where} failed ({failed.container}: {cause}) and could not be "
                                 "rolled back in full: " + " ".join(left))
        raise MigrationFailed(f"move of {where} failed and was rolled back ({self.source} runs all "
                              f"{len(migrations)} of its containers): {failed.container}: {cause}")
