"""The shipped playbooks, run for real over the lab."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from conftest import ROOT, LabHost, check_all, fill, run_cli

PATCH = "test ! -e /var/lib/migrator/fail-patch && date > /var/lib/migrator/patched"


def start(h: LabHost, name: str, port: int) -> None:
    h.sh("docker", "run", "-d", "--name", name, "-p", f"{port}:6379", "lab/redis")
    fill(h.wait_redis(port), 3_000, prefix=name)


def test_rolling_patch_with_a_failure_and_resume(hosts: dict[str, LabHost]) -> None:
    ports = {"c1": 7001, "c2": 7002, "c3": 7003}
    for (name, port), h in zip(ports.items(), hosts.values(), strict=True):
        start(h, name, port)
    pb = str(ROOT / "playbooks" / "rolling-patch.yaml")
    r = run_cli("play", pb, "-e", "group=lab", "-e", f"upgrade={PATCH}", "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    dry = json.loads(r.stdout)
    assert [x["host"] for x in dry["results"]].count("lab1") == 6 and len(dry["plans"]) == 3
    assert all(h.running() == [n] for n, h in zip(ports, hosts.values(), strict=True)), "dry run moved nothing"

    hosts["lab2"].sh("touch", "/var/lib/migrator/fail-patch")
    r = run_cli("play", pb, "-e", "group=lab", "-e", f"upgrade={PATCH}")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "step 3 (upgrade) failed on lab2" in r.stderr
    resume = r.stderr.split("resume with: ")[1].split("\n")[0].replace("\n", "")
    assert "--limit lab2,lab3 --start-at 3" in resume
    hosts["lab2"].sh("rm", "/var/lib/migrator/fail-patch")
    args = shlex.split(resume)[2:]  # after "migrator play"
    r = run_cli("play", *args, "-e", "group=lab", "-e", f"upgrade={PATCH}")
    assert r.returncode == 0, r.stdout + r.stderr
    for name, port in ports.items():
        [where] = [h for h in hosts.values() if name in h.running()]
        check_all(where.redis(port), 3_000, prefix=name)
    rows = json.loads(run_cli("hosts", "--json").stdout)
    assert not any(x["cordoned"] for x in rows)
    for h in hosts.values():
        assert h.host.ok(["test", "-e", "/var/lib/migrator/patched"]), f"{h.name} was not patched"


def test_replace_host_needs_yes_then_moves_everything(hosts: dict[str, LabHost]) -> None:
    a, c = hosts["lab1"], hosts["lab3"]
    start(a, "c1", 7001)
    start(a, "c2", 7002)
    pb = str(ROOT / "playbooks" / "replace-host.yaml")
    r = run_cli("play", pb, "-e", "old=lab1", "-e", "new=lab3")
    assert r.returncode == 2 and "not confirmed" in r.stderr
    assert a.running() == ["c1", "c2"]
    r = run_cli("play", pb, "-e", "old=lab1", "-e", "new=lab3", "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    assert a.running() == [] and c.running() == ["c1", "c2"]
    check_all(c.redis(7001), 3_000, prefix="c1")
    assert json.loads(run_cli("hosts", "--json").stdout)[0]["cordoned"]


def test_move_to_bigger_host(hosts: dict[str, LabHost]) -> None:
    start(hosts["lab1"], "redis", 6379)
    r = run_cli("play", str(ROOT / "playbooks" / "move-to-bigger-host.yaml"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert hosts["lab3"].running() == ["redis"]
    check_all(hosts["lab3"].redis(), 3_000, prefix="redis")
    r = run_cli("checkpoint", "ls", "redis", "--on", "lab1", "--json")
    assert len(json.loads(r.stdout)) == 1


def test_a_playbook_drain_moves_bind_mounts_as_its_step_says(hosts: dict[str, LabHost], tmp_path: Path) -> None:
    a = hosts["lab1"]
    for h in hosts.values():
        h.sh("rm", "-rf", "/tmp/pb-bind")
    a.sh("bash", "-c", "mkdir -p /tmp/pb-bind && echo conf > /tmp/pb-bind/app.conf")
    a.sh("docker", "run", "-d", "--name", "bm", "-v", "/tmp/pb-bind:/etc/app", "lab/redis")
    book = tmp_path / "pb.yaml"
    book.write_text("hosts: [lab1]\nsteps:\n  - drain: {to: lab2}\n")
    r = run_cli("play", str(book))
    assert r.returncode != 0 and "--bind-mounts sync" in r.stdout + r.stderr, r.stdout + r.stderr
    assert a.running() == ["bm"]
    run_cli("uncordon", "lab1")
    book.write_text("hosts: [lab1]\nsteps:\n  - drain: {to: lab2, bind_mounts: sync}\n  - uncordon: {}\n")
    r = run_cli("play", str(book))
    assert r.returncode == 0, r.stdout + r.stderr
    assert hosts["lab2"].sh("docker", "exec", "bm", "cat", "/etc/app/app.conf").strip() == "conf"
    for h in hosts.values():
        h.sh("rm", "-rf", "/tmp/pb-bind")


def test_hooks_on_a_playbook_drain_step_and_on_drain(hosts: dict[str, LabHost], tmp_path: Path) -> None:
    """A playbook drain step's hooks run with the move's facts (a variable in them one quoted
    word); `drain --hook` does the same."""
    a = hosts["lab1"]
    a.sh("docker", "run", "-d", "--name", "r1", "-p", "6379:6379", "lab/redis")
    a.wait_redis().set("k", "v")
    log, book = tmp_path / "hooks.log", tmp_path / "pb.yaml"
    hook = f"'echo $MIGRATOR_CONTAINER {{{{ pool }}}} >> {log}'"
    book.write_text("hosts: [lab1]\nvars: {pool: a b}\nsteps:\n"
                    f"  - drain: {{to: lab2, hooks: {{post-restore: {hook}}}}}\n  - uncordon: {{}}\n")
    r = run_cli("play", str(book))
    assert r.returncode == 0, r.stdout + r.stderr
    assert log.read_text().splitlines() == ["r1 a b"]
    r = run_cli("drain", "lab2", "--to", "lab1", "--hook",
                f"pre-freeze=echo $MIGRATOR_SOURCE $MIGRATOR_TARGET >> {log}")
    assert r.returncode == 0, r.stdout + r.stderr
    assert log.read_text().splitlines() == ["r1 a b", "lab2 lab1"]
    assert hosts["lab1"].wait_redis().get("k") == b"v"
