"""Live migration of one container: resolve, preflight, pre-sync, freeze, move, restore.

Every change is recorded, as data, in the controller's journal before the next step, so a
failure here, or a killed controller later (`migrator recover`), can undo it. The dump
holds the source's processes frozen (CRIU's post-dump step waits for a verdict) until the
target copy answers: then they are killed; on a rollback they resume where they stopped, and
count as back once the ports that answered before answer again. The target copy is removed
before the source resumes: never two running copies.
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
from . import journal, preflight
from .container import Spec, validate_name
from .engine import Engine
from .errors import LockedError, MigrationFailed, MigratorError, PreflightError, RollbackFailed
from .inventory import Inventory
from .transfer import Link, open_link, remove_key, ship_image, stop_master, tar_job, worth_compressing
from .transport import Host

log = logging.getLogger(__name__)
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def new_id() -> str:
    return time.strftime("mig-%Y%m%d-%H%M%S-", time.gmtime()) + secrets.token_hex(3)


# --- undo, finish and roll back: from a journal entry, for a live run and for `recover` ----
class Sides:
    """The two hosts of one journal entry and their engines."""

    def __init__(self, entry: journal.Entry, src: Host, dst: Host) -> None:
        self.e, self.src, self.dst = entry, src, dst
        self.se, self.de = Engine(src), Engine(dst)
        self.restored = False  # the source was started again from its checkpoint images
        self.unfinished = False  # the source's frozen processes could not be told to go

    def _undo(self, rec: dict[str, Any]) -> None:
        kind = rec["kind"]
        if kind == "image":
            with contextlib.suppress(MigratorError):  # still used by something else: keep it
                self.de.remove_image(rec["id"])
        elif kind == "volume":
            self.de.volume_remove(rec["name"])
        elif kind == "restart_policy":
            self.se.update_restart_policy(self.e.container_id, rec["policy"])

    def common_cleanup(self) -> list[str]:
        """What every ending removes: transfer key, work dirs, lock. Idempotent."""
        left = []
        for what, fn in [
            ("transfer key", lambda: remove_key(self.dst, self.e.mid)),
            ("transfer connection", lambda: stop_master(self.src, cp.workdir(self.e.mid))),
            (f"{self.src.name}: work dir", lambda: cp.remove_workdir(self.src, self.e.mid)),
            (f"{self.dst.name}: work dir", lambda: cp.remove_workdir(self.dst, self.e.mid)),
            (f"{self.src.name}: lock", lambda: cp.release_lock(self.src, self.e.container_id)),
        ]:
            try:
                fn()
            except MigratorError as ex:
                left.append(f"cleanup of {what} failed: {ex}")
        return left

    def target_copy(self) -> str | None:
        """Our container on the target: by recorded id, else by name if made after we started
        and never run (a controller killed between create and record)."""
        if self.e.tid:
            return self.e.tid
        try:  # one never recorded was never started either: at worst a stopped leftover
            info = self.de.inspect(self.e.container)
        except MigratorError:
            return None
        if info and info["State"].get("Status") == "created" and _created(info) >= self.e.started:
            return str(info["Id"])
        return None

    def finish(self) -> list[str]:
        """The target is the container now: remove the source (unless kept, stopped) and
        everything temporary, the checkpoint images with it."""
        warnings = []
        try:
            rc = cp.release(self.src, self.e.mid, commit=True)
        except MigratorError as ex:
            self.unfinished = True
            return [f"{self.src.name}: {self.e.container} stays frozen there, cut off from the network, "
                    f"because it could not be told to stop ({ex}); run `migrator recover` once it answers"]
        if rc:
            warnings.append(f"{self.src.name}: the held dump ended with status {rc} after the commit")
        if not self.e.keep_source:
            try:
                self.se.remove_container(self.e.container_id)
            except MigratorError as ex:
                warnings.append(f"cleanup of {self.src.name}: container {self.e.container} failed: {ex}")
        return warnings + self.common_cleanup()

    def remove_target_copy(self) -> tuple[bool, list[str]]:
        """Make sure the target copy cannot run. Returns (sure, what is left over there)."""
        e, left = self.e, []
        tid = self.target_copy()
        if tid:
            try:
                self.de.remove_container(tid)
            except MigratorError as ex:
                if not e.target_started:  # never started: it cannot run, whatever state its host is in
                    left.append(f"{self.dst.name}: container {e.container} ({tid[:12]}) was created there and "
                                f"never started ({ex.message})")
                elif cp.runtime_stopped(self.dst, tid):
                    left.append(f"{self.dst.name}: container {e.container} ({tid[:12]}) is left there, "
                                "not running (its dockerd is down)")
                else:
                    return False, [f"{self.dst.name}: container {e.container} may still run ({ex}); the "
                                   f"source was NOT restarted, to never run two copies. Stop it there, then "
                                   f"run `migrator recover`"]
        return True, left

    def undo_and_clean(self) -> list[str]:
        """Undo what was made (newest first), then the common cleanup. What is undone is
        dropped from the journal, so a later `recover` retries only what failed."""
        left = []
        for rec in list(reversed(self.e.undo)):
            try:
                self._undo(rec)
                self.e.undo.remove(rec)
            except MigratorError as ex:
                left.append(f"undo {rec}: {ex}")
        return left + self.common_cleanup()

    def roll_back(self) -> tuple[bool, list[str]]:
        """Target copy gone, source running again (from its checkpoint if it was frozen), and
        answering. Returns (source is back, what is left over)."""
        e = self.e
        safe, left = self.remove_target_copy()
        if not safe:
            return False, left
        restore_err: MigratorError | None = None
        try:  # a held dump: CRIU resumes the processes, untouched
            cp.release(self.src, e.mid, commit=False)
        except MigratorError as ex:
            left.append(str(ex))
        info = self.se.inspect(e.container_id)
        if info is None:
            return False, left + [f"{self.src.name}: container {e.container} is gone"]
        if info["State"].get("Running"):  # resumed, or the dump did not complete
            cp.repair(self.src, e.container_id)
        else:
            try:
                if not (e.src_img and self.src.ok(["test", "-f", f"{e.src_img}/MANIFEST"])):
                    raise MigratorError("no complete checkpoint of it was made")
                cp.start_from_images(self.src, self.se, e.container_id, e.src_img, e.mid)
                self.restored = True
            except MigratorError as ex:
                restore_err = ex
        back = cp.answers(self.src, self.se, e.container_id, e.ports, timeout=20)
        if not back:
            left.append(
                f"{self.src.name}: {e.container} is not running"
                + (f" ({restore_err})" if restore_err else "")
                + f"; its CRIU images (if the freeze completed) are in {e.src_img or 'none'} on "
                f"{self.src.name}. Once the cause is fixed, `migrator recover` tries again; or "
                f"`docker start {e.container}` there, losing its memory state")
            return False, left
        return True, left + self.undo_and_clean()


def _created(info: dict[str, Any]) -> float:
    from datetime import datetime

    try:
        return datetime.fromisoformat(str(info["Created"])[:26].rstrip("Z") + "+00:00").timestamp()
    except (KeyError, ValueError):
        return 0.0


# --- the migration ------------------------------------------------------------------------
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
        self.entry: journal.Entry | None = None
        self.link: Link | None = None
        self.compress = True  # the memory pages, on the wire

    def begin(self, name: str) -> PhaseReport:
        """Enter phase `name`: journaled (what `recover` goes by) and told."""
        if self.entry is not None:
            self.entry.phase = name
            self.entry.save()
        self.emit(Event("phase", name))
        pr = PhaseReport(name, time.monotonic())  # the start, until end() makes it a duration
        self.report.phases.append(pr)
        return pr

    def end(self, pr: PhaseReport) -> None:
        pr.seconds = round(time.monotonic() - pr.seconds, 3)
        self.emit(Event("done", pr.name, f"{pr.seconds:.2f} s", pr.bytes))

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[PhaseReport]:
        pr = self.begin(name)
        try:
            yield pr
        finally:
            self.end(pr)

    def record(self, **rec: Any) -> None:
        assert self.entry is not None
        self.entry.undo.append(rec)
        self.entry.save()

    def _progress(self, phase: str) -> Callable[[int], None]:
        return lambda n: self.emit(Event("bytes", phase, bytes=n))

    def run(self, dry_run: bool = False) -> MigrationReport:
        t0 = time.monotonic()
        try:
            return self._run(dry_run)
        finally:
            self.report.total_s = round(time.monotonic() - t0, 3)
            if self.link is not None:
                self.report.bytes_sent = self.link.bytes_sent
            self.src.close()
            self.dst.close()

    def _run(self, dry_run: bool) -> MigrationReport:
        se, de = Engine(self.src), Engine(self.dst)
        try:
            with self.phase("resolve"):
                prior = journal.unfinished(self.src.name, self.container)
                if prior is not None:
                    raise LockedError(f"migration {prior.mid} of {prior.container} ({prior.source} -> "
                                      f"{prior.target}) did not finish (its controller stopped in "
                                      f"{prior.phase})", hint="run `migrator recover` first")
                info = se.inspect(self.container)
                if info is None:
                    raise MigratorError(f"{self.src.name}: no container {self.container!r}",
                                        hint=f"`docker ps` on {self.src.name} lists them")
                spec = Spec(info)
                cp.take_lock(self.src, spec.id, cp.owner(op=f"migrate {self.mid}", container=spec.name,
                                                      target=self.dst.name))
                self.entry = journal.Entry(self.mid, spec.name, spec.id, self.src.name, self.dst.name,
                                           str(self.inv.path.resolve()), self.keep_source)
                self.entry.save()
            sides = Sides(self.entry, self.src, self.dst)
            with self.phase("preflight"):
                swd = cp.make_workdir(self.src, self.mid)
                dwd = cp.make_workdir(self.dst, self.mid)
                pf = preflight.run(self.src, self.dst, spec, swd, dwd)
                self.memory = pf.memory_bytes
                self.report.preflight = [asdict(c) for c in pf.checks]
                if pf.failures:
                    raise PreflightError(pf.failures)
        except MigratorError as e:
            if self.entry is not None:
                Sides(self.entry, self.src, self.dst).common_cleanup()
                self.entry.remove()
            self.report.status, self.report.error = "failed", str(e)
            e.report = self.report
            raise
        if dry_run:
            sides.common_cleanup()
            self.entry.remove()
            self.report.status = "planned"
            return self.report
        t_freeze = 0.0
        try:
            self._presync(spec, se, de, swd)
            t_freeze = time.monotonic()
            self._move(spec, se, de)
            self.report.downtime_s = round(time.monotonic() - t_freeze, 3)
            with self.phase("verify"):  # once more, through Docker: it runs and answers
                if not cp.answers(self.dst, de, spec.name, self.entry.ports, timeout=30):
                    raise MigratorError(f"{self.dst.name}: {spec.name} started but does not answer")
        except MigratorError as e:
            self.emit(Event("warn", "rollback", f"{e}; rolling back"))
            with self.phase("rollback"):
                back, left = sides.roll_back()
            return self._failed(e, left, back, sides.restored)
        with self.phase("cleanup"):
            self.report.warnings += sides.finish()
        if not sides.unfinished:  # else `recover` finishes it (the entry stays, in cleanup)
            self.entry.remove()
        self.report.status = "migrated"
        return self.report

    def _presync(self, spec: Spec, se: Engine, de: Engine, swd: str) -> None:
        assert self.entry is not None
        with self.phase("presync") as pr:
            self.link = link = open_link(self.src, self.dst, self.mid, swd, relay_only=self.relay_only)
            self.report.transfer = "direct" if link.direct else "relay"
            if link.direct:  # compress the pages when it pays: from the link's speed and a sample
                sample = cp.memory_sample(self.src, spec.pid)
                self.compress = worth_compressing(*sample, link.measure()) if sample else True
            self.emit(Event("info", "presync", f"transfer {self.report.transfer}, pages "
                            + ("compressed" if self.compress else "not compressed (they do not shrink, or the "
                               "link outruns the compressor)")))
            if not de.image_exists(spec.image_id):
                self.record(kind="image", id=spec.image_id)
                pr.bytes += ship_image(link, se, de, spec.image_id, spec.image_ref, self._progress("presync"))
                self.emit(Event("info", "presync", f"shipped image {spec.image_ref}"))
            for m in spec.named_volumes():
                name = m["Name"]
                vol = se.volume_inspect(name) or {}
                if vol.get("Driver", "local") != "local":
                    raise MigratorError(f"{self.src.name}: volume {name} uses driver {vol.get('Driver')};"
                                        " only local volumes are moved")
                if de.volume_inspect(name) is None:
                    self.record(kind="volume", name=name)
                    de.volume_create(name, vol.get("Options") or {}, vol.get("Labels") or {})
                dst_mp = (de.volume_inspect(name) or {})["Mountpoint"]
                pr.bytes += link.sync_dir(vol["Mountpoint"], dst_mp)
            self.entry.tid = de.create(spec.name, spec.create_body())
            self.entry.save()
            self.entry.ports = cp.open_ports(self.src, se, spec.id)
            self.root = cp.runtime_root(self.src, spec.id)
            self.entry.src_img = cp.image_dir(self.src, self.mid, self.memory)
            self.entry.dst_img = cp.image_dir(self.dst, self.mid, self.memory)
            self.dst.run(["mkdir", "-p", "-m", "0700", self.entry.dst_img])
            if link.direct and cp.prepare_memory(self.dst, self.entry.dst_img, self.memory):
                self.emit(Event("info", "presync", f"{self.dst.name}: memory for the restore set aside"))
            self.dst_upper = Spec(de.inspect(self.entry.tid) or {}).upper_dir
            de.docker_root  # noqa: B018 - asked now, not in the freeze window
            # Docker must not restart the frozen source on its own (two copies): its restart
            # policy is "no" until it is removed, or put back on rollback.
            policy = spec.host_config.get("RestartPolicy") or {"Name": "no"}
            if policy.get("Name") not in ("", "no"):
                self.record(kind="restart_policy", policy={
                    "Name": policy["Name"], "MaximumRetryCount": policy.get("MaximumRetryCount", 0)})
                se.update_restart_policy(spec.id, {"Name": "no"})
            self.entry.save()

    def _move(self, spec: Spec, se: Engine, de: Engine) -> None:
        """Freeze and copy: the CRIU images (on a direct link while CRIU writes them) and the
        container's own filesystem diff, checked against their manifest on arrival; then the
        volumes' deltas, then the restore."""
        assert self.link is not None and self.entry is not None
        e, link = self.entry, self.link
        fs = [(spec.upper_dir, self.dst_upper)] if spec.upper_dir and self.dst_upper else []
        what = f"checkpoint of {spec.name}"
        pages: dict[str, int] = {}  # streamed pages files (direct links): their sizes
        if link.direct:
            pr = [self.begin("freeze")]

            def dumped() -> None:
                self.end(pr[0])
                pr.append(self.begin("transfer"))

            r, sent, pages = link.dump_and_send(
                cp.dump_argv(spec.id, e.src_img, root=self.root, hold=(self.mid, spec.pid)), e.src_img, e.dst_img,
                [tar_job(s, d) for s, d in fs],
                compress=self.compress, progress=self._progress("transfer"),
                on_dumped=dumped)
            if len(pr) == 1:  # the dump itself failed
                self.end(pr[0])
                cp.criu_result(self.src, what, r)
            pr[1].bytes = sent
            self.end(pr[1])
            link.check(f"copy of {e.src_img}", r)
        else:
            with self.phase("freeze"):
                cp.dump(self.src, spec.id, e.src_img, root=self.root, hold=(self.mid, spec.pid))
            with self.phase("transfer") as tr:
                tr.bytes = link.copy_dirs([(e.src_img, e.dst_img, True)] + [(s, d, False) for s, d in fs],
                                          progress=self._progress("transfer"))
        with self.phase("filesystem") as pr_fs:
            for m in spec.named_volumes():
                dst_mp = (de.volume_inspect(m["Name"]) or {})["Mountpoint"]
                pr_fs.bytes += link.sync_dir(m["Source"], dst_mp)
        with self.phase("restore"):
            e.target_started = True
            e.save()
            # checked against the manifest (the streamed pages: their sizes), and counted as
            # up when its ports answer
            published = [p for _ip, p, proto in spec.published_ports() if proto == "tcp"]
            cp.start_from_images(self.dst, de, e.tid, e.dst_img, self.mid, verify=link.direct, ports=e.ports,
                                 pages=pages, published=published)

    def _failed(self, e: MigratorError, left: list[str], back: bool, restored: bool) -> MigrationReport:
        assert self.entry is not None
        self.report.error = str(e)
        self.report.warnings += left
        if back:
            if left:  # the source runs; what could not be removed yet, `recover` removes later
                self.entry.phase = journal.PENDING_CLEANUP
                self.entry.save()
                left.append("run `migrator recover` once the hosts answer, to remove these")
            else:
                self.entry.remove()
            self.report.status = "rolled_back"
            err: MigratorError = MigrationFailed(
                f"migration of {self.container} {self.src.name} -> {self.dst.name} failed and was "
                f"rolled back ({self.src.name} runs it{' from its checkpoint' if restored else ''}): {e}"
                + (f"; left over: {'; '.join(left)}" if left else ""))
        else:
            self.report.status = "failed"
            err = RollbackFailed(f"migration of {self.container} failed and could not be rolled back: {e}. "
                                 + " ".join(left))
        err.report = self.report
        raise err


# --- recover --------------------------------------------------------------------------------
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
    """Finish or roll back every migration whose controller died: forward when the target
    copy was already started and answers, otherwise back to the source. Also removes what a
    rolled-back migration could not remove while a host was unreachable. An entry stays in
    the journal until nothing of it is left, so running this again retries what failed."""
    out = []
    for e in journal.load_all():
        if only and only not in (e.mid, e.container):
            continue
        r = Recovered(e.mid, e.container, e.source, e.target, e.phase, "failed")
        if e.phase != journal.PENDING_CLEANUP and e.alive():
            r.outcome = "running"
            r.notes.append(f"its controller (pid {e.pid}) still runs")
            out.append(r)
            continue
        try:
            with Host(inv.host(e.source)) as src, Host(inv.host(e.target)) as dst:
                sides = Sides(e, src, dst)
                if e.phase == journal.PENDING_CLEANUP:
                    safe, left = sides.remove_target_copy()
                    r.notes += left + (sides.undo_and_clean() if safe else [])
                    r.outcome = "rolled_back"
                else:
                    forward = False
                    if e.phase in ("restore", "verify", "cleanup") and e.tid:
                        info = sides.de.inspect(e.tid)
                        forward = bool(info and info["State"].get("Running")) and cp.answers(
                            dst, sides.de, e.tid, e.ports, timeout=10)
                    if forward:
                        e.phase = "cleanup"
                        r.notes += sides.finish()
                        r.outcome = "completed"
                    else:
                        back, left = sides.roll_back()
                        r.notes += left
                        r.outcome = "rolled_back" if back else "failed"
                        if back:
                            e.phase = journal.PENDING_CLEANUP
        except MigratorError as ex:
            r.notes.append(str(ex))
        if r.outcome in ("completed", "rolled_back") and not r.notes:
            e.remove()
        else:
            e.save()
        out.append(r)
    return out
