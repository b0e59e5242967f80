"""Live migration of one container: resolve, preflight, pre-sync, freeze, move, restore.

Every change is recorded, as data, in the controller's journal before the next step, so a
failure here, or a killed controller later (`migrator recover`), can undo it
(`rollback.Sides`). The dump holds the source's processes frozen (CRIU's post-dump step
waits for a verdict) until the target copy answers: then they are killed; on a rollback
they resume where they stopped, and count as back once the ports that answered before
answer again.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any, NoReturn

from . import binds, checkpoint, hooks, journal, networks, preflight
from .container import Spec, validate_name
from .engine import Engine
from .errors import LockedError, MigrationFailed, MigratorError, PreflightError, RollbackFailed, internal
from .images import image_dir, make_workdir
from .inventory import Inventory
from .locks import criu_result, owner, take_lock
from .probes import answers, memory_sample, open_ports, runtime_root, upper_dir
from .report import Event, Events, MigrationReport, PhaseReport, new_id
from .rollback import Sides
from .shared import Shared, once
from .transfer import Link, image_there, open_link, ship_image, tar_job, worth_compressing
from .transport import Host

log = logging.getLogger(__name__)

# --- the migration ------------------------------------------------------------------------
class Migration:
    def __init__(self, inv: Inventory, container: str, source: str, target: str, *,
                 keep_source: bool = False, relay: bool = False, events: Events | None = None,
                 shared: Shared | None = None, bind_mounts: str | None = None,
                 remove_source_volumes: bool = False, group: str = "", connections: str | None = None,
                 hooks: dict[str, list[str]] | None = None) -> None:
        self.inv = inv
        self.container = validate_name(container)
        if source == target:
            raise MigratorError(f"source and target are both {source!r}", hint="pick another --to")
        self.src = Host(inv.host(source))
        self.dst = Host(inv.host(target))
        self.keep_source = keep_source
        self.relay_only = relay
        self.bind_mounts = binds.check_mode(bind_mounts)  # how bind mounts move (binds.py), if they may
        self.emit = events or (lambda _e: None)
        self.shared = shared  # what a batch of moves (a drain) asks once for all of them
        self.migration_id = new_id()
        self.report = MigrationReport(self.migration_id, self.container, source, target)
        self.entry: journal.Entry | None = None
        self.link: Link | None = None
        self.compress = True  # the memory pages, on the wire
        self.volumes_since = 0.0  # the source's clock when the volumes' presync began
        self.bind_files: dict[str, bool] = {}  # synced bind sources: is it a file (asked in the presync)
        self.remove_source_volumes = remove_source_volumes
        self.group = group  # the unit (a compose project's move) it is part of: recovered together
        if connections not in (None, "keep", "close"):
            raise MigratorError(f"connections {connections!r}: keep or close")
        self.connections = connections  # asked for: keep, close, or None (kept where the address moves)
        self.hooks = hooks or {}  # the operator's commands, by stage (hooks.py)
        self.t_freeze = 0.0

    def begin(self, name: str) -> PhaseReport:
        """Enter phase `name`: journaled (what `recover` goes by) and told."""
        if self.entry is not None:
            self.entry.phase = name
            self.entry.save()
        self.emit(Event("phase", name))
        report = PhaseReport(name, time.monotonic())  # the start, until end() makes it a duration
        self.report.phases.append(report)
        return report

    def end(self, report: PhaseReport) -> None:
        report.seconds = round(time.monotonic() - report.seconds, 3)
        self.emit(Event("done", report.name, f"{report.seconds:.2f} s", report.bytes))

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[PhaseReport]:
        report = self.begin(name)
        try:
            yield report
        finally:
            self.end(report)

    def record(self, **rec: Any) -> None:
        assert self.entry is not None
        self.entry.undo.append(rec)
        self.entry.save()

    def _progress(self, phase: str) -> Callable[[int], None]:
        return lambda n: self.emit(Event("bytes", phase, bytes=n))

    def run(self, dry_run: bool = False) -> MigrationReport:
        """The whole move: prepare, then (unless a dry run) move and commit, or roll back."""
        try:
            self.prepare()
            if dry_run:
                return self.plan_only()
            try:
                self.move()
            except MigratorError as ex:
                self.abort(ex)
            except Exception as ex:  # a bug of ours: the container comes back all the same
                self.abort(internal(ex))
            return self.commit()
        finally:
            self.close()

    # The steps, for a caller that moves several containers as one unit (project.py): each
    # prepared, then each moved (its source held frozen), then all committed or all aborted.
    def prepare(self) -> None:
        """Resolve and preflight: the container locked and journaled, every check passed. On
        a failure nothing is left (the error says why; exit 2)."""
        self.t0 = time.monotonic()
        source_engine, target_engine = self.engines = Engine(self.src), Engine(self.dst)
        try:
            with self.phase("resolve"):
                prior = journal.unfinished(self.src.name, self.container)
                if prior is not None:
                    raise LockedError(f"migration {prior.migration_id} of {prior.container} ({prior.source} -> "
                                      f"{prior.target}) did not finish (its controller stopped in "
                                      f"{prior.phase})", hint="run `migrator recover` first")
                info = source_engine.inspect(self.container)
                if info is None:
                    raise MigratorError(f"{self.src.name}: no container {self.container!r}",
                                        hint=f"`docker ps` on {self.src.name} lists them")
                self.spec = spec = Spec(info)
                take_lock(self.src, spec.id, owner(op=f"migrate {self.migration_id}", container=spec.name,
                                                   target=self.dst.name))
                self.entry = journal.Entry(self.migration_id, spec.name, spec.id, self.src.name, self.dst.name,
                                           str(self.inv.path.resolve()), self.keep_source, group=self.group)
                self.entry.save()
            self.sides = Sides(self.entry, self.src, self.dst)
            with self.phase("preflight"):
                self.source_workdir = make_workdir(self.src, self.migration_id)
                target_workdir = make_workdir(self.dst, self.migration_id)
                checks = preflight.run(self.src, self.dst, spec, self.source_workdir, target_workdir, self.shared,
                                       self.bind_mounts, self.connections)
                self.entry.address_moves, self.entry.keep_connections = checks.address_moves, checks.keep_connections
                self.entry.addresses = spec.addresses() if checks.address_moves else []
                self.report.connections = "kept" if checks.keep_connections else "closed"
                self.memory = checks.memory_bytes
                self.report.preflight = [asdict(c) for c in checks.checks]
                if checks.failures:
                    raise PreflightError(checks.failures)
        except MigratorError as ex:
            self.plan_only()
            self.report.status, self.report.error = "failed", str(ex)
            ex.report = self.report
            raise

    def plan_only(self) -> MigrationReport:
        """End a prepared move here (a dry run, or a unit that will not move): nothing left."""
        if self.entry is not None:
            Sides(self.entry, self.src, self.dst).common_cleanup()
            self.entry.remove()
        self.report.status = "planned"
        return self.report

    def move(self) -> None:
        """Presync, then switch. The source stays held (frozen) until `commit` or `abort`; a
        failure here is for `abort` to roll back."""
        self.presync()
        self.switch()

    def presync(self) -> None:
        """Everything that can be done while the source runs: link, image, volumes, the
        target copy created."""
        self._presync(self.spec, *self.engines, self.source_workdir)

    def switch(self) -> None:
        """Freeze, copy, restore, verify."""
        source_engine, target_engine = self.engines
        spec = self.spec
        ran = self._hook("pre-freeze")
        if ran and ran[-1].rc:
            raise hooks.HookFailed(f"pre-freeze hook `{ran[-1].command}` exited {ran[-1].rc}: "
                                   f"{ran[-1].output[-300:] or 'no output'}; {spec.name} was not frozen")
        with self.shared.window() if self.shared else contextlib.nullcontext():
            self.t_freeze = time.monotonic()
            self._move(spec, source_engine, target_engine)
            self.report.downtime_s = round(time.monotonic() - self.t_freeze, 3)
        with self.phase("verify"):  # once more, through Docker: it runs and answers
            if not answers(self.dst, target_engine, spec.name, self.entry.ports, timeout=30):  # type: ignore[union-attr]
                raise MigratorError(f"{self.dst.name}: {spec.name} started but does not answer")
        ran = self._hook("post-restore", downtime_s=f"{self.report.downtime_s:.3f}")
        if ran and ran[-1].rc:  # it runs on the target: the move stands
            self.report.warnings.append(f"post-restore hook `{ran[-1].command}` exited {ran[-1].rc}")

    def _hook(self, stage: str, **more: str) -> list[hooks.HookRun]:
        """Run the operator's commands of `stage` with this move's facts; in the report."""
        if not self.hooks.get(stage):
            return []
        entry = self.entry
        facts = {"migration_id": self.migration_id, "container": self.spec.name, "source": self.src.name,
                 "target": self.dst.name, "source_address": self.src.spec.address,
                 "target_address": self.dst.spec.address,
                 "container_addresses": " ".join(self.spec.addresses()),
                 "ports": " ".join(f"{p}/{proto}" for _ip, p, proto in self.spec.published_ports()),
                 "address_moves": "1" if entry and entry.address_moves else "0",
                 "connections": self.report.connections, "project": self.group, **more}
        ran = hooks.run(self.hooks, stage, facts)
        for r in ran:
            self.report.hooks.append(r.to_dict())
            self.emit(Event("info" if r.rc == 0 else "warn", stage, f"hook `{r.command}` exited {r.rc}"))
        return ran

    def abort(self, cause: MigratorError) -> NoReturn:
        """Roll back (the target copy gone, the source running again) and raise what happened."""
        self.emit(Event("warn", "rollback", f"{cause}; rolling back"))
        with self.phase("rollback"):
            back, left = self.sides.roll_back()
        if self.t_freeze:  # frozen from then until the rollback gave it back (or for good)
            self.report.downtime_s = round(time.monotonic() - self.t_freeze, 3)
        if back:
            self._hook("post-rollback", error=str(cause))
        if isinstance(cause, hooks.HookFailed) and back and not left:  # nothing was frozen, nothing is left
            self.entry.remove()  # type: ignore[union-attr]
            self.report.status, self.report.error = "failed", str(cause)
            cause.report = self.report
            raise cause
        self._failed(cause, left, back, self.sides.restored)

    def commit(self) -> MigrationReport:
        """The target copy is the container now: the source goes, with what was temporary."""
        assert self.entry is not None
        with self.phase("cleanup"):
            self.report.warnings += self.sides.finish()
            if not self.keep_source:
                self._source_volumes()
        if not self.sides.unfinished:  # else `recover` finishes it (the entry stays, in cleanup)
            self.entry.remove()
        self.report.status = "migrated"
        return self.report

    def _source_volumes(self) -> None:
        """The named volumes the source copy used stay there (its data as of the move), said
        in the report, unless told to remove them (and nothing else there uses them)."""
        source_engine = self.engines[0]
        for m in self.spec.named_volumes():
            name = m["Name"]
            if self.remove_source_volumes and not source_engine.users("volume", name):
                try:
                    source_engine.volume_remove(name)
                    continue
                except MigratorError as ex:
                    self.report.warnings.append(f"{self.src.name}: volume {name} could not be removed: {ex}")
            self.report.volumes_left.append(name)
        if self.report.volumes_left and not self.remove_source_volumes:
            self.report.warnings.append(
                f"{self.src.name}: volume{'s' if len(self.report.volumes_left) > 1 else ''} "
                f"{', '.join(self.report.volumes_left)} left there (the data as it was at the move); "
                "--remove-source-volumes removes them")

    def close(self) -> None:
        self.report.total_s = round(time.monotonic() - getattr(self, "t0", time.monotonic()), 3)
        if self.link is not None:
            self.report.bytes_sent = self.link.bytes_sent
        self.src.close()
        self.dst.close()

    def _presync(self, spec: Spec, source_engine: Engine, target_engine: Engine, workdir: str) -> None:
        assert self.entry is not None
        with self.phase("presync") as phase:
            self.link = link = open_link(self.src, self.dst, self.migration_id, workdir, relay_only=self.relay_only)
            self.report.transfer = "direct" if link.direct else "relay"
            if link.direct:  # compress the pages when it pays: from the link's speed and a sample
                sample = memory_sample(self.src, spec.pid)
                bps = once(self.shared, ("link", self.src.name, self.dst.name), link.measure) if sample else 0.0
                self.compress = worth_compressing(*sample, bps) if sample else True
            self.emit(Event("info", "presync", f"transfer {self.report.transfer}, pages "
                            + ("compressed" if self.compress else "not compressed (they do not shrink, or the "
                               "link outruns the compressor)")))

            def ship() -> None:  # once per image and target in a batch: the others wait for it
                if image_there(source_engine, target_engine, spec.image_id, spec.image_ref):
                    return
                self.record(kind="image", id=spec.image_id)
                phase.bytes += ship_image(link, source_engine, target_engine, spec.image_id, spec.image_ref,
                                          self._progress("presync"))
                self.emit(Event("info", "presync", f"shipped image {spec.image_ref}"))

            once(self.shared, ("image", self.dst.name, spec.image_id), ship)
            # what changes in the volumes from now on is resent by content while frozen; a
            # second of margin for the kernel's coarse file timestamps
            self.volumes_since = float(self.src.run(["date", "+%s.%N"]).stdout) - 1
            for m in spec.named_volumes():
                name = m["Name"]
                vol = source_engine.volume_inspect(name) or {}
                if vol.get("Driver", "local") != "local":
                    raise MigratorError(f"{self.src.name}: volume {name} uses driver {vol.get('Driver')};"
                                        " only local volumes are moved")
                if target_engine.volume_inspect(name) is None:
                    self.record(kind="volume", name=name)
                    target_engine.volume_create(name, vol.get("Options") or {}, vol.get("Labels") or {})
                target_mountpoint = (target_engine.volume_inspect(name) or {})["Mountpoint"]
                phase.bytes += link.sync_dir(vol["Mountpoint"], target_mountpoint)
            for m in self._synced_binds(spec):
                made = binds.first_missing(self.dst, m["Source"])
                if made:
                    self.record(kind="path", path=made)
                self.bind_files[m["Source"]], sent = binds.send(link, m["Source"])
                phase.bytes += sent
            for name, endpoint in spec.user_networks().items():  # once per target and network in a batch
                once(self.shared, ("network", self.dst.name, name), functools.partial(
                    self._make_network, name, bool(networks.fixed_address(endpoint)), source_engine, target_engine))
            same = self.entry.address_moves
            self.entry.target_id = target_engine.create(spec.name, spec.create_body(same_address=same))
            self.entry.save()
            for name in list(spec.user_networks())[1:]:  # API 1.41 creates on one network
                target_engine.network_connect(name, self.entry.target_id, spec.endpoint(name, same_address=same))
            self.entry.ports = open_ports(self.src, source_engine, spec.id)
            self.root = runtime_root(self.src, spec.id)
            self.entry.src_img = image_dir(self.src, self.migration_id, self.memory)
            self.entry.dst_img = image_dir(self.dst, self.migration_id, self.memory)
            self.dst.run(["mkdir", "-p", "-m", "0700", self.entry.dst_img])
            if link.direct and checkpoint.prepare_memory(self.dst, self.entry.dst_img, self.memory):
                self.emit(Event("info", "presync", f"{self.dst.name}: memory for the restore set aside"))
            self.src_upper = upper_dir(self.src, spec.inspect)
            self.dst_upper = upper_dir(self.dst, target_engine.inspect(self.entry.target_id) or {"Id": ""})
            if self.src_upper and not self.dst_upper:  # never a move without its files
                raise MigratorError(f"{self.dst.name}: cannot find the writable layer of the container made there "
                                    f"for {spec.name}", hint=f"`docker inspect {spec.name}` there shows its driver")
            if self.dst_upper:
                link.place("dir", self.dst_upper)  # now: not a round trip in the freeze window
            target_engine.docker_root  # noqa: B018 - asked now, not in the freeze window
            target_engine.server_version  # noqa: B018 - likewise
            # Docker must not restart the frozen source on its own (two copies): its restart
            # policy is "no" until it is removed, or put back on rollback.
            policy = spec.host_config.get("RestartPolicy") or {"Name": "no"}
            if policy.get("Name") not in ("", "no"):
                self.record(kind="restart_policy", policy={
                    "Name": policy["Name"], "MaximumRetryCount": policy.get("MaximumRetryCount", 0)})
                source_engine.update_restart_policy(spec.id, {"Name": "no"})
            self.entry.save()

    def _make_network(self, name: str, fixed: bool, source_engine: Engine, target_engine: Engine) -> None:
        """A user network the target lacks, made like the source's (networks.create_body)."""
        if target_engine.network_inspect(name) is not None:
            return
        self.record(kind="network", name=name)
        target_engine.network_create(name, networks.create_body(source_engine.network_inspect(name) or {}, fixed))
        self.emit(Event("info", "presync", f"{self.dst.name}: network {name} made like {self.src.name}'s"))

    def _synced_binds(self, spec: Spec) -> list[dict[str, Any]]:
        """The bind mounts this move copies (--bind-mounts sync)."""
        return spec.bind_mounts() if self.bind_mounts == "sync" else []

    def _move(self, spec: Spec, source_engine: Engine, target_engine: Engine) -> None:
        """Freeze and copy: the CRIU images (on a direct link while CRIU writes them) and the
        container's own filesystem diff, checked against their manifest on arrival; then the
        volumes' deltas, then the restore."""
        assert self.link is not None and self.entry is not None
        entry, link = self.entry, self.link
        fs = [(self.src_upper, self.dst_upper)] if self.src_upper and self.dst_upper else []
        what = f"checkpoint of {spec.name}"
        pages: dict[str, int] = {}  # streamed pages files (direct links): their sizes
        hold = (self.migration_id, spec.pid)
        how: dict[str, Any] = {"keep_connections": entry.keep_connections, "address_moves": entry.address_moves}
        if link.direct:
            phases = [self.begin("freeze")]

            def dumped() -> None:
                self.end(phases[0])
                phases.append(self.begin("transfer"))

            r, sent, pages = link.dump_and_send(
                checkpoint.dump_argv(self.src, spec.id, entry.src_img, root=self.root, hold=hold, **how),
                entry.src_img, entry.dst_img, [tar_job(s, d) for s, d in fs],
                compress=self.compress, progress=self._progress("transfer"), on_dumped=dumped)
            if len(phases) == 1:  # the dump itself failed
                self.end(phases[0])
                criu_result(self.src, what, r)
            phases[1].bytes = sent
            self.end(phases[1])
            link.check(f"copy of {entry.src_img}", r)
        else:
            with self.phase("freeze"):
                checkpoint.dump(self.src, spec.id, entry.src_img, root=self.root, hold=hold, **how)
            with self.phase("transfer") as phase:
                phase.bytes = link.copy_dirs([(entry.src_img, entry.dst_img, True)] + [(s, d, False) for s, d in fs],
                                             progress=self._progress("transfer"))
        with self.phase("filesystem") as phase:
            for m in spec.named_volumes():
                target_mountpoint = (target_engine.volume_inspect(m["Name"]) or {})["Mountpoint"]
                phase.bytes += link.sync_dir(m["Source"], target_mountpoint, changed_since=self.volumes_since)
            for m in self._synced_binds(spec):
                phase.bytes += link.sync_dir(m["Source"], m["Source"], changed_since=self.volumes_since,
                                             file=self.bind_files[m["Source"]])
        with self.phase("restore"):
            entry.target_started = True
            entry.save()
            # checked against the manifest (the streamed pages: their sizes), and counted as
            # up when its ports answer
            published = [p for _ip, p, proto in spec.published_ports() if proto == "tcp"]
            self.report.sockets_restored = checkpoint.start_from_images(
                self.dst, target_engine, entry.target_id, entry.dst_img, self.migration_id, verify=link.direct,
                ports=entry.ports, pages=pages, published=published, addresses=entry.addresses, **how)

    def _failed(self, cause: MigratorError, left: list[str], back: bool, restored: bool) -> NoReturn:
        assert self.entry is not None
        self.report.error = str(cause)
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
                f"rolled back ({self.src.name} runs it{' from its checkpoint' if restored else ''}): {cause}"
                + (f"; left over: {'; '.join(left)}" if left else ""))
        else:
            self.report.status = "failed"
            err = RollbackFailed(f"migration of {self.container} failed and could not be rolled back: {cause}. "
                                 + " ".join(left))
        err.report = self.report
        raise err
