"""Stored checkpoints (create, ls, rm), persist, restore, clone."""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..controller import atomic_write
from ..errors import MigratorError
from .base import AsJson, BindMounts, CheckpointBinds, OnHost, app, checkpoint_app, host_of, load_inventory, state
from .render import err, fail, human, note, out, print_json, stamp


@checkpoint_app.command("create")
def checkpoint_create(
    container: str, on: OnHost,
    leave_running: Annotated[bool, typer.Option("--leave-running", help="Keep it running.")] = False,
    name: Annotated[str | None, typer.Option("--name", help="Checkpoint name (default: time).")] = None,
    bind_mounts: CheckpointBinds = None,
    as_json: AsJson = False,
) -> None:
    """Checkpoint a container into the host's store (memory, filesystem diff, config)."""
    from .. import store

    try:
        with host_of(on) as h:
            stored = store.create(h, container, name, leave_running=leave_running, bind_mounts=bind_mounts)
    except MigratorError as ex:
        fail(ex)
    if as_json:
        print_json(stored.to_dict())
    else:
        out.print(f"{stored.name}: {human(stored.size)} at {on}:{stored.path}"
                  + ("" if leave_running else f" ({container} is stopped)"))


@checkpoint_app.command("ls")
def checkpoint_ls(container: Annotated[str | None, typer.Argument()] = None, *, on: OnHost,
                  as_json: AsJson = False) -> None:
    """List complete checkpoints (newest last)."""
    from .. import store

    try:
        with host_of(on) as h:
            found = store.list_(h, container)
    except MigratorError as ex:
        fail(ex)
    if as_json:
        print_json([s.to_dict() for s in found])
        return
    t = Table("container", "name", "time (UTC)", "size", "image", "copy")
    for s in found:
        t.add_row(s.container, s.name, stamp(s.created), human(s.size), s.image,
                  f"replica of {s.source_host}" if s.replica else "original")
    out.print(t)


@checkpoint_app.command("rm")
def checkpoint_rm(container: str, name: str, on: OnHost) -> None:
    """Remove one stored checkpoint."""
    from .. import store

    try:
        with host_of(on) as h:
            store.remove(h, container, name)
    except MigratorError as ex:
        fail(ex)
    out.print(f"removed {name} of {container} on {on}")


@app.command("persist")
def persist_cmd(
    container: str, on: OnHost,
    every: Annotated[str, typer.Option("--every", help="Interval: 500ms, 5s, 2m, 1h.")] = "5s",
    keep: Annotated[int, typer.Option("--keep", help="How many to keep.")] = 5,
    replicate_to: Annotated[str | None, typer.Option("--replicate-to", help="Copy each here.")] = None,
    install_systemd: Annotated[bool, typer.Option("--install-systemd", help="Write a unit file.")] = False,
    print_unit: Annotated[bool, typer.Option("--print-unit", help="Print the unit file.")] = False,
    bind_mounts: CheckpointBinds = None,
) -> None:
    """Checkpoint a running container every interval, keeping the newest few, so that its
    state survives a stop or a crash (`migrator restore` starts it from the latest)."""
    from .. import persist

    try:
        interval = persist.parse_duration(every)
        inv = load_inventory()
        inv.host(on)
        if replicate_to:
            inv.host(replicate_to)
        if print_unit or install_systemd:
            unit = persist.systemd_unit(state.inventory, container, on, every, keep, replicate_to, bind_mounts)
            if print_unit:
                sys.stdout.write(unit)
            if install_systemd:
                path = Path(os.environ.get("MIGRATOR_SYSTEMD_DIR", "/etc/systemd/system")) / persist.unit_name(
                    container, on)
                atomic_write(path, unit, 0o644)
                out.print(f"wrote {path}; enable it: systemctl daemon-reload && "
                          f"systemctl enable --now {path.name}")
            return
        stop = threading.Event()
        with host_of(on) as h:
            replica = host_of(replicate_to) if replicate_to else None
            p = persist.Persist(h, container, interval, keep, replicate_to=replica, stop=stop, bind_mounts=bind_mounts,
                                say=lambda m: out.print(m, highlight=False))
            try:
                n = p.run()
            except KeyboardInterrupt:
                stop.set()
                n = p.taken
                err.print("interrupted; the last complete checkpoint stays")
            finally:
                if replica is not None:
                    replica.close()
    except MigratorError as ex:
        fail(ex)
    out.print(f"{n} checkpoints taken")


@app.command("restore")
def restore_cmd(
    container: str, on: OnHost,
    checkpoint: Annotated[str, typer.Option("--checkpoint", help="Name, or latest.")] = "latest",
    from_host: Annotated[str | None, typer.Option("--from", help="Take it from this host's store.")] = None,
    as_json: AsJson = False,
) -> None:
    """Start a container from a stored checkpoint (after a stop, a crash, or on another host)."""
    from .. import store

    try:
        with host_of(on) as h:
            src = host_of(from_host) if from_host else None
            try:
                stored = store.restore(h, container, checkpoint, src)
            finally:
                if src is not None:
                    src.close()
    except MigratorError as ex:
        fail(ex)
    if as_json:
        print_json(stored.to_dict())
    else:
        out.print(f"{container} runs on {on} from checkpoint {stored.name}")


@app.command("clone")
def clone_cmd(
    container: str,
    source: Annotated[str, typer.Option("--from", help="Host it runs on.")],
    target: Annotated[str, typer.Option("--to", help="Host for the copy (may be the same).")],
    name: Annotated[str, typer.Option("--name", help="Name of the copy.")],
    publish: Annotated[list[str] | None, typer.Option("--publish", "-p",
                       help="[IP:]HOSTPORT:CONTAINERPORT for the copy (repeatable).")] = None,
    bind_mounts: BindMounts = None,
    as_json: AsJson = False,
) -> None:
    """A running copy of a running container; the original keeps running, untouched."""
    from ..clone import clone

    try:
        with host_of(source) as s, host_of(target) as t:
            rep = clone(s, t, container, name, publish, bind_mounts=bind_mounts)
    except MigratorError as ex:
        fail(ex)
    if as_json:
        print_json(asdict(rep))
    else:
        out.print(f"{name} runs on {target}, a copy of {container} on {source} ({rep.seconds:.2f} s)")
        for n in rep.notes:
            note(n)
