"""cordon, uncordon, drain, evacuate, play."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ..errors import ExitCode, MigratorError, PlanError
from .base import (
    AsJson,
    BindMounts,
    Connections,
    Hooks,
    RemoveSourceVolumes,
    app,
    connections_option,
    host_of,
    hosts_option,
    load_inventory,
)
from .render import err, fail, fleet_events, note, out, plan_table, print_json, progress_line, styled


@app.command("cordon")
def cordon_cmd(host: str, reason: Annotated[str, typer.Option("--reason")] = "") -> None:
    """Mark a host so that it is never chosen as a target (the mark lives on the host)."""
    from .. import hosts

    try:
        with host_of(host) as h:
            hosts.cordon(h, reason)
    except MigratorError as ex:
        fail(ex)
    out.print(f"{host}: cordoned")


@app.command("uncordon")
def uncordon_cmd(host: str) -> None:
    """Allow a host to receive containers again."""
    from .. import hosts

    try:
        with host_of(host) as h:
            hosts.uncordon(h)
    except MigratorError as ex:
        fail(ex)
    out.print(f"{host}: uncordoned")


def _read_plan(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as ex:
        raise PlanError(f"--plan {path}: {ex}") from None


@app.command("drain")
def drain_cmd(
    host: str,
    to: Annotated[str | None, typer.Option("--to", help="Targets, comma-separated (default: all).")] = None,
    select: Annotated[str | None, typer.Option("--select", help="Only containers with LABEL=VALUE.")] = None,
    parallel: Annotated[int, typer.Option("--parallel", help="Migrations at once.")] = 1,
    frozen: Annotated[int, typer.Option(
        "--frozen", help="Containers frozen at once (more: a shorter drain, longer downtimes).")] = 1,
    bind_mounts: BindMounts = None,
    remove_source_volumes: RemoveSourceVolumes = False,
    connections: Connections = None,
    hook: Hooks = None,
    plan_file: Annotated[Path | None, typer.Option(
        "--plan", help="Carry out this plan (from `drain --dry-run --json`); refused if the facts changed.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; change nothing.")] = False,
    as_json: AsJson = False,
) -> None:
    """Cordon a host and move every running container off it (e.g. before patching)."""
    from .. import fleet, hooks

    try:
        planned = fleet.Plan.from_dict(_read_plan(plan_file)) if plan_file else None
        plan = fleet.drain(load_inventory(), host, to=hosts_option(to), select=select, parallel=parallel,
                           frozen=frozen, bind_mounts=bind_mounts, remove_source_volumes=remove_source_volumes,
                           connections=connections_option(connections), hooks=hooks.parse(hook),
                           dry_run=dry_run, planned=planned, events=None if as_json else fleet_events)
    except MigratorError as ex:
        fail(ex)
    if as_json:
        print_json(plan.to_dict())
    else:
        out.print(plan_table(plan, f"drain {host}" + (" (dry run: nothing changed)" if dry_run else "")))
    if not dry_run and not fleet.drain_ok(plan):
        raise typer.Exit(int(ExitCode.FAILED_NOT_ROLLED_BACK))


@app.command("evacuate")
def evacuate_cmd(
    host: str,
    parallel: Annotated[int, typer.Option("--parallel", help="Migrations at once.")] = 4,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; change nothing.")] = False,
    as_json: AsJson = False,
) -> None:
    """A failing host: drain it if it answers, else restore its containers from replicas."""
    from .. import fleet

    try:
        evacuation = fleet.evacuate(load_inventory(), host, parallel=parallel, dry_run=dry_run,
                                    events=None if as_json else fleet_events)
    except MigratorError as ex:
        fail(ex)
    if as_json:
        print_json(evacuation.to_dict())
    elif evacuation.plan is not None:
        out.print(plan_table(evacuation.plan, f"evacuate {host} (reachable: drained)"))
    else:
        t = Table("container", "restored on", "checkpoint", "outcome", title=f"evacuate {host} (unreachable)")
        for r in evacuation.restored:
            t.add_row(r["container"], r["host"], r["checkpoint"], r["outcome"])
        out.print(t)
        for lost in evacuation.lost:
            err.print(styled("red", "not recovered:", f" {lost['container']}: {lost['why']}"), highlight=False)
    for n in evacuation.notes:
        note(n)
    if not dry_run and not evacuation.ok:
        raise typer.Exit(int(ExitCode.FAILED_NOT_ROLLED_BACK))


@app.command("play")
def play_cmd(
    playbook: Path,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print steps and drain plans; change nothing.")] = False,
    limit: Annotated[str | None, typer.Option("--limit", help="Only these hosts, comma-separated.")] = None,
    start_at: Annotated[str | None, typer.Option("--start-at", help="Step number or name to start at.")] = None,
    extra: Annotated[list[str] | None, typer.Option("-e", "--extra-var", help="KEY=VALUE (repeatable).")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Answer yes to every confirm step.")] = False,
    as_json: AsJson = False,
) -> None:
    """Run a playbook (rolling patch, host replacement, ...) over inventory hosts."""
    from .. import playbook as playbook_module
    from .lab import lab

    def confirm(msg: str) -> bool:
        if yes:
            return True
        if not sys.stdin.isatty():
            return False
        return typer.confirm(msg)

    def reboot_lab(host: str, engine: str | None) -> None:
        where = load_inventory().host(host).labels.get("lab_dir")
        the_lab = lab(Path(where) if where else None)
        if engine:
            lab_host = the_lab.host(host)
            the_lab.switch_engine(lab_host, engine, lab_host.store)
            the_lab.save_host(lab_host)
        else:
            the_lab.restart(host)

    try:
        variables = {}
        for kv in extra or []:
            k, sep, v = kv.partition("=")
            if not sep or not k:
                raise MigratorError(f"-e {kv!r}: expected KEY=VALUE")
            variables[k] = v
        book = playbook_module.load(playbook, variables)
        play = playbook_module.Play(load_inventory(), book, limit=hosts_option(limit), confirm=confirm,
                                    reboot_lab=reboot_lab, say=None if as_json else progress_line)
        rep = play.run(dry_run=dry_run, start_at=start_at)
    except MigratorError as ex:
        if as_json and ex.report is not None:
            print_json(asdict(ex.report))  # type: ignore[call-overload]
        fail(ex)
    if as_json:
        print_json(asdict(rep))
        return
    t = Table("step", "host", "ok", "seconds", "detail", title=f"{rep.playbook}" + (" (dry run)" if dry_run else ""))
    for r in rep.results:
        t.add_row(f"{r.step} {r.name}", r.host, "yes" if r.ok else styled("red", "no"), f"{r.seconds:.1f}", r.detail)
    out.print(t)
