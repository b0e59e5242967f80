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
