from pathlib import Path

import pytest

from migrator.errors import MigratorError
from migrator.inventory import load as load_inv
from migrator.playbook import Play, PlaybookError, load

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["rolling-patch", "replace-host", "move-to-bigger-host"])
def test_shipped_playbooks_load(name: str) -> None:
    pb = load(ROOT / "playbooks" / f"{name}.yaml")
    assert pb.steps


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "pb.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text, needle", [
    ("hosts: [a]\nsteps:\n  - dran: {}\n", "step 1: one action"),
    ("hosts: [a]\nsteps:\n  - drain: {paralel: 2}\n", "unknown parameter(s) paralel"),
    ("hosts: [a]\nsteps:\n  - migrate: {to: b}\n", "name a container or a project"),
    ("hosts: [a]\nsteps:\n  - migrate: {to: b, container: x, project: y}\n", "name a container or a project"),
    ("hosts: [a]\nsteps:\n  - drain: {bind_mounts: copy}\n", "bind_mounts must be one of sync, shared, not 'copy'"),
    ("steps:\n  - cordon: {}\n", "'hosts'"),
    ("hosts: [a]\nserial: 0\nsteps:\n  - cordon: {}\n", "'serial'"),
    ("hosts: [a]\nstep:\n  - cordon: {}\n", "unknown key(s) step"),
])
def test_malformed(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(PlaybookError) as e:
        load(write(tmp_path, text))
    assert needle in str(e.value)


def inventory(tmp_path: Path):  # type: ignore[no-untyped-def]
    p = tmp_path / "inv.yaml"
    p.write_text("hosts:\n  a: {address: 10.0.0.1}\n  b: {address: 10.0.0.2}\n  c: {address: 10.0.0.3}\n"
                 "groups:\n  all: [a, b, c]\n")
    return load_inv(p)


def test_batches_limit_and_vars(tmp_path: Path) -> None:
    pb = load(write(tmp_path, "hosts: '{{ g }}'\nserial: 2\nvars: {g: all}\nsteps:\n  - run: 'echo {{ host }}'\n"))
    assert pb.hosts == ["all"]
    play = Play(inventory(tmp_path), pb)
    assert play.batches() == [["a", "b"], ["c"]]
    play = Play(inventory(tmp_path), pb, limit=["c", "a"])
    assert play.hosts == ["a", "c"]
    with pytest.raises(MigratorError):
        Play(inventory(tmp_path), pb, limit=["zz"])


def test_dry_run_resolves_vars_and_start_at(tmp_path: Path) -> None:
    pb = load(write(tmp_path, "hosts: [a, b]\nsteps:\n  - name: one\n    run: 'x {{ host }} {{ v }}'\n"
                    "  - name: two\n    uncordon: {}\n"), {"v": "42"})
    rep = Play(inventory(tmp_path), pb).run(dry_run=True, start_at="two")
    assert [(r.step, r.host) for r in rep.results] == [(2, "a"), (1, "b"), (2, "b")]
    rep = Play(inventory(tmp_path), pb).run(dry_run=True)
    assert "x a 42" in rep.results[0].detail
    with pytest.raises(PlaybookError, match="undefined variable 'nope'"):
        Play(inventory(tmp_path), load(write(tmp_path, "hosts: [a]\nsteps:\n  - run: '{{ nope }}'\n"))).run(
            dry_run=True)


@pytest.mark.parametrize("text, needle", [
    ("hosts: [a]\nsteps:\n  - cordon: {}\n  - wait_for_ssh: {timeout: soon}\n",
     "pb.yaml:4: step 2 (wait_for_ssh): timeout must be a number of seconds, not 'soon'"),
    ("hosts: [a]\nsteps:\n  - drain: {parallel: 0}\n", "pb.yaml:3: step 1 (drain): parallel must be a whole number"),
    ("hosts: [a]\nsteps:\n  - drain: {parallel: true}\n", "parallel must be a whole number >= 1, not True"),
    ("hosts: [a]\nsteps:\n  - checkpoint: {container: [x]}\n", "container must be text, not ['x']"),
    ("hosts: [a]\nsteps:\n  - drain: {select: app}\n", "select must be LABEL=VALUE"),
    ("hosts: [a]\nsteps:\n  - migrate: {container: x, to: b, connections: always}\n",
     "connections must be keep or close"),
    ("hosts: [a]\nsteps:\n  - drain: {hooks: {later: x}}\n", "hooks must be a mapping of stage (pre-freeze"),
])
def test_parameters_are_checked_at_load_with_file_and_line(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(PlaybookError) as e:
        load(write(tmp_path, text))
    assert needle in str(e.value)


def test_a_variable_s_value_never_becomes_shell_syntax(tmp_path: Path) -> None:
    """In a run command a variable is one quoted word, whatever it holds; other parameters
    get it as it is. A value checked only once substituted (it had a variable) is checked then."""
    text = ("hosts: [a]\nsteps:\n  - run: 'echo {{ v }}'\n  - cordon: {reason: '{{ v }}'}\n"
            "  - wait_for_ssh: {timeout: '{{ t }}'}\n")
    pb = load(write(tmp_path, text), {"v": "x; touch /tmp/pwned $(id)", "t": "900"})
    rep = Play(inventory(tmp_path), pb).run(dry_run=True)
    assert "echo 'x; touch /tmp/pwned $(id)'" in rep.results[0].detail
    assert "x; touch /tmp/pwned $(id)" in rep.results[1].detail
    pb = load(write(tmp_path, text), {"v": "", "t": "later"})
    with pytest.raises(PlaybookError, match=r"step 3 \(wait_for_ssh\): timeout must be a number of seconds"):
        Play(inventory(tmp_path), pb).run(dry_run=True, start_at="3")


def test_a_variable_in_a_hook_is_one_quoted_word(tmp_path: Path) -> None:
    from migrator.playbook import _subst

    pb = load(write(tmp_path, "hosts: [a]\nsteps:\n  - drain: {hooks: {post-restore: 'lb add {{ v }}'}}\n"),
              {"v": "x; rm -rf /"})
    assert _subst(pb.steps[0].params, pb.vars, pb.path) == {"hooks": {"post-restore": "lb add 'x; rm -rf /'"}}
