"""Undo, finish and roll back one migration, from its journal entry: for a live run and for
`migrator recover` alike. The target copy is removed before the source resumes: never two
running copies."""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any

from . import binds, checkpoint, hostscripts, journal, layout
from .engine import Engine
from .errors import MigratorError, tail
from .images import remove_workdir
from .locks import release_lock
from .probes import answers, runtime_stopped
from .transfer import remove_key, stop_master
from .transport import Host


class Sides:
    """The two hosts of one journal entry and their engines."""

    def __init__(self, entry: journal.Entry, src: Host, dst: Host) -> None:
        self.entry, self.src, self.dst = entry, src, dst
        self.source_engine, self.target_engine = Engine(src), Engine(dst)
        self.restored = False  # the source was started again from its checkpoint images
        self.unfinished = False  # the source's frozen processes could not be told to go

    def _undo(self, record: dict[str, Any]) -> None:
        kind = record["kind"]
        if kind == "image":
            with contextlib.suppress(MigratorError):  # still used by something else: keep it
                self.target_engine.remove_image(record["id"])
        elif kind == "volume":
            self.target_engine.volume_remove(record["name"])
        elif kind == "path":  # a bind mount's path that this move made on the target
            binds.unmake(self.dst, record["path"])
        elif kind == "network":  # made for this move: kept while a container there is configured on it
            if not self.target_engine.users("network", record["name"]):
                self.target_engine.network_remove(record["name"])
        elif kind == "restart_policy":
            self.source_engine.update_restart_policy(self.entry.container_id, record["policy"])

    def common_cleanup(self) -> list[str]:
        """What every ending removes: transfer key, work dirs, lock. Idempotent."""
        left = []
        operation = self.entry.migration_id
        steps = [
            ("transfer key", lambda: remove_key(self.dst, operation)),
            ("transfer connection", lambda: stop_master(self.src, layout.workdir(operation))),
            (f"{self.src.name}: work dir", lambda: remove_workdir(self.src, operation)),
            (f"{self.dst.name}: work dir", lambda: remove_workdir(self.dst, operation)),
        ]
        if self.entry.container_id:  # a clone's entry has none: it holds no lock
            steps.append((f"{self.src.name}: lock", lambda: release_lock(self.src, self.entry.container_id)))
        for what, fn in steps:
            try:
                fn()
            except MigratorError as ex:
                left.append(f"cleanup of {what} failed: {ex}")
        return left

    def target_copy(self) -> str | None:
        """Our container on the target: by recorded id, else by name if made after we started
        and never run (a controller killed between create and record)."""
        if self.entry.target_id:
            return self.entry.target_id
        try:  # one never recorded was never started either: at worst a stopped leftover
            info = self.target_engine.inspect(self.entry.container)
        except MigratorError:
            return None
        if info and info["State"].get("Status") == "created" and _created(info) >= self.entry.started:
            return str(info["Id"])
        return None

    def finish(self) -> list[str]:
        """The target is the container now: remove the source (unless kept, stopped) and
        everything temporary, the checkpoint images with it."""
        entry, warnings = self.entry, []
        try:
            rc = checkpoint.release(self.src, entry.migration_id, commit=True)
        except MigratorError as ex:
            self.unfinished = True
            return [f"{self.src.name}: {entry.container} stays frozen there, cut off from the network, "
                    f"because it could not be told to stop ({ex}); run `migrator recover` once it answers"]
        if rc:
            warnings.append(f"{self.src.name}: the held dump ended with status {rc} after the commit")
        if not entry.keep_source:
            try:
                self.source_engine.remove_container(entry.container_id)
            except MigratorError as ex:
                warnings.append(f"cleanup of {self.src.name}: container {entry.container} failed: {ex}")
        return warnings + self.common_cleanup()

    def remove_target_copy(self) -> tuple[bool, list[str]]:
        """Make sure the target copy cannot run. Returns (sure, what is left over there)."""
        entry, left = self.entry, []
        target_id = self.target_copy()
        if target_id:
            try:
                self.target_engine.remove_container(target_id)
            except MigratorError as ex:
                if not entry.target_started:  # never started: it cannot run, whatever state its host is in
                    left.append(f"{self.dst.name}: container {entry.container} ({target_id[:12]}) was created "
                                f"there and never started ({ex.message})")
                elif runtime_stopped(self.dst, target_id):
                    left.append(f"{self.dst.name}: container {entry.container} ({target_id[:12]}) is left "
                                "there, not running (its dockerd is down)")
                else:
                    return False, [f"{self.dst.name}: container {entry.container} may still run ({ex}); the "
                                   f"source was NOT restarted, to never run two copies. Stop it there, then "
                                   f"run `migrator recover`"]
        return True, left

    def undo_and_clean(self) -> list[str]:
        """Undo what was made (newest first), then the common cleanup. What is undone is
        dropped from the journal, so a later `recover` retries only what failed."""
        left = []
        for record in list(reversed(self.entry.undo)):
            try:
                self._undo(record)
                self.entry.undo.remove(record)
            except MigratorError as ex:
                left.append(f"undo {record}: {ex}")
        return left + self.common_cleanup()

    def roll_back(self) -> tuple[bool, list[str]]:
        """Target copy gone, source running again (from its checkpoint if it was frozen), and
        answering. Returns (source is back, what is left over)."""
        entry = self.entry
        safe, left = self.remove_target_copy()
        if not safe:
            return False, left
        if entry.address_moves and entry.target_started:  # what a dead target dockerd left holds it no more
            try:
                self.dst.run(hostscripts.argv(self.dst, "release-address.sh",
                                              *[w for a in entry.addresses for w in ("--address", a)]))
            except MigratorError as ex:
                left.append(f"{self.dst.name}: could not make sure nothing there still holds "
                            f"{' '.join(entry.addresses)} ({tail(str(ex))})")
        restore_error: MigratorError | None = None
        try:  # a held dump: CRIU resumes the processes, untouched
            checkpoint.release(self.src, entry.migration_id, commit=False)
        except MigratorError as ex:
            left.append(str(ex))
        info = self.source_engine.inspect(entry.container_id)
        if info is None:
            return False, left + [f"{self.src.name}: container {entry.container} is gone"]
        if info["State"].get("Running"):  # resumed, or the dump did not complete
            checkpoint.repair(self.src, entry.container_id)
        else:
            try:
                if not (entry.src_img and self.src.ok(["test", "-f", f"{entry.src_img}/MANIFEST"])):
                    raise MigratorError("no complete checkpoint of it was made")
                checkpoint.start_from_images(self.src, self.source_engine, entry.container_id, entry.src_img,
                                             entry.migration_id, keep_connections=entry.keep_connections,
                                             address_moves=entry.address_moves, addresses=entry.addresses)
                self.restored = True
            except MigratorError as ex:
                restore_error = ex
        back = answers(self.src, self.source_engine, entry.container_id, entry.ports, timeout=20)
        if not back:
            left.append(
                f"{self.src.name}: {entry.container} is not running"
                + (f" ({restore_error})" if restore_error else "")
                + f"; its CRIU images (if the freeze completed) are in {entry.src_img or 'none'} on "
                f"{self.src.name}. Once the cause is fixed, `migrator recover` tries again; or "
                f"`docker start {entry.container}` there, losing its memory state")
            return False, left
        return True, left + self.undo_and_clean()


def _created(info: dict[str, Any]) -> float:
    try:
        return datetime.fromisoformat(str(info["Created"])[:26].rstrip("Z") + "+00:00").timestamp()
    except (KeyError, ValueError):
        return 0.0
