"""Faults injected for real on the lab; after each, the invariant: exactly one running
instance, holding every acknowledged write, and nothing stray on either host."""

from __future__ import annotations

import json
import signal
import subprocess

import pytest
from conftest import MIGRATOR, ROOT, LabHost, check_all, fill, run_cli

INV = ["-i", str(ROOT / "inventory" / "lab.yaml")]


def start_redis(h: LabHost, name: str = "r1") -> None:
    h.sh("docker", "run", "-d", "--name", name, "-p", "6379:6379", "--restart", "always", "lab/redis")
    h.wait_redis()


def assert_invariant(hosts: dict[str, LabHost], n: int) -> str:
    """Exactly one running r1, every key on it, no leftovers anywhere. Returns its host."""
    running = [name for name, h in hosts.items() if "r1" in h.running()]
    assert len(running) == 1, f"r1 runs on {running}"
    h = hosts[running[0]]
    check_all(h.wait_redis(), n)
    for other in hosts.values():
        assert not any(other.leftovers().values()), f"{other.name}: {other.leftovers()}"
        assert [c["Names"][0] for c in other.engine.containers(all=True)] in ([], ["/r1"])
    return running[0]


@pytest.mark.parametrize("phase", ["presync", "freeze", "filesystem", "transfer", "restore", "verify",
                                   "cleanup"])
def test_controller_killed_in_each_phase_then_recover(hosts: dict[str, LabHost], phase: str) -> None:
    a = hosts["lab1"]
    start_redis(a)
    fill(a.redis(), 20_000)
    p = subprocess.Popen([*MIGRATOR, *INV, "migrate", "r1", "--from", "lab1", "--to", "lab2"], cwd=ROOT,
                         stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    assert p.stderr is not None
    for line in p.stderr:
        if line.startswith(f"{phase} ..."):
            p.send_signal(signal.SIGKILL)
            break
    p.wait()
    assert p.returncode == -signal.SIGKILL, f"never reached {phase}"
    # a new migrate of that container says what to do first
    r = run_cli("migrate", "r1", "--from", "lab1", "--to", "lab3")
    assert r.returncode == 2 and "migrator recover" in r.stderr, r.stderr
    r = run_cli("recover", "--json")
    assert r.returncode == 0, r.stderr + r.stdout
    [res] = json.loads(r.stdout)
    assert res["phase"] == phase
    where = assert_invariant(hosts, 20_000)
    expected = "completed" if where == "lab2" else "rolled_back"
    assert res["outcome"] == expected
    if phase in ("presync", "freeze", "filesystem", "transfer"):
        assert where == "lab1"
    if where == "lab1":  # its restart policy is back
        assert a.engine.inspect("r1")["HostConfig"]["RestartPolicy"]["Name"] == "always"
    assert json.loads(run_cli("recover", "--json").stdout) == []


def test_two_migrations_of_one_container_second_refused(hosts: dict[str, LabHost]) -> None:
    a = hosts["lab1"]
    start_redis(a)
    fill(a.redis(), 5_000)
    p = subprocess.Popen([*MIGRATOR, *INV, "migrate", "r1", "--from", "lab1", "--to", "lab2"], cwd=ROOT,
                         stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    assert p.stderr is not None
    for line in p.stderr:
        if line.startswith("presync ..."):
            break
    r = run_cli("migrate", "r1", "--from", "lab1", "--to", "lab3")
    rest = p.stderr.read()
    p.wait()
    assert r.returncode == 2 and "locked by another operation" in r.stderr, r.stderr
    assert p.returncode == 0, rest
    assert assert_invariant(hosts, 5_000) == "lab2"
