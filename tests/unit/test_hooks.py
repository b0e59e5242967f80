"""The operator's hooks: parsed, checked and run with the move's facts (no shell quoting of
them: they are environment variables)."""

from __future__ import annotations

import pytest

from migrator import hooks
from migrator.errors import MigratorError


def test_hooks_parse_stage_and_command_in_order() -> None:
    assert hooks.parse(["pre-freeze=a=b c", "post-restore=x", "pre-freeze=y"]) == {
        "pre-freeze": ["a=b c", "y"], "post-restore": ["x"]}
    for bad in ["freeze=x", "pre-freeze", "pre-freeze=  "]:
        with pytest.raises(MigratorError, match="STAGE=COMMAND"):
            hooks.parse([bad])
    assert hooks.check({"post-rollback": "x", "pre-freeze": ["a", "b"]}) == {
        "post-rollback": ["x"], "pre-freeze": ["a", "b"]}
    with pytest.raises(MigratorError, match="unknown"):
        hooks.check({"later": "x"})


def test_hooks_get_the_facts_as_variables_never_as_text() -> None:
    hostile = "kv; touch /tmp/pwned $(id)"
    ran = hooks.run({"post-restore": ['printf "%s|%s" "$MIGRATOR_CONTAINER" "$MIGRATOR_STAGE"']}, "post-restore",
                    {"container": hostile})
    assert [(r.rc, r.output) for r in ran] == [(0, f"{hostile}|post-restore")]


def test_the_first_failing_hook_ends_its_stage_and_says_what_it_printed() -> None:
    ran = hooks.run({"pre-freeze": ["echo one", "echo no >&2; exit 4", "echo never"]}, "pre-freeze", {})
    assert [(r.command, r.rc, r.output) for r in ran] == [("echo one", 0, "one"), ("echo no >&2; exit 4", 4, "no")]
    assert hooks.run({}, "pre-freeze", {}) == []
