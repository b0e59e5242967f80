"""migrate and recover."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

import typer

from ..errors import ExitCode, MigratorError
from .base import BindMounts, Connections, Hooks, RemoveSourceVolumes, app, connections_option, load_inventory
from .render import Renderer, fail, out, preflight_table, print_json, project_events, report_table, warn


@app.command("migrate")
def migrate_cmd(
    source: Annotated[str, typer.Option("--from", help="Source host (inventory name).")],
    target: Annotated[str, typer.Option("--to", help="Target host (inventory name).")],
    container: Annotated[str | None, typer.Argument(help="Container name or id on the source.")] = None,
    project: Annotated[str | None, typer.Option(
        "--project", help="Move every running container of this compose project, as one unit.")] = None,
    keep_source: Annotated[bool, typer.Option(
        "--keep-source", help="Keep the source container, stopped.")] = False,
    relay: Annotated[bool, typer.Option("--relay", help="Send data through this machine.")] = False,
    bind_mounts: BindMounts = None,
    remove_source_volumes: RemoveSourceVolumes = False,
    connections: Connections = None,
    hook: Hooks = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Plan and preflight only; change nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Live-migrate a running container (or a compose project) to another host, memory and files included."""
    from .. import hooks
    from ..migrate import Migration
    from ..project import ProjectMove

    try:
        options: dict[str, Any] = {"keep_source": keep_source, "relay": relay, "bind_mounts": bind_mounts,
                                   "remove_source_volumes": remove_source_volumes, "hooks": hooks.parse(hook),
                                   "connections": connections_option(connections)}
        if (container is None) == (project is None):
            raise MigratorError("name a container or a --project, not both" if container else
                                "which container? name one, or a compose project with --project")
        if project is not None:
            rep: Any = ProjectMove(load_inventory(), project, source, target,
                                   events=None if as_json else project_events, **options).run(dry_run=dry_run)
        else:
            rep = Migration(load_inventory(), container or "", source, target, events=Renderer(quiet=False),
                            **options).run(dry_run=dry_run)
    except MigratorError as ex:
        if as_json and ex.report is not None:
            print_json(ex.report.to_dict())  # type: ignore[attr-defined]
        fail(ex)
    if as_json:
        print_json(rep.to_dict())
        return
    for r in rep.moves if project is not None else [rep]:
        out.print(preflight_table(r) if dry_run else report_table(r))
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
