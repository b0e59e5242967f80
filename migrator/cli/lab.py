"""hosts, and the lab: up, down, status, restart."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from .. import hosts as hosts_module
from .. import inventory as inventory_module
from ..errors import MigratorError
from .base import app, lab_app, load_inventory
from .render import fail, out, print_json, progress_line, status_table

LAB_INVENTORY = Path("inventory/lab.yaml")


@app.command("hosts")
def hosts_cmd(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List the inventory's hosts with reachability (SSH + docker) and versions."""
    try:
        inv = load_inventory()
    except MigratorError as ex:
        fail(ex)
    rows = hosts_module.probe_all(list(inv.hosts.values()))
    if as_json:
        print_json([asdict(r) for r in rows])
    else:
        out.print(status_table(rows))
    if not all(r.reachable for r in rows):
        raise typer.Exit(1)


def lab(root: Path | None = None) -> Any:
    """The lab (the default one, or the one in `root`)."""
    from ..lab import LAB_DIR, Lab

    return Lab(root or LAB_DIR, progress=progress_line)


def _per_host(values: list[str] | None, option: str) -> dict[str, str]:
    out = {}
    for v in values or []:
        host, sep, value = v.partition("=")
        if not sep or not host or not value:
            raise MigratorError(f"{option} {v!r}: expected HOST=VALUE", hint=f"e.g. {option} lab2=26")
        out[host] = value
    return out


@lab_app.command("up")
def lab_up(
    n: Annotated[int, typer.Option("--hosts", help="How many hosts.")] = 3,
    engine: Annotated[list[str] | None, typer.Option(
        "--engine", help="HOST=VERSION: the Docker engine of a host, 20.10 (default), 26 or 28 (repeatable).")] = None,
    store: Annotated[list[str] | None, typer.Option(
        "--store", help="HOST=snapshotter: the containerd image store on a host with Docker 26 or 28 "
        "(default overlay2; repeatable).")] = None,
    rebuild: Annotated[list[str] | None, typer.Option(
        "--rebuild", help="HOST: wipe this host (its containers, images, state) and make it afresh (repeatable).")
    ] = None,
) -> None:
    """Create hosts lab1..labN and write inventory/lab.yaml (a no-op when already up; a broken
    host is repaired keeping its containers; a host given another engine or store is switched to it)."""
    try:
        the_lab = lab()
        done = the_lab.up(n, LAB_INVENTORY, engines=_per_host(engine, "--engine"), stores=_per_host(store, "--store"),
                          rebuild=set(rebuild or []))
    except MigratorError as ex:
        fail(ex)
    if done:
        for line in done:
            out.print(line)
    else:
        out.print(f"lab already up: {', '.join(h.name for h in the_lab.hosts())} (nothing to do)")
    out.print(f"inventory: {LAB_INVENTORY}")


@lab_app.command("down")
def lab_down() -> None:
    """Remove every process, namespace, mount, bridge and directory the lab made."""
    try:
        done = lab().down()
    except MigratorError as ex:
        fail(ex)
    out.print("\n".join(done) if done else "lab is not up (nothing to do)")


@lab_app.command("status")
def lab_status(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Each lab host: address, reachable, docker and CRIU versions, containers running."""
    try:
        if not lab().hosts():
            out.print("lab is not up (`migrator lab up` makes it)")
            raise typer.Exit(1)
        rows = hosts_module.probe_all(list(inventory_module.load(LAB_INVENTORY).hosts.values()))
    except MigratorError as ex:
        fail(ex)
    if as_json:
        print_json([asdict(r) for r in rows])
    else:
        out.print(status_table(rows))


@lab_app.command("restart")
def lab_restart(host: str) -> None:
    """Restart a lab host's dockerd and sshd: what a reboot does to its containers."""
    try:
        lab().restart(host)
    except MigratorError as ex:
        fail(ex)
    out.print(f"{host}: restarted")
