"""The command line: parses, calls the core, renders. No logic of its own."""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from . import hosts as hosts_mod
from . import inventory as inv_mod
from .errors import ExitCode, MigratorError

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Live-migrate running Docker containers between hosts with CRIU.")
lab_app = typer.Typer(no_args_is_help=True, help="A local multi-host lab (root): real dockerd, CRIU, sshd.")
app.add_typer(lab_app, name="lab")
cp_app = typer.Typer(no_args_is_help=True, help="Stored checkpoints on a host: create, ls, rm.")
app.add_typer(cp_app, name="checkpoint")

# Markup off: messages carry text from hosts and users (CRIU logs, names, paths) in which
# "[...]" is data. Our own styling goes through styled().
out = Console(markup=False)
err = Console(stderr=True, markup=False)


def styled(style: str, label: str, rest: str = "") -> Text:
    return Text.assemble((label, style), rest)
DEBUG_LOG = Path(tempfile.gettempdir()) / "migrator-debug.log"


class State:
    inventory: Path = inv_mod.default_path()


state = State()


@app.callback()
def _main(
    inventory: Annotated[Path | None, typer.Option("-i", "--inventory", help="Inventory YAML "
              "(default inventory/hosts.yaml, or $MIGRATOR_INVENTORY).")] = None,
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="Log every command.")] = False,
) -> None:
    state.inventory = inventory or inv_mod.default_path()
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    if not verbose:
        logging.getLogger("paramiko").setLevel(logging.CRITICAL)


def load_inventory() -> inv_mod.Inventory:
    return inv_mod.load(state.inventory)


def fail(e: MigratorError) -> NoReturn:
    err.print(styled("red", "error:", f" {e}"), highlight=False, soft_wrap=True)
    raise typer.Exit(int(e.exit_code))


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def progress_line(msg: str) -> None:
    err.print(styled("dim", "·", f" {msg}"), highlight=False)


# --- hosts ------------------------------------------------------------------------------
def _status_table(rows: list[hosts_mod.HostStatus]) -> Table:
    t = Table("host", "address", "reachable", "docker", "criu", "running", "note")
    for r in rows:
        reach = styled("green", "yes") if r.reachable else styled("red", "no")
        if r.cordoned:
            reach.append(" (cordoned)", "yellow")
        t.add_row(r.name, r.address, reach,
                  (r.docker_version or "-")
                  + ("" if r.experimental in (None, True) else " (experimental off)"),
                  r.criu_version or "-", ", ".join(r.containers_running) or "-", r.error or "")
    return t


@app.command("hosts")
def hosts_cmd(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List the inventory's hosts with reachability (SSH + docker) and versions."""
    try:
        inv = load_inventory()
    except MigratorError as e:
        fail(e)
    rows = hosts_mod.probe_all(list(inv.hosts.values()))
    if as_json:
        print_json([asdict(r) for r in rows])
    else:
        out.print(_status_table(rows))
    if not all(r.reachable for r in rows):
        raise typer.Exit(1)


# --- migrate ----------------------------------------------------------------------------
class Renderer:
    """Draws the core's events: phase lines always (stderr), byte counts on a terminal."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bytes: dict[str, int] = {}
        self.started: dict[str, float] = {}

    def __call__(self, ev: Any) -> None:
        if self.quiet:
            return
        if ev.kind == "phase":
            self.started[ev.phase] = time.monotonic()
            err.print(styled("bold", ev.phase, " ..."), highlight=False)
        elif ev.kind == "done":
            extra = f", {_human(ev.bytes)}" if ev.bytes else ""
            err.print(f"  {ev.phase} done in {ev.message}{extra}", highlight=False)
        elif ev.kind == "bytes":
            self.bytes[ev.phase] = done = self.bytes.get(ev.phase, 0) + ev.bytes
            if err.is_terminal:
                secs = max(time.monotonic() - self.started.get(ev.phase, time.monotonic()), 1e-3)
                err.print(f"  {ev.phase}: {_human(done)} at {_human(int(done / secs))}/s   ", end="\r",
                          highlight=False)
        elif ev.kind in ("info", "warn"):
            color = "yellow" if ev.kind == "warn" else "dim"
            err.print(styled(color, f"  {ev.message}"), highlight=False)


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _report_table(rep: Any) -> Table:
    t = Table("phase", "seconds", "bytes", title=f"{rep.container}: {rep.source} -> {rep.target}: "
              f"{rep.status}")
    for p in rep.phases:
        t.add_row(p.name, f"{p.seconds:.2f}", _human(p.bytes) if p.bytes else "")
    t.add_row(styled("bold", "downtime"), f"{rep.downtime_s:.2f}", "")
    t.add_row(styled("bold", "total"), f"{rep.total_s:.2f}", _human(rep.bytes_sent))
    return t


@app.command("migrate")
def migrate_cmd(
    container: Annotated[str, typer.Argument(help="Container name or id on the source.")],
    source: Annotated[str, typer.Option("--from", help="Source host (inventory name).")],
    target: Annotated[str, typer.Option("--to", help="Target host (inventory name).")],
    keep_source: Annotated[bool, typer.Option(
        "--keep-source", help="Keep the source container, stopped.")] = False,
    relay: Annotated[bool, typer.Option("--relay", help="Send data through this machine.")] = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Plan and preflight only; change nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Live-migrate a running container to another host, memory and files included."""
    from .migrate import Migration

    rep = None
    try:
        m = Migration(load_inventory(), container, source, target, keep_source=keep_source,
                      relay=relay, events=Renderer(quiet=False))
        rep = m.run(dry_run=dry_run)
    except MigratorError as e:
        if as_json and e.report is not None:
            print_json(e.report.to_dict())  # type: ignore[attr-defined]
        fail(e)
    if as_json:
        print_json(rep.to_dict())
    elif dry_run:
        t = Table("host", "check", "result", title=f"plan: move {rep.container} {rep.source} -> "
                  f"{rep.target} (preflight passed; nothing changed)")
        for c in rep.preflight:
            t.add_row(c["host"], c["name"], styled("green", "ok") if c["ok"] else styled("red", c["detail"]))
        out.print(t)
    else:
        out.print(_report_table(rep))
        for w in rep.warnings:
            err.print(styled("yellow", "warning:", f" {w}"), highlight=False)


@app.command("recover")
def recover_cmd(
    migration: Annotated[str | None, typer.Argument(
        help="A migration id or container (default: all).")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Finish or roll back migrations whose controller died (from this controller's journal)."""
    from .migrate import recover

    try:
        results = recover(load_inventory(), migration)
    except MigratorError as e:
        fail(e)
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


# --- fleet: cordon, drain, evacuate ------------------------------------------------------------
def _hosts_opt(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


@app.command("cordon")
def cordon_cmd(host: str, reason: Annotated[str, typer.Option("--reason")] = "") -> None:
    """Mark a host so that it is never chosen as a target (the mark lives on the host)."""
    from . import hosts

    try:
        with host_of(host) as h:
            hosts.cordon(h, reason)
    except MigratorError as e:
        fail(e)
    out.print(f"{host}: cordoned")


@app.command("uncordon")
def uncordon_cmd(host: str) -> None:
    """Allow a host to receive containers again."""
    from . import hosts

    try:
        with host_of(host) as h:
            hosts.uncordon(h)
    except MigratorError as e:
        fail(e)
    out.print(f"{host}: uncordoned")


def _plan_table(plan: Any, title: str) -> Table:
    t = Table("container", "from", "to", "memory", "outcome", "why", title=title)
    for m in plan.moves:
        t.add_row(m.container, m.source, m.target or "-", _human(m.memory), m.outcome,
                  m.error or m.reason or "")
    return t


def _fleet_events(container: str, ev: Any) -> None:
    if ev.kind == "done":
        err.print(f"  {container}: {ev.phase} done in {ev.message}", highlight=False)
    elif ev.kind == "warn":
        err.print(styled("yellow", f"  {container}: {ev.message}"), highlight=False)


@app.command("drain")
def drain_cmd(
    host: str,
    to: Annotated[str | None, typer.Option("--to", help="Targets, comma-separated (default: all).")] = None,
    select: Annotated[str | None, typer.Option("--select", help="Only containers with LABEL=VALUE.")] = None,
    parallel: Annotated[int, typer.Option("--parallel", help="Migrations at once.")] = 1,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; change nothing.")] = False,
    as_json: AsJson = False,
) -> None:
    """Cordon a host and move every running container off it (e.g. before patching)."""
    from . import fleet

    try:
        plan = fleet.drain(load_inventory(), host, to=_hosts_opt(to), select=select, parallel=parallel,
                           dry_run=dry_run, events=None if as_json else _fleet_events)
    except MigratorError as e:
        fail(e)
    if as_json:
        print_json(plan.to_dict())
    else:
        out.print(_plan_table(plan, f"drain {host}" + (" (dry run: nothing changed)" if dry_run else "")))
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
    from . import fleet

    try:
        ev = fleet.evacuate(load_inventory(), host, parallel=parallel, dry_run=dry_run,
                            events=None if as_json else _fleet_events)
    except MigratorError as e:
        fail(e)
    if as_json:
        print_json(ev.to_dict())
    elif ev.plan is not None:
        out.print(_plan_table(ev.plan, f"evacuate {host} (reachable: drained)"))
    else:
        t = Table("container", "restored on", "checkpoint", "outcome", title=f"evacuate {host} (unreachable)")
        for r in ev.restored:
            t.add_row(r["container"], r["host"], r["checkpoint"], r["outcome"])
        out.print(t)
        for lost in ev.lost:
            err.print(styled("red", "not recovered:", f" {lost['container']}: {lost['why']}"), highlight=False)
    for n in ev.notes:
        err.print(f"note: {n}", highlight=False)
    if not dry_run and not ev.ok:
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
    from . import playbook as pb_mod

    def confirm(msg: str) -> bool:
        if yes:
            return True
        if not sys.stdin.isatty():
            return False
        return typer.confirm(msg)

    def reboot_lab(host: str) -> None:
        _lab().restart(host)

    try:
        variables = {}
        for kv in extra or []:
            k, sep, v = kv.partition("=")
            if not sep or not k:
                raise MigratorError(f"-e {kv!r}: expected KEY=VALUE")
            variables[k] = v
        pb = pb_mod.load(playbook, variables)
        play = pb_mod.Play(load_inventory(), pb, limit=_hosts_opt(limit), confirm=confirm,
                           reboot_lab=reboot_lab, say=None if as_json else progress_line)
        rep = play.run(dry_run=dry_run, start_at=start_at)
    except MigratorError as e:
        if as_json and e.report is not None:
            print_json(asdict(e.report))  # type: ignore[call-overload]
        fail(e)
    if as_json:
        print_json(asdict(rep))
        return
    t = Table("step", "host", "ok", "seconds", "detail", title=f"{rep.playbook}" + (" (dry run)" if dry_run else ""))
    for r in rep.results:
        t.add_row(f"{r.step} {r.name}", r.host, "yes" if r.ok else styled("red", "no"), f"{r.seconds:.1f}", r.detail)
    out.print(t)


# --- stored checkpoints, persist, restore, clone --------------------------------------------
def host_of(name: str) -> Any:
    from .transport import Host

    return Host(load_inventory().host(name))


OnHost = Annotated[str, typer.Option("--on", help="Host (inventory name).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@cp_app.command("create")
def checkpoint_create(
    container: str, on: OnHost,
    leave_running: Annotated[bool, typer.Option("--leave-running", help="Keep it running.")] = False,
    name: Annotated[str | None, typer.Option("--name", help="Checkpoint name (default: time).")] = None,
    as_json: AsJson = False,
) -> None:
    """Checkpoint a container into the host's store (memory, filesystem diff, config)."""
    from . import store

    try:
        with host_of(on) as h:
            s = store.create(h, container, name, leave_running=leave_running)
    except MigratorError as e:
        fail(e)
    if as_json:
        print_json(s.to_dict())
    else:
        out.print(f"{s.name}: {_human(s.size)} at {on}:{s.path}"
                  + ("" if leave_running else f" ({container} is stopped)"))


@cp_app.command("ls")
def checkpoint_ls(container: Annotated[str | None, typer.Argument()] = None, *, on: OnHost,
                  as_json: AsJson = False) -> None:
    """List complete checkpoints (newest last)."""
    import time as _t

    from . import store

    try:
        with host_of(on) as h:
            found = store.list_(h, container)
    except MigratorError as e:
        fail(e)
    if as_json:
        print_json([s.to_dict() for s in found])
        return
    t = Table("container", "name", "time (UTC)", "size", "image", "copy")
    for s in found:
        t.add_row(s.container, s.name, _t.strftime("%Y-%m-%d %H:%M:%S", _t.gmtime(s.created)),
                  _human(s.size), s.image, f"replica of {s.source_host}" if s.replica else "original")
    out.print(t)


@cp_app.command("rm")
def checkpoint_rm(container: str, name: str, on: OnHost) -> None:
    """Remove one stored checkpoint."""
    from . import store

    try:
        with host_of(on) as h:
            store.remove(h, container, name)
    except MigratorError as e:
        fail(e)
    out.print(f"removed {name} of {container} on {on}")


@app.command("persist")
def persist_cmd(
    container: str, on: OnHost,
    every: Annotated[str, typer.Option("--every", help="Interval: 500ms, 5s, 2m, 1h.")] = "5s",
    keep: Annotated[int, typer.Option("--keep", help="How many to keep.")] = 5,
    replicate_to: Annotated[str | None, typer.Option("--replicate-to", help="Copy each here.")] = None,
    install_systemd: Annotated[bool, typer.Option("--install-systemd", help="Write a unit file.")] = False,
    print_unit: Annotated[bool, typer.Option("--print-unit", help="Print the unit file.")] = False,
) -> None:
    """Rolling checkpoints of a running container (the seed's run_with_checkpoints)."""
    import threading

    from . import persist

    try:
        interval = persist.parse_duration(every)
        inv = load_inventory()
        inv.host(on)
        if replicate_to:
            inv.host(replicate_to)
        if print_unit or install_systemd:
            unit = persist.systemd_unit(state.inventory, container, on, every, keep, replicate_to)
            if print_unit:
                sys.stdout.write(unit)
            if install_systemd:
                path = Path("/etc/systemd/system") / persist.unit_name(container, on)
                path.write_text(unit)
                out.print(f"wrote {path}; enable it: systemctl daemon-reload && "
                          f"systemctl enable --now {path.name}")
            return
        stop = threading.Event()
        with host_of(on) as h:
            rep = host_of(replicate_to) if replicate_to else None
            p = persist.Persist(h, container, interval, keep, replicate_to=rep, stop=stop,
                                say=lambda m: out.print(m, highlight=False))
            try:
                n = p.run()
            except KeyboardInterrupt:
                stop.set()
                n = p.taken
                err.print("interrupted; the last complete checkpoint stays")
            finally:
                if rep is not None:
                    rep.close()
    except MigratorError as e:
        fail(e)
    out.print(f"{n} checkpoints taken")


@app.command("restore")
def restore_cmd(
    container: str, on: OnHost,
    checkpoint: Annotated[str, typer.Option("--checkpoint", help="Name, or latest.")] = "latest",
    from_host: Annotated[str | None, typer.Option("--from", help="Take it from this host's store.")] = None,
    as_json: AsJson = False,
) -> None:
    """Start a container from a stored checkpoint (after a stop, a crash, or on another host)."""
    from . import store

    try:
        with host_of(on) as h:
            src = host_of(from_host) if from_host else None
            try:
                s = store.restore(h, container, checkpoint, src)
            finally:
                if src is not None:
                    src.close()
    except MigratorError as e:
        fail(e)
    if as_json:
        print_json(s.to_dict())
    else:
        out.print(f"{container} runs on {on} from checkpoint {s.name}")


@app.command("clone")
def clone_cmd(
    container: str,
    source: Annotated[str, typer.Option("--from", help="Host it runs on.")],
    target: Annotated[str, typer.Option("--to", help="Host for the copy (may be the same).")],
    name: Annotated[str, typer.Option("--name", help="Name of the copy.")],
    publish: Annotated[list[str] | None, typer.Option("--publish", "-p",
                       help="[IP:]HOSTPORT:CONTAINERPORT for the copy (repeatable).")] = None,
    as_json: AsJson = False,
) -> None:
    """A running copy of a running container; the original keeps running, untouched."""
    from .clone import clone

    try:
        with host_of(source) as s, host_of(target) as t:
            rep = clone(s, t, container, name, publish)
    except MigratorError as e:
        fail(e)
    if as_json:
        print_json(asdict(rep))
    else:
        out.print(f"{name} runs on {target}, a copy of {container} on {source} ({rep.seconds:.2f} s)")
        for n in rep.notes:
            err.print(f"note: {n}", highlight=False)


# --- lab --------------------------------------------------------------------------------
def _lab() -> Any:
    from .lab import Lab

    return Lab(progress=progress_line)


@lab_app.command("up")
def lab_up(n: Annotated[int, typer.Option("--hosts", help="How many hosts.")] = 3) -> None:
    """Create hosts lab1..labN and write inventory/lab.yaml (a no-op when already up)."""
    try:
        lab = _lab()
        done = lab.up(n, Path("inventory/lab.yaml"))
    except MigratorError as e:
        fail(e)
    if done:
        for line in done:
            out.print(line)
    else:
        out.print(f"lab already up: {', '.join(h.name for h in lab.hosts())} (nothing to do)")
    out.print("inventory: inventory/lab.yaml")


@lab_app.command("down")
def lab_down() -> None:
    """Remove every process, namespace, mount, bridge and directory the lab made."""
    try:
        done = _lab().down()
    except MigratorError as e:
        fail(e)
    out.print("\n".join(done) if done else "lab is not up (nothing to do)")


@lab_app.command("status")
def lab_status(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Each lab host: address, reachable, docker and CRIU versions, containers running."""
    try:
        lab = _lab()
        if not lab.hosts():
            out.print("lab is not up (`migrator lab up` makes it)")
            raise typer.Exit(1)
        rows = hosts_mod.probe_all(list(inv_mod.load(Path("inventory/lab.yaml")).hosts.values()))
    except MigratorError as e:
        fail(e)
    if as_json:
        print_json([asdict(r) for r in rows])
    else:
        out.print(_status_table(rows))


@lab_app.command("restart")
def lab_restart(host: str) -> None:
    """Restart a lab host's dockerd and sshd: what a reboot does to its containers."""
    try:
        _lab().restart(host)
    except MigratorError as e:
        fail(e)
    out.print(f"{host}: restarted")


def main() -> None:
    try:
        app()
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001 - the last net: a bug, not an expected error
        if isinstance(e, KeyboardInterrupt):
            err.print("interrupted")
            sys.exit(130)
        with DEBUG_LOG.open("a") as f:
            f.write(traceback.format_exc())
        err.print(styled("red", "internal error:", f" {e!r}; traceback in {DEBUG_LOG}"))
        sys.exit(int(ExitCode.FAILED_NOT_ROLLED_BACK))


if __name__ == "__main__":
    main()
