"""The Typer apps, the options every command shares, and the inventory they use."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from .. import inventory as inventory_module
from ..transport import Host

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Live-migrate running Docker containers between hosts with CRIU.")
lab_app = typer.Typer(no_args_is_help=True, help="A local multi-host lab (root): real dockerd, CRIU, sshd.")
app.add_typer(lab_app, name="lab")
checkpoint_app = typer.Typer(no_args_is_help=True, help="Stored checkpoints on a host: create, ls, rm.")
app.add_typer(checkpoint_app, name="checkpoint")

OnHost = Annotated[str, typer.Option("--on", help="Host (inventory name).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]
BindMounts = Annotated[str | None, typer.Option(
    "--bind-mounts", help="sync: copy bind-mounted host paths to the same paths on the target; shared: they are "
    "the same storage on both hosts (proven first). Without it a container with bind mounts is refused.")]
CheckpointBinds = Annotated[str | None, typer.Option(
    "--bind-mounts", help="sync: keep a copy of each bind-mounted host path in the checkpoint (a restore puts it "
    "back where the path is missing or empty); shared: keep only the paths (they must be there where it is "
    "restored). Without it a container with bind mounts is refused.")]
RemoveSourceVolumes = Annotated[bool, typer.Option(
    "--remove-source-volumes", help="After a move, remove the named volumes it used on the source (else they "
    "stay there, as they were at the move, and the report names them).")]
Connections = Annotated[bool | None, typer.Option(
    "--keep-connections/--close-connections", help="Restore established TCP connections on the target as they "
    "were (only where the address moves with the container: macvlan/ipvlan networks), or close them (clients "
    "reconnect). Default: kept where the address moves, closed otherwise.", show_default=False)]
Hooks = Annotated[list[str] | None, typer.Option(
    "--hook", metavar="STAGE=COMMAND", help="Run COMMAND on this machine at STAGE (pre-freeze: a failure stops the "
    "move before anything is frozen; post-restore; post-rollback), with the move's facts in MIGRATOR_* "
    "environment variables (CONTAINER, SOURCE, TARGET, SOURCE_ADDRESS, TARGET_ADDRESS, CONTAINER_ADDRESSES, PORTS, "
    "CONNECTIONS, ...). Repeatable.")]


def connections_option(value: bool | None) -> str | None:
    """--keep-connections/--close-connections as Migration takes it."""
    return None if value is None else "keep" if value else "close"


class State:
    inventory: Path = inventory_module.default_path()


state = State()


@app.callback()
def _main(
    inventory: Annotated[Path | None, typer.Option("-i", "--inventory", help="Inventory YAML "
              "(default inventory/hosts.yaml, or $MIGRATOR_INVENTORY).")] = None,
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="Log every command.")] = False,
) -> None:
    state.inventory = inventory or inventory_module.default_path()
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    if not verbose:
        logging.getLogger("paramiko").setLevel(logging.CRITICAL)


def load_inventory() -> inventory_module.Inventory:
    return inventory_module.load(state.inventory)


def host_of(name: str) -> Host:
    return Host(load_inventory().host(name))


def hosts_option(value: str | None) -> list[str] | None:
    """A comma-separated list of host names, or None."""
    return [v.strip() for v in value.split(",") if v.strip()] if value else None
