"""Same-address moves on the lab: a Redis on a macvlan network (the lab bridge is the L2 the
hosts share) keeps its address, its MAC and a client's established connection across
hosts; one host answers ARP for the address at any moment, rollback included. And the
operator's hooks at a move's stages."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import redis
from conftest import LabHost, run_cli

from migrator.errors import MigratorError
from migrator.inventory import Inventory
from migrator.lab import Lab
from migrator.lab.network import macvlan_create
from migrator.lab.watch import ArpWatch, HeldClient
from migrator.migrate import Event, Migration

NET = "l2"


def l2_network(lab: Lab, *hs: LabHost) -> None:
    """The same macvlan network on each host: the lab's subnet, addresses from .192/27 (out
    of the hosts' own), the host's eth0 (on the lab bridge) its parent."""
    for h in hs:
        h.sh(*macvlan_create(lab.subnet, NET))


def start(h: LabHost, name: str = "kv") -> str:
    """A Redis on the L2 network (its address from the host's IPAM, not fixed); its address."""
    h.sh("docker", "run", "-d", "--name", name, "--network", NET, "lab/redis")
    address = h.sh("docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                   name).strip()
    r = redis.Redis(address, 6379, socket_timeout=5)
    deadline = time.monotonic() + 20
    while True:
        try:
            r.ping()
            r.close()  # no connection but the test's own is open when it moves
            return address
        except redis.RedisError:
            assert time.monotonic() < deadline, f"redis at {address} did not answer"
            time.sleep(0.1)


def mac_of(h: LabHost, name: str) -> str:
    return h.sh("docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.MacAddress}}{{end}}",
                name).strip()


def port_of(lab: Lab, mac: str) -> str:
    """The lab bridge's port the MAC was last seen on (the host that answers for it)."""
    out = subprocess.run(["bridge", "fdb", "show", "br", lab.bridge], capture_output=True, text=True).stdout
    return next((line.split()[2] for line in out.splitlines() if line.startswith(mac.lower() + " ")), "")


def assert_session_kept(client: HeldClient, address: str) -> None:
    """The connection of before: no error, the same server-side client (its id, name and
    database), acknowledged writes after the move, every one of them on the server."""
    assert client.error is None, client.error
    assert client.call("CLIENT", "ID") == client.client_id
    assert client.call("CLIENT", "GETNAME") == b"held"
    values = redis.Redis(address, 6379, db=client.db, socket_timeout=5).mget([f"held{i}" for i in client.acked])
    lost = [i for i, v in zip(client.acked, values, strict=True) if v != str(i).encode()]
    assert not lost, f"{len(lost)} acknowledged writes lost, first {lost[:5]}"


def test_connection_kept_across_hosts_with_its_address(hosts: dict[str, LabHost], lab: Lab) -> None:
    """A client holds one connection (a session of its own: database 3, a client name) and
    writes every 5 ms while the Redis moves lab1 -> lab2: the same connection goes on (no
    reconnect, no error), nothing acknowledged is lost, and the address (with its MAC) now
    answers from lab2, one host answering ARP for it throughout. A target without the
    network is refused before anything, saying what to create."""
    a, b, c = hosts["lab1"], hosts["lab2"], hosts["lab3"]
    l2_network(lab, a, b)
    address = start(a)
    mac = mac_of(a, "kv")
    refused = run_cli("migrate", "kv", "--from", "lab1", "--to", "lab3", "--dry-run")
    assert refused.returncode == 2, refused.stderr
    assert f"docker network create -d macvlan --subnet {lab.subnet}.0/24" in refused.stderr, refused.stderr
    assert not c.engine.containers(all=True)

    client, arp = HeldClient(address), ArpWatch(lab.bridge, address, f"{lab.subnet}.1")
    client.start(), arp.start()
    time.sleep(0.5)
    before = len(client.acked)
    r = run_cli("migrate", "kv", "--from", "lab1", "--to", "lab2", "--json")
    time.sleep(1)
    client.finish(), arp.finish()
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["status"] == "migrated" and rep["connections"] == "kept"
    assert rep["sockets_restored"] == 1, rep  # the held client's (Redis listens; nothing else was connected)
    assert len(client.acked) > before + 50, "the client made no progress after the move"
    assert_session_kept(client, address)
    assert "kv" in b.running() and not a.engine.containers(all=True)
    assert mac_of(b, "kv") == mac and port_of(lab, mac).endswith("lab2")
    assert arp.most == 1, f"requests answered by more than one host: {arp.replies.count(2)}"
    assert arp.macs == {mac.lower()}
    assert arp.replies[-1] == 1  # it answers at the end, from lab2


def test_connections_closed_on_request(hosts: dict[str, LabHost], lab: Lab) -> None:
    """--close-connections: the address still moves (same address and MAC on lab2), the held
    connection is reset and a new one reaches the moved server."""
    a, b = hosts["lab1"], hosts["lab2"]
    l2_network(lab, a, b)
    address = start(a)
    client = HeldClient(address)
    client.start()
    r = run_cli("migrate", "kv", "--from", "lab1", "--to", "lab2", "--close-connections", "--json")
    client.join(30)
    client.finish()
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["connections"] == "closed" and rep["sockets_restored"] == 0
    assert client.error is not None and "reset" in client.error.lower(), client.error
    assert redis.Redis(address, 6379, db=3).get(f"held{client.acked[-1]}") == str(client.acked[-1]).encode()
    assert "kv" in b.running()


@pytest.mark.parametrize("delay", [0.0, 0.3])
def test_rollback_gives_the_address_and_the_connection_back(hosts: dict[str, LabHost], inv: Inventory, lab: Lab,
                                                            delay: float) -> None:
    """lab2's dockerd SIGKILLed `delay` s into the restore: the move rolls back (or, if the
    restore won the race, completes). Either way exactly one copy runs, the held
    connection goes on with nothing lost, and at no moment did two hosts answer ARP for the
    address (what the dead dockerd left holding it on lab2 is removed)."""
    a, b = hosts["lab1"], hosts["lab2"]
    l2_network(lab, a, b)
    address = start(a)
    mac = mac_of(a, "kv")
    h2 = lab.host("lab2")

    def kill() -> None:
        time.sleep(delay)
        os.kill(int((Path(h2.dir) / "dockerd.pid").read_text()), signal.SIGKILL)

    def at(ev: Event) -> None:
        if ev.kind == "phase" and ev.phase == "restore":
            threading.Thread(target=kill).start()

    client, arp = HeldClient(address), ArpWatch(lab.bridge, address, f"{lab.subnet}.1")
    client.start(), arp.start()
    err: MigratorError | None = None
    try:
        try:
            Migration(inv, "kv", "lab1", "lab2", events=at).run()
        except MigratorError as ex:
            err = ex
        time.sleep(1.5)
        client.finish(), arp.finish()
    finally:
        lab.start_dockerd(h2)
    where = b if err is None else a
    print(f"delay {delay}: {'migrated' if err is None else 'rolled back'}; ARP replies per request: "
          f"{sorted(set(arp.replies))}, gap {client.longest_gap_s:.2f} s")
    assert err is None or "rolled back" in str(err), err
    assert [h.name for h in (a, b) if "kv" in h.running()] == [where.name]
    assert_session_kept(client, address)
    assert port_of(lab, mac).endswith(where.name)
    assert arp.most == 1, f"requests answered by more than one host: {arp.replies.count(2)}"
    assert arp.replies[-1] == 1
    lab.restart("lab2")


def test_hooks_run_at_their_stages_and_a_failing_pre_freeze_changes_nothing(hosts: dict[str, LabHost],
                                                                            tmp_path: Path) -> None:
    """Each stage's hook runs once, with the move's facts; a pre-freeze hook that fails
    stops the move before the freeze (exit 2: the source untouched, nothing on the target)
    and post-rollback runs. A bridge-network container's connections cannot be kept."""
    a, b = hosts["lab1"], hosts["lab2"]
    a.sh("docker", "run", "-d", "--name", "r1", "-p", "6379:6379", "lab/redis")
    a.wait_redis().set("k", "v")
    log = tmp_path / "hooks.log"
    say = (f'echo "$MIGRATOR_STAGE $MIGRATOR_CONTAINER $MIGRATOR_SOURCE $MIGRATOR_TARGET $MIGRATOR_SOURCE_ADDRESS '
           f'$MIGRATOR_TARGET_ADDRESS $MIGRATOR_PORTS $MIGRATOR_CONNECTIONS" >> {log}')
    every = [f"--hook={stage}={say}" for stage in ("pre-freeze", "post-restore", "post-rollback")]
    refused = run_cli("migrate", "r1", "--from", "lab1", "--to", "lab2", "--keep-connections")
    assert refused.returncode == 2 and "address is the host's" in refused.stderr, refused.stderr
    r = run_cli("migrate", "r1", "--from", "lab1", "--to", "lab2", "--json", *every)
    assert r.returncode == 0, r.stderr
    facts = f"r1 lab1 lab2 {a.address} {b.address} 6379/tcp closed"
    assert log.read_text().splitlines() == [f"pre-freeze {facts}", f"post-restore {facts}"]
    assert [(h["stage"], h["rc"]) for h in json.loads(r.stdout)["hooks"]] == [("pre-freeze", 0), ("post-restore", 0)]
    log.unlink()
    pid = b.sh("docker", "inspect", "-f", "{{.State.Pid}}", "r1").strip()
    r = run_cli("migrate", "r1", "--from", "lab2", "--to", "lab1", f"--hook=pre-freeze={say}; echo not now; exit 3",
                *every[1:])
    assert r.returncode == 2, r.stderr
    assert "pre-freeze hook" in r.stderr and "not now" in r.stderr and "exited 3" in r.stderr, r.stderr
    back = f"r1 lab2 lab1 {b.address} {a.address} 6379/tcp closed"
    assert log.read_text().splitlines() == [f"pre-freeze {back}", f"post-rollback {back}"]
    assert b.sh("docker", "inspect", "-f", "{{.State.Pid}}", "r1").strip() == pid  # never frozen, never restarted
    assert b.wait_redis().get("k") == b"v"
    assert not a.engine.containers(all=True)
    assert not any(a.leftovers().values()) and not any(b.leftovers().values())
