"""cordon, drain and evacuate on the three-host lab."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

from conftest import MIGRATOR, ROOT, LabHost, check_all, fill, run_cli

from migrator import fleet
from migrator.inventory import Inventory
from migrator.lab import Lab
from migrator.lab.faults import cut_link
from migrator.migrate import Event
from migrator.transport import wait_for

INV = ["-i", str(ROOT / "inventory" / "lab.yaml")]


def start(h: LabHost, name: str, port: int, *labels: str, keys: int = 2_000) -> None:
    extra = [x for lab in labels for x in ("--label", lab)]
    h.sh("docker", "run", "-d", "--name", name, "-p", f"{port}:6379", *extra, "lab/redis")
    fill(h.wait_redis(port), keys, prefix=name)


def where(hosts: dict[str, LabHost], name: str) -> list[str]:
    return [n for n, h in hosts.items() if name in h.running()]


def test_cordon_is_seen_by_others_and_refused_as_target(hosts: dict[str, LabHost]) -> None:
    start(hosts["lab1"], "r1", 6379)
    assert run_cli("cordon", "lab2", "--reason", "patching").returncode == 0
    rows = {r["name"]: r for r in json.loads(run_cli("hosts", "--json").stdout)}
    assert rows["lab2"]["cordoned"] and not rows["lab1"]["cordoned"]
    r = run_cli("migrate", "r1", "--from", "lab1", "--to", "lab2")
    assert r.returncode == 2 and "cordoned (patching)" in r.stderr and "uncordon lab2" in r.stderr
    assert run_cli("uncordon", "lab2").returncode == 0
    assert not json.loads(run_cli("hosts", "--json").stdout)[1]["cordoned"]


def test_drain_spreads_keeps_data_and_reports_pinned(hosts: dict[str, LabHost]) -> None:
    a = hosts["lab1"]
    for i in range(4):
        start(a, f"db{i}", 7000 + i)
    start(a, "pinned", 7010, "migrator.pin=true")
    r = run_cli("drain", "lab1", "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    targets = {m["container"]: m["target"] for m in plan["moves"]}
    assert targets["pinned"] is None and {targets[f"db{i}"] for i in range(4)} == {"lab2", "lab3"}
    assert a.running() == ["db0", "db1", "db2", "db3", "pinned"], "a dry run changes nothing"
    r = run_cli("drain", "lab1", "--parallel", "2", "--json")
    assert r.returncode == 0, r.stderr
    res = {m["container"]: m for m in json.loads(r.stdout)["moves"]}
    assert json.loads(r.stdout)["summary"]["outcomes"] == {"migrated": 4, "stays": 1}
    assert res["pinned"]["outcome"] == "stays" and "pinned" in res["pinned"]["reason"]
    assert a.running() == ["pinned"]
    for i in range(4):
        assert res[f"db{i}"]["outcome"] == "migrated"
        [host] = where(hosts, f"db{i}")
        assert host == res[f"db{i}"]["target"]
        check_all(hosts[host].redis(7000 + i), 2_000, prefix=f"db{i}")
    assert json.loads(run_cli("hosts", "--json").stdout)[0]["cordoned"]
    assert run_cli("uncordon", "lab1").returncode == 0


def test_a_parallel_drain_with_one_link_cut_rolls_back_that_one_only(hosts: dict[str, LabHost],
                                                                      inv: Inventory) -> None:
    """Five containers drained three at a time; the first to freeze loses its link (its key
    and SSH master, nobody else's): it rolls back onto lab1 with its data and its frozen
    time counted as downtime, the four others move, each ends with one line, and the
    targets' runc.conf (restores on them overlapped) is back byte for byte."""
    a = hosts["lab1"]
    for i in range(5):
        start(a, f"p{i}", 7100 + i)
    own = "# the operator's own\n"
    for n in ("lab2", "lab3"):
        hosts[n].sh("bash", "-c", 'mkdir -p /etc/criu && printf "%s" "$1" > /etc/criu/runc.conf', "_", own)
    cut: dict[str, str] = {}
    seen: list[tuple[str, Event]] = []

    def events(container: str, ev: Event) -> None:
        seen.append((container, ev))
        if ev.kind == "phase" and ev.phase == "freeze" and not cut:
            cut[container] = cut_link(inv, "lab1", container)

    plan = fleet.drain(inv, "lab1", parallel=3, events=events)
    [victim] = cut
    moves = {m.container: m for m in plan.moves}
    assert moves[victim].outcome == "rolled_back", moves[victim].error
    assert all(m.outcome == "migrated" for c, m in moves.items() if c != victim), {
        c: m.error for c, m in moves.items()}
    assert float((moves[victim].report or {}).get("downtime_s") or 0) > 0  # it was frozen, then given back
    assert plan.summary()["outcomes"] == {"migrated": 4, "rolled_back": 1}
    ends = sorted((c, ev.phase) for c, ev in seen if ev.kind == "end")
    assert ends == sorted((c, m.outcome) for c, m in moves.items())
    for i in range(5):
        name = f"p{i}"
        assert where(hosts, name) == ["lab1" if name == victim else moves[name].target]
        [host] = where(hosts, name)
        check_all(hosts[host].redis(7100 + i), 2_000, prefix=name)
    for n in ("lab2", "lab3"):
        assert hosts[n].sh("cat", "/etc/criu/runc.conf") == own
        assert hosts[n].sh("bash", "-c", "ls -A /var/lib/migrator/locks").strip() == ""
    run_cli("uncordon", "lab1")


def test_unsatisfiable_constraint_plan_says_so_drain_exits_3(hosts: dict[str, LabHost]) -> None:
    a = hosts["lab1"]
    start(a, "zoned", 6379, "migrator.constraint=zone==mars")
    r = run_cli("drain", "lab1", "--dry-run", "--json")
    [m] = json.loads(r.stdout)["moves"]
    assert m["target"] is None and "zone==mars" in m["reason"]
    r = run_cli("drain", "lab1")
    assert r.returncode == 3
    assert "zone==mars" in r.stdout
    assert a.running() == ["zoned"]
    check_all(a.redis(), 2_000, prefix="zoned")
    run_cli("uncordon", "lab1")


def test_impossible_plan_exit_2_touches_nothing(hosts: dict[str, LabHost]) -> None:
    start(hosts["lab1"], "r1", 6379)
    for h in ("lab2", "lab3"):
        run_cli("cordon", h)
    r = run_cli("drain", "lab1")
    assert r.returncode == 2 and "no usable target" in r.stderr
    assert not json.loads(run_cli("hosts", "--json").stdout)[0]["cordoned"], "not even cordoned"
    for h in ("lab2", "lab3"):
        run_cli("uncordon", h)


def test_evacuate_unreachable_host_from_replicas(hosts: dict[str, LabHost], lab: Lab) -> None:
    a, b = hosts["lab1"], hosts["lab2"]
    start(a, "r1", 6379, keys=5_000)
    start(a, "r2", 6380, keys=5_000)
    ps = [subprocess.Popen([*MIGRATOR, *INV, "persist", n, "--on", "lab1", "--every", "1s", "--keep", "2",
                            "--replicate-to", "lab2"], cwd=ROOT, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL) for n in ("r1", "r2")]
    try:
        def replicated() -> bool:
            r = run_cli("checkpoint", "ls", "--on", "lab2", "--json")
            return {s["container"] for s in json.loads(r.stdout)} == {"r1", "r2"}
        assert wait_for(replicated, 60)
    finally:
        for p in ps:
            p.send_signal(signal.SIGINT)
        for p in ps:
            p.wait(60)
    h1 = lab.host("lab1")
    lab.stop_service(h1, "sshd")
    lab.stop_service(h1, "dockerd")
    try:
        r = run_cli("evacuate", "lab1", "--json")
        assert r.returncode == 0, r.stderr + r.stdout
        ev = json.loads(r.stdout)
        assert not ev["reachable"]
        assert {(x["container"], x["host"], x["outcome"]) for x in ev["restored"]} == {
            ("r1", "lab2", "restored"), ("r2", "lab2", "restored")}
        check_all(b.wait_redis(6379), 5_000, prefix="r1")
        check_all(b.wait_redis(6380), 5_000, prefix="r2")
    finally:
        lab.start_dockerd(h1)
        lab.start_service(h1, "sshd")
        a.host.close()


def test_drain_carries_out_the_plan_its_dry_run_printed_or_says_what_changed(hosts: dict[str, LabHost],
                                                                             tmp_path: Path) -> None:
    a = hosts["lab1"]
    start(a, "q1", 7201)
    start(a, "q2", 7202)
    r = run_cli("drain", "lab1", "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    plan = tmp_path / "plan.json"
    plan.write_text(r.stdout)
    planned = {m["container"]: m["target"] for m in json.loads(r.stdout)["moves"]}
    assert set(planned) == {"q1", "q2"} and all(planned.values())
    assert run_cli("cordon", planned["q1"]).returncode == 0  # the facts change
    r = run_cli("drain", "lab1", "--plan", str(plan))
    assert r.returncode == 2, r.stdout + r.stderr
    flat = " ".join(r.stderr.split())
    assert "the facts changed since the plan was made" in flat and f"q1 cannot go to {planned['q1']} now: cordoned" \
        in flat, flat
    assert sorted(a.running()) == ["q1", "q2"]
    assert not json.loads(run_cli("hosts", "--json").stdout)[0]["cordoned"]  # nothing was done
    assert run_cli("uncordon", planned["q1"]).returncode == 0
    r = run_cli("drain", "lab1", "--plan", str(plan), "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    for container, target in planned.items():
        assert container in hosts[target].running()
    run_cli("uncordon", "lab1")
