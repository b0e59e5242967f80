"""CLI output: text from hosts and users is printed as it is, never read as rich markup."""

from __future__ import annotations

import pytest
import typer

from migrator import cli
from migrator.errors import MigratorError


def test_error_with_brackets_prints_literally(capsys: pytest.CaptureFixture[str]) -> None:
    # a CRIU log tail quoted in an error, and a name someone chose
    msg = "freezing cgroup [/migrator-lab1/cd31]: timeout; container [red]x[/red]"
    with pytest.raises(typer.Exit):
        cli.fail(MigratorError(msg))
    assert capsys.readouterr().err.strip() == f"error: {msg}"


def test_event_messages_print_literally(capsys: pytest.CaptureFixture[str]) -> None:
    from migrator.migrate import Event

    r = cli.Renderer(quiet=False)
    r(Event("warn", "rollback", "lab1: [/x] failed"))
    r(Event("done", "freeze", "0.30 s [b]"))
    err = capsys.readouterr().err
    assert "lab1: [/x] failed" in err and "0.30 s [b]" in err


def test_a_drain_says_one_line_per_container_and_sums_up(capsys: pytest.CaptureFixture[str]) -> None:
    from migrator.cli.render import fleet_events, out, plan_table
    from migrator.fleet import Move, Plan
    from migrator.migrate import Event

    for phase in ("resolve", "freeze", "restore"):  # phases of a move say nothing on their own
        fleet_events("db0", Event("phase", phase))
        fleet_events("db0", Event("done", phase, "0.20 s"))
    fleet_events("db0", Event("end", "migrated", "lab1 -> lab2: migrated in 2.1 s, downtime 0.80 s"))
    fleet_events("db1", Event("end", "rolled_back", "lab1 -> lab3: rolled_back [link] cut"))
    assert capsys.readouterr().err.splitlines() == ["  db0: lab1 -> lab2: migrated in 2.1 s, downtime 0.80 s",
                                                    "  db1: lab1 -> lab3: rolled_back [link] cut"]
    plan = Plan("lab1", [Move("db0", "lab1", "lab2", 1 << 20, outcome="migrated",
                              report={"total_s": 2.1, "downtime_s": 0.8}),
                         Move("db1", "lab1", "lab3", 1 << 20, outcome="rolled_back", error="cut",
                              report={"total_s": 3.0, "downtime_s": 1.4}),
                         Move("db2", "lab1", None, reason="pinned", outcome="stays")], [], seconds=5.2)
    out.print(plan_table(plan, "drain lab1"))
    text = capsys.readouterr().out
    assert "1 migrated, 1 rolled back, 1 stays in 5.2 s; longest downtime 0.80 s" in text
    row = next(line for line in text.splitlines() if "db1" in line)
    assert "rolled" in row and "3.0" in row and "1.40" in row and "cut" in row


def test_the_report_says_what_became_of_the_connections() -> None:
    from migrator.cli.render import report_table
    from migrator.migrate import MigrationReport

    rep = MigrationReport("m", "kv", "a", "b", status="migrated", connections="kept", sockets_restored=2)
    assert report_table(rep).caption == "connections kept (2 restored)"
    rep.connections = "closed"
    assert report_table(rep).caption == "connections closed"
