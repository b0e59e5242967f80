"""Compose projects on the lab (made with `docker compose`, Debian's package): moved as one
unit with `migrate --project`, on a network made like the source's, finding each other by
name on the target; a fault in one member rolls the whole project back."""

from __future__ import annotations

import json

import pytest
from conftest import LabHost, kill_cli_at, run_cli

from migrator import fleet
from migrator.errors import MigrationFailed
from migrator.inventory import Inventory
from migrator.lab.faults import cut_link
from migrator.migrate import Event
from migrator.project import ProjectMove
from migrator.transport import wait_for

# db (a named volume), app (keeps a counter in its memory and writes it to db by name),
# front (depends on app, a published port): compose starts db, app, front in that order.
COMPOSE = b"""
services:
  db:
    image: lab/redis
    command: ["redis-server", "--save", "", "--appendonly", "no", "--protected-mode", "no", "--dir", "/data"]
    volumes: ["dbdata:/data"]
  app:
    image: lab/redis
    depends_on: [db]
    command: ["sh", "-c", "i=0; while :; do i=$$((i+1)); echo $$i > /tmp/i;
               printf 'SET app %s\\\\r\\\\n' $$i | nc db 6379 >/dev/null; sleep 0.1; done"]
  front:
    image: lab/redis
    depends_on: [app]
    ports: ["7380:6379"]
    command: ["redis-server", "--save", "", "--protected-mode", "no"]
volumes:
  dbdata:
"""
MEMBERS = ["shop-db-1", "shop-app-1", "shop-front-1"]


def up(h: LabHost) -> None:
    h.host.run(["docker", "compose", "-p", "shop", "-f", "-", "up", "-d", "--quiet-pull"], stdin=COMPOSE)
    assert sorted(h.running()) == sorted(MEMBERS)
    assert wait_for(lambda: counter(h) > 3, 20), "app does not count"
    h.sh("docker", "exec", "shop-db-1", "sh", "-c", "printf 'SET kept yes\\r\\n' | nc 127.0.0.1 6379")


def counter(h: LabHost) -> int:
    """app's own count (in its shell's memory, written to its /tmp each round)."""
    out = h.sh("docker", "exec", "shop-app-1", "cat", "/tmp/i", check=False).strip()
    return int(out) if out.isdigit() else 0


def db_get(h: LabHost, key: str, via: str = "shop-app-1") -> str:
    """GET `key` from db by its service name, asked from inside `via` (name resolution on
    the project's network)."""
    return h.sh("docker", "exec", via, "sh", "-c", f"printf 'GET {key}\\r\\n' | nc db 6379").split()[-1]


def listed(h: LabHost) -> list[str]:
    out = h.sh("docker", "compose", "-p", "shop", "ps", "--format", "json")
    rows = [json.loads(line) for line in out.splitlines() if line.strip()] if not out.lstrip().startswith("[") \
        else json.loads(out)
    return sorted(r["Name"] for r in rows if r.get("State") == "running")


@pytest.fixture
def shop(hosts: dict[str, LabHost]) -> dict[str, LabHost]:
    for h in hosts.values():
        h.sh("bash", "-c", "docker network rm shop_default >/dev/null 2>&1; true")
    up(hosts["lab1"])
    return hosts


def test_a_compose_project_moves_as_one_unit_and_finds_itself_by_name(shop: dict[str, LabHost]) -> None:
    a, b = shop["lab1"], shop["lab2"]
    before, net = counter(a), json.loads(a.sh("docker", "network", "inspect", "shop_default"))[0]
    r = run_cli("migrate", "--project", "shop", "--from", "lab1", "--to", "lab2", "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["status"] == "migrated" and rep["containers"] == MEMBERS  # dependencies first
    assert listed(b) == sorted(MEMBERS) and a.running() == []
    theirs = json.loads(b.sh("docker", "network", "inspect", "shop_default"))[0]
    assert (theirs["Driver"], theirs["Labels"], theirs["Options"]) == (net["Driver"], net["Labels"], net["Options"])
    # app goes on counting from where it was (its memory), and reaches db by name there
    assert wait_for(lambda: counter(b) > before + 5, 20), (before, counter(b))
    assert wait_for(lambda: int(db_get(b, "app")) > before + 5, 20)
    assert db_get(b, "kept") == "yes" and db_get(b, "kept", via="shop-front-1") == "yes"
    # the volume's copy stays on lab1, said; moved back with --remove-source-volumes it goes
    assert [m["volumes_left"] for m in rep["moves"]] == [["shop_dbdata"], [], []]
    assert any("shop_dbdata left there" in w and "--remove-source-volumes" in w for w in rep["moves"][0]["warnings"])
    r = run_cli("migrate", "--project", "shop", "--from", "lab2", "--to", "lab1", "--remove-source-volumes")
    assert r.returncode == 0, r.stderr
    assert listed(a) == sorted(MEMBERS) and b.running() == []
    assert "shop_dbdata" not in b.sh("docker", "volume", "ls", "-q").split()
    assert db_get(a, "kept") == "yes"


def test_a_fault_in_one_member_rolls_the_whole_project_back(shop: dict[str, LabHost], inv: Inventory) -> None:
    """front's link is cut when it freezes: db and app already run on lab2 (their sources
    held); all three come back on lab1 with their memory, and lab2 keeps nothing of it."""
    a, b = shop["lab1"], shop["lab2"]
    before = counter(a)
    seen: list[tuple[str, str]] = []

    def events(container: str, ev: Event) -> None:
        if ev.kind == "phase":
            seen.append((container, ev.phase))
        if (container, ev.kind, ev.phase) == ("shop-front-1", "phase", "freeze"):
            cut_link(inv, "lab1", container)

    with pytest.raises(MigrationFailed, match="rolled back .*runs all 3") as err:
        ProjectMove(inv, "shop", "lab1", "lab2", events=events).run()
    assert ("shop-app-1", "restore") in seen and ("shop-db-1", "restore") in seen  # they had moved
    rep = err.value.report
    assert [m.status for m in rep.moves] == ["rolled_back"] * 3  # type: ignore[attr-defined]
    assert sorted(a.running()) == sorted(MEMBERS) and listed(a) == sorted(MEMBERS)
    assert b.sh("docker", "ps", "-aq").strip() == ""
    assert "shop_default" not in b.sh("docker", "network", "ls", "--format", "{{.Name}}").split()
    assert wait_for(lambda: counter(a) > before, 20)  # resumed, memory kept
    assert db_get(a, "kept") == "yes"
    for h in (a, b):
        assert not any(h.leftovers().values()), h.leftovers()


@pytest.mark.parametrize(("member", "phase", "where"), [("shop-front-1", "freeze", "lab1"),
                                                        ("shop-db-1", "cleanup", "lab2")])
def test_controller_killed_mid_project_recover_keeps_it_one_unit(shop: dict[str, LabHost], member: str,
                                                                  phase: str, where: str) -> None:
    """Killed as front freezes (db and app already run on lab2, answering): recover brings
    all three back, not those two forward. Killed as db's commit begins: all go forward."""
    kill_cli_at(f"{member}: {phase} ...", "migrate", "--project", "shop", "--from", "lab1", "--to", "lab2")
    r = run_cli("recover", "--json")
    assert r.returncode == 0, r.stderr + r.stdout
    outcomes = {x["outcome"] for x in json.loads(r.stdout)}
    assert outcomes == {"rolled_back" if where == "lab1" else "completed"}, r.stdout
    there, other = shop[where], shop["lab2" if where == "lab1" else "lab1"]
    assert listed(there) == sorted(MEMBERS) and other.running() == []
    assert db_get(there, "kept") == "yes"
    assert json.loads(run_cli("recover", "--json").stdout) == []


def test_drain_moves_a_project_together_and_the_rest_on_their_own(shop: dict[str, LabHost],
                                                                  inv: Inventory) -> None:
    a = shop["lab1"]
    a.sh("docker", "run", "-d", "--name", "solo", "-p", "7390:6379", "lab/redis")
    plan = fleet.drain(inv, "lab1", parallel=2)
    moves = {m.container: m for m in plan.moves}
    assert all(m.outcome == "migrated" for m in moves.values()), {c: m.error for c, m in moves.items()}
    [target] = {moves[c].target for c in MEMBERS}
    assert listed(shop[target]) == sorted(MEMBERS) and a.running() == []
    assert db_get(shop[target], "kept") == "yes"
    assert moves["solo"].target != target  # spread: the project is booked as three moves there
    run_cli("uncordon", "lab1")
