"""migrate and recover."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer

from ..errors import ExitCode, MigratorError
from .base import BindMounts, app, load_inventory
from .render import Renderer, fail, out, preflight_table, print_json, report_table, warn


@app.command("migrate")
def migrate_cmd(
    container: Annotated[str, typer.Argument(help="Container name or id on the source.")],
    source: Annotated[str, typer.Option("--from", help="Source host (inventory name).")],
    target: Annotated[str, typer.Option("--to", help="Target host (inventory name).")],
    keep_source: Annotated[bool, typer.Option(
        "--keep-source", help="Keep the source container, stopped.")] = False,
    relay: Annotated[bool, typer.Option("--relay", help="Send data through this machine.")] = False,
    bind_mounts: BindMounts = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Plan and preflight only; change nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Live-migrate a running container to another host, memory and files included."""
    from ..migrate import Migration

    try:
        migration = Migration(load_inventory(), container, source, target, keep_source=keep_source,
                              relay=relay, bind_mounts=bind_mounts, events=Renderer(quiet=False))
        rep = migration.run(dry_run=dry_run)
    except MigratorError as ex:
        if as_json and ex.report is not None:
            print_json(ex.report.to_dict())  # type: ignore[attr-defined]
        fail(ex)
    if as_json:
        print_json(rep.to_dict())
    elif dry_run:
        out.print(preflight_table(rep))
    else:
        out.print(report_table(rep))
        for w in rep.warnings:
            warn(w)


@app.command("recover")
def recover_cmd(
    migration: Annotated[str | None, typer.Argument(
        help="A migration id or container (default: all).")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Finish or roll back migrations whose controller died (from this controller's journal)."""
    from rich.table import Table

    from ..recover import recover

    try:
        results = recover(load_inventory(), migration)
    except MigratorError as ex:
        fail(ex)
    if as_json:
        print_json([asdict(r) for r in results])
    elif not results:
        out.print("nothing to recover")
    else:
        t = Table("migration", "container", "move", "stopped in", "outcome", "notes")
        for r in results:
            t.add_row(r.migration_id, r.container, f"{r.source} -> {r.target}", r.phase, r.outcome,
                      "; ".join(r.notes))
        out.print(t)
    if any(r.outcome == "failed" for r in results):
        raise typer.Exit(int(ExitCode.FAILED_NOT_ROLLED_BACK))
    if any(r.outcome == "running" or r.notes for r in results):  # something is still to do: run it again later
        raise typer.Exit(int(ExitCode.FAILED_ROLLED_BACK))
