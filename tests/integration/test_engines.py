"""Any Docker host: Docker 20.10, 26 and 28, overlay2 and the containerd image store, in one
mixed lab of its own (so the other tests keep their three 20.10 hosts). Every pair that
works is moved for real, with its memory, files and configuration checked; every pair that
cannot work is refused before anything changes. Each outcome is a row of the support
matrix (tests/support.md, copied into the README)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from conftest import ROOT, LabHost, check_all, fill, record_support, reset, run_cli

from migrator.inventory import Inventory, load
from migrator.lab import Lab
from migrator.transport import wait_for

# host: (engine, store)
MIXED = {"elab1": ("20.10", "overlay2"), "elab2": ("26", "overlay2"), "elab3": ("26", "snapshotter"),
         "elab4": ("28", "overlay2"), "elab5": ("26", "snapshotter")}
INVENTORY = ROOT / "inventory" / "elab.yaml"


LAB = Lab(Path("/var/lib/migrator-elab"), bridge="mgeng0", subnet="10.205.0", prefix="elab")


@pytest.fixture(scope="module")
def mixed() -> Iterator[dict[str, LabHost]]:
    if os.geteuid() != 0:
        pytest.fail("integration tests need root")
    lab = LAB
    lab.up(len(MIXED), INVENTORY, engines={h: e for h, (e, _) in MIXED.items()},
           stores={h: s for h, (_, s) in MIXED.items()})
    inv: Inventory = load(INVENTORY)
    hosts = {name: LabHost(inv, name) for name in MIXED}
    yield hosts
    for h in hosts.values():
        h.close()
    if not os.environ.get("MIGRATOR_KEEP_LAB"):
        lab.down()


@pytest.fixture
def hosts(mixed: dict[str, LabHost]) -> Iterator[dict[str, LabHost]]:
    for h in mixed.values():
        reset(h)
    yield mixed
    for h in mixed.values():
        reset(h)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, inventory=INVENTORY)


def kind(h: LabHost) -> str:
    engine, store = MIXED[h.name]
    return f"Docker {engine}, {store}"


def start_redis(h: LabHost, name: str = "r1", *extra: str) -> redis.Redis:
    h.sh("docker", "run", "-d", "--name", name, "-p", "6379:6379", "--restart", "unless-stopped",
         "--label", "app=cache", *extra, "lab/redis")
    return h.wait_redis()


def test_hosts_show_engine_api_and_storage(hosts: dict[str, LabHost]) -> None:
    r = cli("hosts", "--json")
    assert r.returncode == 0, r.stderr
    rows = {h["name"]: h for h in json.loads(r.stdout)}
    for name, (engine, store) in MIXED.items():
        assert rows[name]["docker_version"].startswith(engine), rows[name]
        assert rows[name]["storage"] == ("containerd snapshotter" if store == "snapshotter" else "overlay2")
        assert rows[name]["api_version"] in {"20.10": ("1.41",), "26": ("1.45",), "28": ("1.51",)}[engine]


@pytest.mark.parametrize("source, target", [("elab1", "elab2"), ("elab2", "elab1"), ("elab3", "elab5"),
                                            ("elab1", "elab3"), ("elab3", "elab1")])
def test_migrate_across_engines_and_stores(hosts: dict[str, LabHost], source: str, target: str) -> None:
    a, b = hosts[source], hosts[target]
    fill(start_redis(a), 20_000)
    a.sh("docker", "exec", "r1", "sh", "-c", "mkdir -p /srv && echo rootfs-data > /srv/written")
    before = a.engine.inspect("r1") or {}
    r = cli("migrate", "r1", "--from", source, "--to", target, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["status"] == "migrated"
    rb = b.wait_redis()
    check_all(rb, 20_000)
    assert b.sh("docker", "exec", "r1", "cat", "/srv/written").strip() == "rootfs-data"
    after = b.engine.inspect("r1") or {}
    assert after["Config"]["Labels"] == before["Config"]["Labels"]
    assert after["HostConfig"]["RestartPolicy"] == before["HostConfig"]["RestartPolicy"]
    assert after["HostConfig"]["PortBindings"] == before["HostConfig"]["PortBindings"]
    assert a.engine.inspect("r1") is None and b.running() == ["r1"]
    # a normal Docker container there: logs (the target's own: what it printed before the
    # move stays in the source's log), a stop and a start (memory then gone, files kept)
    b.sh("docker", "logs", "r1")
    b.sh("docker", "stop", "r1")
    b.sh("docker", "start", "r1")
    assert b.wait_redis().dbsize() == 0
    assert "Ready to accept connections" in b.sh("bash", "-c", "docker logs r1 2>&1")
    assert b.sh("docker", "exec", "r1", "cat", "/srv/written").strip() == "rootfs-data"
    for h in (a, b):
        assert not any(h.leftovers().values()), f"{h.name}: {h.leftovers()}"
    record_support(kind(a), kind(b), "bridge, published port", "migrated: memory, files, configuration kept")


def test_a_bridge_container_moves_to_docker_28_and_back_through_the_runc_wrapper(
        hosts: dict[str, LabHost]) -> None:
    """Docker 28 cannot `start --checkpoint` a container with a network of its own; its runc
    wrapper restores it at `runc create` of a plain start instead: a normal container after."""
    a, b = hosts["elab1"], hosts["elab4"]
    fill(start_redis(a), 20_000)
    a.sh("docker", "exec", "r1", "sh", "-c", "mkdir -p /srv && echo rootfs-data > /srv/written")
    r = cli("migrate", "r1", "--from", "elab1", "--to", "elab4", "--json")
    assert r.returncode == 0, r.stderr
    check_all(b.wait_redis(), 20_000)
    assert b.sh("docker", "exec", "r1", "cat", "/srv/written").strip() == "rootfs-data"
    info = b.engine.inspect("r1") or {}
    assert info["State"]["Running"] and info["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
    assert info["HostConfig"]["Runtime"] == "runc"  # Docker's view: its own runtime, nothing of ours
    assert a.engine.inspect("r1") is None and b.running() == ["r1"]
    assert not any(b.leftovers().values()), b.leftovers()
    assert b.sh("bash", "-c", "ls -A /var/lib/migrator/restore-at-create 2>/dev/null || true").strip() == ""
    record_support(kind(a), kind(b), "bridge, published port", "migrated (restored at runc create, migrator's wrapper)")
    assert info["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    b.sh("docker", "logs", "r1")
    r = cli("migrate", "r1", "--from", "elab4", "--to", "elab1")
    assert r.returncode == 0, r.stderr
    check_all(a.wait_redis(), 20_000)
    record_support(kind(b), kind(a), "bridge, published port", "migrated")
    # and once more there: a normal container, that stops and starts like any other
    assert cli("migrate", "r1", "--from", "elab1", "--to", "elab4").returncode == 0
    b.sh("docker", "stop", "r1")
    b.sh("docker", "start", "r1")
    assert b.wait_redis().dbsize() == 0  # a fresh start: memory gone, files kept
    assert b.sh("docker", "exec", "r1", "cat", "/srv/written").strip() == "rootfs-data"
    assert "Ready to accept connections" in b.sh("bash", "-c", "docker logs r1 2>&1")


def test_docker_28_without_the_runc_wrapper_is_refused_before_anything_changes(hosts: dict[str, LabHost]) -> None:
    a, b = hosts["elab1"], hosts["elab4"]
    fill(start_redis(a), 1000)
    elab4 = LAB.host("elab4")
    # the host's runc is the real one now
    LAB.ns_exec(elab4, ["bash", "-c", "while umount /usr/sbin/runc 2>/dev/null; do :; done"])
    try:
        r = cli("migrate", "r1", "--from", "elab1", "--to", "elab4")
    finally:
        LAB.ns_exec(elab4, ["mount", "--bind", (Path(elab4.dir) / "runc-wrapper").read_text(), "/usr/sbin/runc"])
    assert r.returncode == 2, r.stderr
    assert "Docker 28.5.2" in r.stderr and "runc wrapper" in r.stderr and "--network host" in r.stderr
    check_all(a.redis(), 1000)
    assert a.running() == ["r1"] and b.engine.containers(all=True) == []
    for h in (a, b):
        assert not any(h.leftovers().values()), f"{h.name}: {h.leftovers()}"
    record_support(kind(a), "Docker 28, overlay2, without migrator's runc wrapper", "bridge, published port",
                   "refused in preflight, nothing changed")


def test_host_network_container_moves_to_docker_28(hosts: dict[str, LabHost]) -> None:
    a, b = hosts["elab1"], hosts["elab4"]
    a.sh("docker", "run", "-d", "--name", "r1", "--network", "host", "lab/redis")
    fill(a.wait_redis(), 20_000)
    r = cli("migrate", "r1", "--from", "elab1", "--to", "elab4")
    assert r.returncode == 0, r.stderr
    check_all(b.wait_redis(), 20_000)
    assert b.running() == ["r1"] and a.engine.inspect("r1") is None
    record_support(kind(a), kind(b), "host network", "migrated")


def test_drain_a_2010_host_onto_a_26_host(hosts: dict[str, LabHost]) -> None:
    a, b = hosts["elab1"], hosts["elab2"]
    for i, port in ((1, 7001), (2, 7002)):
        a.sh("docker", "run", "-d", "--name", f"r{i}", "-p", f"{port}:6379", "lab/redis")
        fill(a.wait_redis(port), 5000, prefix=f"c{i}-")
    r = cli("drain", "elab1", "--to", "elab2", "--json")
    assert r.returncode == 0, r.stderr
    moves = json.loads(r.stdout)["moves"]
    assert sorted((m["container"], m["target"], m["outcome"]) for m in moves) == [
        ("r1", "elab2", "migrated"), ("r2", "elab2", "migrated")]
    for i, port in ((1, 7001), (2, 7002)):
        check_all(b.wait_redis(port), 5000, prefix=f"c{i}-")
    assert a.running() == []
    cli("uncordon", "elab1")
    record_support(kind(a), kind(b), "drain of 2 bridge containers", "migrated")


def test_checkpoint_restore_and_clone_with_the_containerd_store(hosts: dict[str, LabHost]) -> None:
    h = hosts["elab3"]
    fill(start_redis(h), 10_000)
    h.sh("docker", "exec", "r1", "sh", "-c", "mkdir -p /srv && echo kept > /srv/f")
    r = cli("checkpoint", "create", "r1", "--on", "elab3", "--name", "c1", "--json")
    assert r.returncode == 0, r.stderr
    h.sh("docker", "rm", "-f", "r1")
    r = cli("restore", "r1", "--on", "elab3", "--checkpoint", "c1")
    assert r.returncode == 0, r.stderr
    check_all(h.wait_redis(), 10_000)
    assert h.sh("docker", "exec", "r1", "cat", "/srv/f").strip() == "kept"
    r = cli("clone", "r1", "--from", "elab3", "--to", "elab3", "--name", "r1-copy", "--publish", "6390:6379")
    assert r.returncode == 0, r.stderr
    check_all(h.wait_redis(6390), 10_000)
    assert h.sh("docker", "exec", "r1-copy", "cat", "/srv/f").strip() == "kept"
    assert wait_for(lambda: h.redis().ping(), 5)  # the original still answers
    record_support(kind(h), kind(h), "bridge, published port", "checkpoint, restore and clone")


def test_upgrade_docker_playbook_moves_every_container_back_with_its_data() -> None:
    """playbooks/upgrade-docker.yaml over two 20.10 hosts: each is drained onto the other,
    restarted with Docker 26, and gets its own containers back (20.10 -> 26 and 26 -> 26)."""
    lab = Lab(Path("/var/lib/migrator-ulab"), bridge="mgupg0", subnet="10.206.0", prefix="ulab")
    inventory = ROOT / "inventory" / "ulab.yaml"
    try:
        lab.up(2, inventory)
        inv = load(inventory)
        hosts = {name: LabHost(inv, name) for name in ("ulab1", "ulab2")}
        for i, h in enumerate(hosts.values(), 1):
            h.sh("docker", "run", "-d", "--name", f"svc{i}", "-p", f"{7000 + i}:6379", "lab/redis")
            fill(h.wait_redis(7000 + i), 5000, prefix=f"s{i}-")
        r = run_cli("play", "playbooks/upgrade-docker.yaml", "-e", "group=ulab", "-e", "engine=26", "--yes",
                    "--json", inventory=inventory, timeout=900)
        assert r.returncode == 0, r.stderr + r.stdout
        for i, h in enumerate(hosts.values(), 1):
            assert h.engine.version()["Version"].startswith("26."), h.name
            assert h.running() == [f"svc{i}"], f"{h.name} got its own container back"
            check_all(h.wait_redis(7000 + i), 5000, prefix=f"s{i}-")
            assert not any(h.leftovers().values()), f"{h.name}: {h.leftovers()}"
            h.close()
        record_support("Docker 20.10, overlay2", "Docker 26, overlay2 (same hosts, upgraded)",
                       "upgrade-docker playbook over 2 hosts", "migrated away and back, every key kept")
    finally:
        lab.down()


def test_an_address_and_its_connections_across_engines(hosts: dict[str, LabHost]) -> None:
    """A Redis on a macvlan network moved Docker 20.10 -> 26 -> 28 (runc wrapper: restored
    before Docker networks it, its address on a stand-in meanwhile) -> 20.10, one client
    connection held through the three moves: the same connection, address and MAC on every
    engine, nothing acknowledged lost."""
    from migrator.lab.network import macvlan_create
    from migrator.lab.watch import HeldClient

    route = ["elab1", "elab2", "elab4", "elab1"]
    for name in set(route):
        hosts[name].sh(*macvlan_create(LAB.subnet, "l2"))
    a = hosts[route[0]]
    a.sh("docker", "run", "-d", "--name", "kv", "--network", "l2", "lab/redis")
    net = (a.engine.inspect("kv") or {})["NetworkSettings"]["Networks"]["l2"]
    address, mac = net["IPAddress"], net["MacAddress"]
    assert wait_for(lambda: redis.Redis(address, 6379, socket_timeout=2).ping(), 20)
    client = HeldClient(address)
    client.start()
    for source, target in zip(route, route[1:], strict=False):
        n = len(client.acked)
        r = cli("migrate", "kv", "--from", source, "--to", target, "--json")
        assert r.returncode == 0, r.stderr
        rep = json.loads(r.stdout)
        assert rep["connections"] == "kept" and rep["sockets_restored"] == 1, rep
        after = hosts[target].engine.inspect("kv") or {}
        net = after["NetworkSettings"]["Networks"]["l2"]
        assert (net["IPAddress"], net["MacAddress"]) == (address, mac)
        assert "mgkeep0" not in hosts[target].sh("nsenter", "-t", str(after["State"]["Pid"]), "-n", "ip", "-o", "link")
        assert wait_for(lambda n=n: len(client.acked) > n + 20, 10), client.error  # type: ignore[misc]
        record_support(kind(hosts[source]), kind(hosts[target]), "macvlan network, a client connected",
                       "migrated: the same address, MAC and connection")
    client.finish()
    assert client.error is None, client.error
    assert client.call("CLIENT", "ID") == client.client_id
    values = redis.Redis(address, 6379, db=client.db).mget([f"held{i}" for i in client.acked])
    assert all(v == str(i).encode() for i, v in zip(client.acked, values, strict=True))
