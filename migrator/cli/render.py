"""How the command line shows things: one console per stream, the core's events as lines
(and, on a terminal, transfer progress), reports as tables or JSON."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.progress import DownloadColumn, Progress, SpinnerColumn, TaskID, TextColumn, TransferSpeedColumn
from rich.table import Table
from rich.text import Text

from ..errors import MigratorError
from ..hosts import HostStatus

# Markup off: messages carry text from hosts and users (CRIU logs, names, paths) in which
# "[...]" is data. Our own styling goes through styled().
out = Console(markup=False)
err = Console(stderr=True, markup=False)


def styled(style: str, label: str, rest: str = "") -> Text:
    return Text.assemble((label, style), rest)


def fail(ex: MigratorError) -> NoReturn:
    err.print(styled("red", "error:", f" {ex}"), highlight=False, soft_wrap=True)
    raise typer.Exit(int(ex.exit_code))


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def progress_line(msg: str) -> None:
    err.print(styled("dim", "·", f" {msg}"), highlight=False)


def warn(msg: str) -> None:
    err.print(styled("yellow", "warning:", f" {msg}"), highlight=False)


def note(msg: str) -> None:
    err.print(f"note: {msg}", highlight=False)


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


class Renderer:
    """Draws the core's events: phase lines always (stderr); bytes moved, with their rate,
    as a progress line on a terminal only."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}

    def __call__(self, ev: Any) -> None:
        if self.quiet:
            return
        if ev.kind == "phase":
            err.print(styled("bold", ev.phase, " ..."), highlight=False)
        elif ev.kind == "done":
            self._finish(ev.phase)
            extra = f", {human(ev.bytes)}" if ev.bytes else ""
            err.print(f"  {ev.phase} done in {ev.message}{extra}", highlight=False)
        elif ev.kind == "bytes" and err.is_terminal:
            self._bar(ev.phase).advance(self._tasks[ev.phase], ev.bytes)
        elif ev.kind in ("info", "warn"):
            color = "yellow" if ev.kind == "warn" else "dim"
            err.print(styled(color, f"  {ev.message}"), highlight=False)

    def _bar(self, phase: str) -> Progress:
        if self._progress is None:
            self._progress = Progress(SpinnerColumn(), TextColumn("  {task.description}"), DownloadColumn(),
                                      TransferSpeedColumn(), console=err, transient=True)
            self._progress.start()
        if phase not in self._tasks:
            self._tasks[phase] = self._progress.add_task(phase, total=None)
        return self._progress

    def _finish(self, phase: str) -> None:
        if self._progress is not None and phase in self._tasks:
            self._progress.remove_task(self._tasks.pop(phase))
            if not self._tasks:
                self._progress.stop()
                self._progress = None


def fleet_events(container: str, ev: Any) -> None:
    """A fleet operation's events: one line per container as it ends its move, and warnings."""
    if ev.kind == "end":
        color = "green" if ev.phase == "migrated" else "red"
        err.print(styled(color, f"  {container}:", f" {ev.message}"), highlight=False)
    elif ev.kind == "warn":
        err.print(styled("yellow", f"  {container}: {ev.message}"), highlight=False)


def project_events(container: str, ev: Any) -> None:
    """A project move's events: each member's phases as they start, and warnings."""
    if ev.kind == "phase":
        err.print(styled("bold", f"{container}:", f" {ev.phase} ..."), highlight=False)
    elif ev.kind in ("info", "warn"):
        err.print(styled("yellow" if ev.kind == "warn" else "dim", f"  {container}: {ev.message}"), highlight=False)


def status_table(rows: list[HostStatus]) -> Table:
    t = Table("host", "address", "reachable", "docker", "api", "storage", "criu", "running", "note")
    for r in rows:
        reach = styled("green", "yes") if r.reachable else styled("red", "no")
        if r.cordoned:
            reach.append(" (cordoned)", "yellow")
        t.add_row(r.name, r.address, reach,
                  (r.docker_version or "-")
                  + ("" if r.experimental in (None, True) else " (experimental off)"),
                  r.api_version or "-", r.storage or "-",
                  r.criu_version or "-", ", ".join(r.containers_running) or "-", r.error or "")
    return t


def report_table(rep: Any) -> Table:
    t = Table("phase", "seconds", "bytes", title=f"{rep.container}: {rep.source} -> {rep.target}: "
              f"{rep.status}")
    for p in rep.phases:
        t.add_row(p.name, f"{p.seconds:.2f}", human(p.bytes) if p.bytes else "")
    t.add_row(styled("bold", "downtime"), f"{rep.downtime_s:.2f}", "")
    t.add_row(styled("bold", "total"), f"{rep.total_s:.2f}", human(rep.bytes_sent))
    if rep.connections:
        t.caption = f"connections {rep.connections}" + (
            f" ({rep.sockets_restored} restored)" if rep.connections == "kept" else "")
    return t


def preflight_table(rep: Any) -> Table:
    t = Table("host", "check", "result", title=f"plan: move {rep.container} {rep.source} -> "
              f"{rep.target} (preflight passed; nothing changed)")
    for c in rep.preflight:
        t.add_row(c["host"], c["name"], styled("green", "ok") if c["ok"] else styled("red", c["detail"]))
    return t


def plan_table(plan: Any, title: str) -> Table:
    t = Table("container", "from", "to", "memory", "outcome", "seconds", "downtime", "why", title=title)
    for m in plan.moves:
        rep = m.report or {}
        ran = m.outcome not in ("planned", "stays")
        t.add_row(m.container + (f" (project {m.project})" if m.project else ""), m.source, m.target or "-",
                  human(m.memory), m.outcome,
                  f"{rep.get('total_s', 0):.1f}" if ran and rep else "-",
                  f"{rep.get('downtime_s', 0):.2f}" if ran and rep else "-", m.error or m.reason or "")
    summary = plan.summary()
    if any(o != "planned" for o in summary["outcomes"]):
        t.caption = (", ".join(f"{n} {o.replace('_', ' ')}" for o, n in sorted(summary["outcomes"].items()))
                     + f" in {summary['seconds']:.1f} s; longest downtime {summary['max_downtime_s']:.2f} s")
    return t


def stamp(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))
