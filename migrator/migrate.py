"""Live migration of one container: plan, preflight, pre-sync, freeze, move, restore.

Every step that changes something pushes its undo. A failure before the freeze undoes
everything (exit 2 for a preflight refusal, 1 otherwise); after the freeze the source is
also restored from its own checkpoint, and only counted as back once it answers.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from . import checkpoint as cp
from . import preflight
from .container import Spec, validate_name
from .engine import Engine
from .errors import (
    CommandError,
    MigrationFailed,
    MigratorError,
    PreflightError,
    RollbackFailed,
)
from .inventory import Inventory
from .transfer import Link, open_link, ship_image
from .transport import Host

log = logging.getLogger(__name__)


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def new_id() -> str:
    return time.strftime("mig-%Y%m%d-%H%M%S-", time.gmtime()) + secrets.token_hex(3)


class Migration:
    def __init__(self, inv: Inventory, container: str, source: str, target: str, *,
                 keep_source: bool = False, relay: bool = False, events: Events | None = None) -> None:
        self.inv = inv
        self.container = validate_name(container)
        if source == target:
            raise MigratorError(f"source and target are both {source!r}", hint="pick another --to")
        self.src = Host(inv.host(source))
        self.dst = Host(inv.host(target))
        self.keep_source = keep_source
        self.relay_only = relay
        self.emit = events or (lambda _e: None)
        self.mid = new_id()
        self.report = MigrationReport(self.mid, self.container, source, target)
        self._undo: list[tuple[str, Callable[[], None]]] = []
        self.link: Link | None = None
        self.ports: list[int] = []  # the container's TCP ports that answered before the freeze

    # --- helpers ----------------------------------------------------------------------
    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[PhaseReport]:
        self.emit(Event("phase", name))
        pr = PhaseReport(name, 0.0)
        t0 = time.monotonic()
        try:
            yield pr
        finally:
            pr.seconds = round(time.monotonic() - t0, 3)
            self.report.phases.append(pr)
            self.emit(Event("done", name, f"{pr.seconds:.2f} s", pr.bytes))

    def on_undo(self, what: str, fn: Callable[[], None]) -> None:
        self._undo.append((what, fn))

    def _run_undo(self) -> list[str]:
        left = []
        while self._undo:
            what, fn = self._undo.pop()
            try:
                fn()
            except MigratorError as e:
                left.append(f"{what}: {e}")
                log.warning("undo %s failed: %s", what, e)
        return left

    def close(self) -> None:
        self.src.close()
        self.dst.close()

    # --- the migration ----------------------------------------------------------------
    def run(self, dry_run: bool = False) -> MigrationReport:
        t0 = time.monotonic()
        try:
            return self._run(dry_run)
        finally:
            self.report.total_s = round(time.monotonic() - t0, 3)
            if self.link is not None:
                self.report.bytes_sent = self.link.bytes_sent
            self.close()

    def _run(self, dry_run: bool) -> MigrationReport:
        se, de = Engine(self.src), Engine(self.dst)
        try:
            with self.phase("resolve"):
                info = se.inspect(self.container)
                if info is None:
                    raise MigratorError(f"{self.src.name}: no container {self.container!r}",
                                        hint=f"`docker ps` on {self.src.name} lists them")
                spec = Spec(info)
                cp.take_lock(self.src, spec.id, cp.owner(op=f"migrate {self.mid}", container=spec.name,
                                                      target=self.dst.name))
                self.on_undo("lock", lambda: cp.release_lock(self.src, spec.id))
            with self.phase("preflight"):
                swd = cp.make_workdir(self.src, self.mid)
                self.on_undo(f"{self.src.name}:{swd}", lambda: cp.remove_workdir(self.src, self.mid))
                dwd = cp.make_workdir(self.dst, self.mid)
                self.on_undo(f"{self.dst.name}:{dwd}", lambda: cp.remove_workdir(self.dst, self.mid))
                pf = preflight.run(self.src, self.dst, spec, swd, dwd)
                self.report.preflight = [asdict(c) for c in pf.checks]
                if pf.failures:
                    raise PreflightError(pf.failures)
        except MigratorError as e:
            self._run_undo()
            self.report.status, self.report.error = "failed", str(e)
            e.report = self.report
            raise
        if dry_run:
            self._run_undo()
            self.report.status = "planned"
            return self.report
        try:
            self._presync(spec, se, de, swd)
        except MigratorError as e:
            left = self._run_undo()
            return self._failed(e, left, frozen=False)
        return self._move(spec, se, de)

    def _presync(self, spec: Spec, se: Engine, de: Engine, swd: str) -> None:
        with self.phase("presync") as pr:
            self.link = link = open_link(self.src, self.dst, self.mid, swd, relay_only=self.relay_only)
            self.on_undo("transfer key", link.close)
            self.report.transfer = "direct" if link.direct else "relay"
            self.emit(Event("info", "presync", f"transfer {self.report.transfer}"))
            shipped = ship_image(link, se, de, spec.image_id, spec.image_ref, self._progress("presync"))
            if shipped:
                pr.bytes += shipped
                self.emit(Event("info", "presync", f"shipped image {spec.image_ref}"))
                self.on_undo(f"{self.dst.name}: image {spec.image_ref}",
                             lambda: _quiet(lambda: de.remove_image(spec.image_id)))
            for m in spec.named_volumes():
                name = m["Name"]
                vol = se.volume_inspect(name) or {}
                if vol.get("Driver", "local") != "local":
                    raise MigratorError(f"{self.src.name}: volume {name} uses driver {vol.get('Driver')};"
                                        " only local volumes are moved")
                if de.volume_inspect(name) is None:
                    de.volume_create(name, vol.get("Options") or {}, vol.get("Labels") or {})
                    self.on_undo(f"{self.dst.name}: volume {name}", _bind(de.volume_remove, name))
                dst_mp = (de.volume_inspect(name) or {})["Mountpoint"]
                pr.bytes += link.sync_dir(vol["Mountpoint"], dst_mp)
            tid = de.create(spec.name, spec.create_body())
            self.on_undo(f"{self.dst.name}: container {spec.name}", lambda: de.remove_container(tid))
            self.tid = tid
            self.dst_cpdir = cp.checkpoint_dir(de, tid, self.mid)
            self.dst.run(["bash", "-c", 'umask 077; mkdir -p "$1"', "_", self.dst_cpdir])
            # Docker must not restart the frozen source on its own (two copies): its restart
            # policy is "no" until it is removed, or put back on rollback.
            self.ports = cp.open_ports(self.src, se, spec.id)
            policy = spec.host_config.get("RestartPolicy") or {"Name": "no"}
            if policy.get("Name") not in ("", "no"):
                se.update_restart_policy(spec.id, {"Name": "no"})
                self.on_undo(f"{self.src.name}: restart policy", lambda: se.update_restart_policy(
                    spec.id, {"Name": policy["Name"],
                              "MaximumRetryCount": policy.get("MaximumRetryCount", 0)}))

    def _progress(self, phase: str) -> Callable[[int], None]:
        return lambda n: self.emit(Event("bytes", phase, bytes=n))

    def _move(self, spec: Spec, se: Engine, de: Engine) -> MigrationReport:
        frozen = started = False
        t_freeze = 0.0
        try:
            with self.phase("freeze"):
                t_freeze = time.monotonic()
                try:
                    with cp.criu_options(self.src, self.mid, cp.MIGRATE_CRIU_OPTS):
                        se.checkpoint_create(spec.id, self.mid, exit=True)
                except MigratorError:
                    after = se.inspect(spec.id)
                    frozen = not (after and after["State"].get("Running"))
                    raise
                frozen = True
            src_cpdir = cp.checkpoint_dir(se, spec.id, self.mid)
            assert self.link is not None
            with self.phase("filesystem") as pr:
                upper_src = spec.upper_dir
                upper_dst = Spec(de.inspect(self.tid) or {}).upper_dir
                if upper_src and upper_dst:
                    pr.bytes += self.link.copy_dir(upper_src, upper_dst, self._progress("filesystem"))
                for m in spec.named_volumes():
                    dst_mp = (de.volume_inspect(m["Name"]) or {})["Mountpoint"]
                    pr.bytes += self.link.sync_dir(m["Source"], dst_mp)
            with self.phase("transfer") as pr:
                cp.manifest(self.src, src_cpdir)
                pr.bytes += self.link.copy_dir(src_cpdir, self.dst_cpdir, self._progress("transfer"))
                cp.verify_manifest(self.dst, self.dst_cpdir)
            with self.phase("restore"):
                started = True
                with cp.criu_options(self.dst, self.mid, cp.MIGRATE_CRIU_OPTS):
                    de.start(self.tid, checkpoint=self.mid)
            with self.phase("verify"):
                if not cp.answers(self.dst, de, spec.name, self.ports, timeout=30):
                    raise MigratorError(f"{self.dst.name}: {spec.name} started but does not answer")
                self.report.downtime_s = round(time.monotonic() - t_freeze, 3)
        except MigratorError as e:
            return self._rollback(e, spec, se, de, frozen, started)
        self._undo.clear()  # the target is the container now: nothing of it is undone
        with self.phase("cleanup"):
            self._cleanup(spec, se, de)
        self.report.status = "migrated"
        return self.report

    def _cleanup(self, spec: Spec, se: Engine, de: Engine) -> None:
        steps: list[tuple[str, Callable[[], None]]] = [
            (f"{self.dst.name}: checkpoint {self.mid}", lambda: de.checkpoint_delete(self.tid, self.mid)),
        ]
        if self.keep_source:
            steps.append((f"{self.src.name}: checkpoint {self.mid}",
                          lambda: se.checkpoint_delete(spec.id, self.mid)))
        else:
            steps.append((f"{self.src.name}: container {spec.name}", lambda: se.remove_container(spec.id)))
        if self.link is not None:
            steps.append(("transfer key", self.link.close))
        steps += [
            (f"{self.src.name}: work dir", lambda: cp.remove_workdir(self.src, self.mid)),
            (f"{self.dst.name}: work dir", lambda: cp.remove_workdir(self.dst, self.mid)),
            ("lock", lambda: cp.release_lock(self.src, spec.id)),
        ]
        for what, fn in steps:
            try:
                fn()
            except MigratorError as e:
                self.report.warnings.append(f"cleanup of {what} failed: {e}")

    def _rollback(self, e: MigratorError, spec: Spec, se: Engine, de: Engine,
                  frozen: bool, started: bool) -> MigrationReport:
        self.emit(Event("warn", "rollback", f"{e}; rolling back"))
        left: list[str] = []
        with self.phase("rollback"):
            if started:  # never two running copies: the target goes first
                try:
                    de.remove_container(self.tid)
                except MigratorError as ex:
                    if cp.runtime_stopped(self.dst, self.tid):
                        left.append(f"{self.dst.name}: container {spec.name} ({self.tid[:12]}) is left "
                                    f"there, not running; `docker rm {spec.name}` on {self.dst.name} "
                                    "once its dockerd is back")
                    else:
                        left.append(f"{self.dst.name}: container {spec.name} may still run: {ex}")
                self._undo = [(w, f) for w, f in self._undo if not w.endswith(f"container {spec.name}")]
            # The source's checkpoint is needed to bring it back: undo must not remove it.
            restore_err = None
            if frozen:
                try:
                    with cp.criu_options(self.src, self.mid, cp.MIGRATE_CRIU_OPTS):
                        se.start(spec.id, checkpoint=self.mid)
                except MigratorError as ex:
                    restore_err = ex
            else:
                after = se.inspect(spec.id)
                if after and after["State"].get("Running"):
                    cp.unlock_network(self.src, int(after["State"].get("Pid") or 0))
            back = cp.answers(self.src, se, spec.id, self.ports, timeout=20)
            if not back:
                info = se.inspect(spec.id) or {}
                if info.get("State", {}).get("Running") and cp.unlock_network(
                        self.src, int(info["State"].get("Pid") or 0)):
                    back = cp.answers(self.src, se, spec.id, self.ports, timeout=20)
            if back:
                left += self._run_undo()
                if frozen:
                    _quiet(lambda: se.checkpoint_delete(spec.id, self.mid))
            else:
                keep = {f"{self.src.name}:{cp.workdir(self.mid)}", "lock"}
                self._undo = [(w, f) for w, f in self._undo if w not in keep]
                left += self._run_undo()
                where = cp.checkpoint_dir(se, spec.id, self.mid) if frozen else "none"
                left.append(
                    f"{self.src.name}: {spec.name} is not running"
                    + (f" ({restore_err})" if restore_err else "")
                    + f"; its checkpoint is {where}. Finish by hand on {self.src.name}: "
                    f"`docker start --checkpoint {self.mid} {spec.name}` (or plain `docker start "
                    f"{spec.name}`, losing memory state), then remove {cp.lock_path(spec.id)}")
        return self._failed(e, left, frozen=frozen, source_back=back)

    def _failed(self, e: MigratorError, left: list[str], *, frozen: bool,
                source_back: bool = True) -> MigrationReport:
        self.report.error = str(e)
        self.report.warnings += left
        if source_back and not [x for x in left if "may still run" in x]:
            self.report.status = "rolled_back"
            failed = MigrationFailed(
                f"migration of {self.container} {self.src.name} -> {self.dst.name} failed and was "
                f"rolled back ({self.src.name} runs it{' from its checkpoint' if frozen else ''}): {e}"
                + (f"; left over: {'; '.join(left)}" if left else ""))
            failed.report = self.report
            raise failed
        self.report.status = "failed"
        err = RollbackFailed(
            f"migration of {self.container} failed and could not be rolled back: {e}. "
            + " ".join(left))
        err.report = self.report
        raise err


def _bind(fn: Callable[[str], None], arg: str) -> Callable[[], None]:
    return lambda: fn(arg)


def _quiet(fn: Callable[[], None]) -> None:
    with contextlib.suppress(MigratorError, CommandError):
        fn()
