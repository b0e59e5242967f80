"""`migrator migrate` on the lab: real dockerd, CRIU and sshd on three hosts."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from pathlib import Path

import pytest
import redis
from conftest import LabHost, check_all, fill, run_cli

from migrator import checkpoint
from migrator.errors import CheckpointError, MigrationFailed
from migrator.inventory import Inventory
from migrator.lab import Lab
from migrator.migrate import Event, Migration
from migrator.probes import runtime_root
from migrator.transport import Host


def start_redis(h: LabHost, name: str = "r1", port: int = 6379, *extra: str) -> redis.Redis:
    h.sh("docker", "run", "-d", "--name", name, "-p", f"{port}:6379", *extra, "lab/redis")
    return h.wait_redis(port)


def test_a_container_of_a_non_root_user_moves_with_its_memory(hosts: dict[str, LabHost]) -> None:
    """Redis as uid 1000, with a helper process of that user beside it: on this sandbox
    root lacks CAP_SYS_RESOURCE, so CRIU reads their rlimits from /proc (the lab's CRIU
    patch; preflight checks for it). The same server goes on (its run_id and start time),
    as the same user, with every key."""
    a, b = hosts["lab1"], hosts["lab2"]
    a.sh("docker", "run", "-d", "--name", "nr", "-p", "6379:6379", "--user", "1000:1000", "lab/redis", "sh", "-c",
         "sleep 100000 & exec /usr/bin/redis-server --protected-mode no --save '' --appendonly no")
    r = a.wait_redis()
    fill(r, 20_000)
    before = r.info("server")
    uids = a.sh("bash", "-c", "for p in $(docker top nr -eo pid | tail -n +2); do awk '/^Uid:/ {print $2}' "
                "/proc/$p/status; done").split()
    assert uids == ["1000", "1000"], uids  # two processes, both the user's
    res = run_cli("migrate", "nr", "--from", "lab1", "--to", "lab2", "--json")
    assert res.returncode == 0, res.stderr
    checks = {c["name"]: c for c in json.loads(res.stdout)["preflight"]}
    assert checks["criu can dump it"]["ok"]
    after = b.wait_redis().info("server")
    assert after["run_id"] == before["run_id"] and after["process_id"] == before["process_id"]
    assert after["uptime_in_seconds"] >= before["uptime_in_seconds"]
    check_all(b.redis(), 20_000)
    assert b.sh("bash", "-c", "for p in $(docker top nr -eo pid | tail -n +2); do awk '/^Uid:/ {print $2}' "
                "/proc/$p/status; done").split() == ["1000", "1000"]


def test_redis_100k_keys_moves_with_its_memory(hosts: dict[str, LabHost]) -> None:
    a, b = hosts["lab1"], hosts["lab2"]
    fill(start_redis(a), 100_000)
    r = run_cli("migrate", "r1", "--from", "lab1", "--to", "lab2", "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["status"] == "migrated" and rep["container"] == "r1"
    assert 0 < rep["downtime_s"] < rep["total_s"]
    assert rep["bytes_sent"] > 0
    names = [p["name"] for p in rep["phases"]]
    assert names == ["resolve", "preflight", "presync", "freeze", "transfer", "filesystem", "restore",
                     "verify", "cleanup"]
    assert all(p["seconds"] >= 0 for p in rep["phases"])
    check_all(b.wait_redis(), 100_000)
    assert a.running() == [] and a.engine.inspect("r1") is None, "the source container is removed"
    assert b.running() == ["r1"]
    for h in (a, b):
        assert not any(h.leftovers().values()), f"{h.name}: {h.leftovers()}"


def test_configuration_and_named_volume_are_equal_on_target(hosts: dict[str, LabHost]) -> None:
    a, b = hosts["lab1"], hosts["lab2"]
    a.sh("docker", "volume", "create", "--label", "team=db", "appdata")
    a.sh("docker", "run", "-d", "--name", "cfg", "-e", "MODE=primary", "-e", "TOKEN=x y",
         "--label", "app=cache", "--label", "tier=2", "-p", "7001:6379", "-p", "7002:7002",
         "--restart", "unless-stopped", "--memory", "256m", "--hostname", "cachehost",
         "-v", "appdata:/data", "lab/redis")
    ra = a.wait_redis(7001)
    ra.set("mem", "kept")
    a.sh("docker", "exec", "cfg", "sh", "-c", "echo volume-data > /data/file; mkdir -p /srv; "
         "echo rootfs-data > /srv/written")
    before = a.engine.inspect("cfg")
    r = run_cli("migrate", "cfg", "--from", "lab1", "--to", "lab2")
    assert r.returncode == 0, r.stderr + r.stdout
    assert b.wait_redis(7001).get("mem") == b"kept"
    after = b.engine.inspect("cfg")
    assert after is not None and before is not None
    for key in ("Env", "Labels", "Hostname", "Cmd", "Entrypoint", "WorkingDir", "User", "ExposedPorts"):
        assert after["Config"][key] == before["Config"][key], key
    for key in ("PortBindings", "RestartPolicy", "Memory", "NanoCpus", "Binds", "NetworkMode"):
        assert after["HostConfig"][key] == before["HostConfig"][key], key
    assert after["Config"]["Image"] == before["Config"]["Image"] == "lab/redis"
    assert b.sh("docker", "exec", "cfg", "cat", "/data/file").strip() == "volume-data"
    assert b.sh("docker", "exec", "cfg", "cat", "/srv/written").strip() == "rootfs-data"
    assert b.engine.volume_inspect("appdata")["Labels"] == {"team": "db"}
    # the container stays a normal Docker container on the target
    b.sh("docker", "logs", "cfg")
    b.sh("docker", "stop", "cfg")
    assert b.running() == []


@pytest.mark.parametrize("kind", ["volume", "bind"])
def test_a_file_rewritten_in_place_after_the_presync_arrives_exact(hosts: dict[str, LabHost], inv: Inventory,
                                                                     kind: str) -> None:
    """A file of a volume (or of a bind mount moved with --bind-mounts sync) rewritten in
    place after the presync copied it: same size, and its modification time set back to
    what it was (rsync's quick check then sees no change, as for a database page rewritten
    within the same second). The target has the new bytes; so does a file of the same
    directory changed the ordinary way."""
    a, b = hosts["lab1"], hosts["lab2"]
    for h in (a, b):
        h.sh("rm", "-rf", "/tmp/rw-bind")
    a.sh("mkdir", "-p", "/tmp/rw-bind")
    a.sh("docker", "run", "-d", "--name", "db", "-v", "dbdata:/data" if kind == "volume" else "/tmp/rw-bind:/data",
         "lab/redis")
    a.sh("docker", "exec", "db", "sh", "-c", "head -c 65536 /dev/zero > /data/page; echo old > /data/plain")

    def where(h: LabHost) -> str:
        return h.engine.volume_inspect("dbdata")["Mountpoint"] if kind == "volume" else "/tmp/rw-bind"

    vol = where(a)

    def hook(ev: Event) -> None:
        if ev.kind == "done" and ev.phase == "presync":  # copied: rewrite it, then hide that
            a.sh("bash", "-c", 'm=$(stat -c %y "$1"); printf "NEW-BYTES" | dd of="$1" conv=notrunc status=none; '
                 'touch -d "$m" "$1"; echo newer > "$2"', "_", f"{vol}/page", f"{vol}/plain")

    rep = Migration(inv, "db", "lab1", "lab2", events=hook, bind_mounts="sync" if kind == "bind" else None).run()
    assert rep.status == "migrated"
    src = a.sh("bash", "-c", f"stat -c '%s %Y' {vol}/page; head -c 9 {vol}/page; echo")
    assert src.split("\n")[1] == "NEW-BYTES"
    assert b.sh("docker", "exec", "db", "sh", "-c", "head -c 9 /data/page; echo; cat /data/plain").split() == [
        "NEW-BYTES", "newer"]
    size_mtime = b.sh("bash", "-c", "stat -c '%s %Y' " + where(b) + "/page")
    assert size_mtime.strip() == src.split("\n")[0].strip()  # the same size and time as the source's
    for h in (a, b):
        h.sh("rm", "-rf", "/tmp/rw-bind")


def test_the_transfer_key_only_writes_this_migration_s_places(hosts: dict[str, LabHost], inv: Inventory) -> None:
    """The single-use key a source gets can hand data to receive.sh only, into the places
    the controller named: tried from the source, in the middle of a move with a volume and
    a bind-mounted file, every other use is refused or lands nowhere; the move then works."""
    a, b = hosts["lab1"], hosts["lab2"]
    for h in (a, b):
        h.sh("bash", "-c", "rm -rf /tmp/kb /root/evil /etc/evil; touch /tmp/kb-ref")
    a.sh("bash", "-c", "mkdir -p /tmp/kb; echo conf > /tmp/kb/app.conf")
    a.sh("docker", "run", "-d", "--name", "kv", "-v", "kvdata:/data", "-v", "/tmp/kb/app.conf:/etc/app.conf",
         "lab/redis")
    tried: dict[str, str] = {}

    def hook(ev: Event) -> None:
        if not (ev.kind == "done" and ev.phase == "presync"):
            return
        op = a.sh("ls", "/var/lib/migrator/work").split()[0]
        places = b.sh("cat", f"/var/lib/migrator/transfer/{op}.allow").splitlines()
        vol = next(i for i, ln in enumerate(places) if ln.startswith("dir ") and "kvdata" in ln)
        conf = places.index("file /tmp/kb/app.conf")
        w = f"/var/lib/migrator/work/{op}"
        ssh = (f"ssh -i {w}/transfer_key -o UserKnownHostsFile={w}/known_hosts -o StrictHostKeyChecking=yes "
               f"-o BatchMode=yes -l root")
        script = f"""exec 2>&1; echo evil > /tmp/evil
            {ssh} 10.203.0.12 id; echo "id: $?"
            {ssh} 10.203.0.12 'cat /etc/shadow'; echo "shadow: $?"
            {ssh} 10.203.0.12 rsync --server -logDtpr . /root/; echo "rsync-server: $?"
            rsync -e "{ssh}" /tmp/evil 10.203.0.12:/root/evil; echo "rsync-path: $?"
            rsync -e "{ssh}" /tmp/evil 10.203.0.12::m{vol}/../../../../../root/evil; echo "rsync-up: $?"
            rsync -e "{ssh}" /tmp/evil 10.203.0.12::m{conf}/evil; echo "rsync-other: $?"
            {ssh} 10.203.0.12 'untar 0 /etc' < /dev/null; echo "untar-etc: $?"
            {ssh} 10.203.0.12 true; echo "true: $?" """
        tried["out"] = a.sh("bash", "-c", script, check=False)

    rep = Migration(inv, "kv", "lab1", "lab2", events=hook, bind_mounts="sync").run()
    assert rep.status == "migrated" and rep.transfer == "direct"
    out = tried["out"]
    codes = dict(re.findall(r"^([\w-]+): (\d+)$", out, re.M))
    assert codes["true"] == "0", out  # the key itself works
    for what in ("id", "shadow", "rsync-server", "rsync-path", "rsync-up", "rsync-other", "untar-etc"):
        assert codes[what] != "0", (what, out)
    assert out.count("receive.sh: refused") >= 4, out
    assert b.sh("bash", "-c", "find / -maxdepth 2 -name evil; find /tmp/kb /var/lib/docker/volumes -name evil; "
                "true") == ""
    assert b.sh("cat", "/tmp/kb/app.conf").strip() == "conf"
    for h in (a, b):
        h.sh("rm", "-rf", "/tmp/kb", "/tmp/evil", "/tmp/kb-ref")


class Clients:
    """One client holds a connection open; another INCRs every few ms wherever the service is
    (old address, then new). Every acknowledged write is recorded."""

    def __init__(self, addrs: list[tuple[str, int]]) -> None:
        self.addrs = addrs
        self.stop = threading.Event()
        self.acked = 0
        self.errors = 0
        self.holder_reconnected = False
        self.threads = [threading.Thread(target=self.writer), threading.Thread(target=self.holder)]

    def _conn(self) -> redis.Redis | None:
        for host, port in self.addrs:
            r = redis.Redis(host, port, socket_timeout=1, socket_connect_timeout=0.5)
            try:
                if r.ping():
                    return r
            except redis.RedisError:
                continue
        return None

    def writer(self) -> None:
        r = None
        while not self.stop.is_set():
            try:
                r = r or self._conn()
                if r is not None:
                    self.acked = int(r.incr("counter"))
            except redis.RedisError:
                self.errors += 1
                r = None
            time.sleep(0.003)

    def holder(self) -> None:
        r = self._conn()
        while not self.stop.is_set():
            try:
                assert r is not None
                r.ping()
            except (redis.RedisError, AssertionError):
                r = self._conn()
                if r is not None and r.connection_pool.connection_kwargs["host"] == self.addrs[1][0]:
                    self.holder_reconnected = True
            time.sleep(0.05)

    def __enter__(self) -> Clients:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)


def test_migrates_with_clients_connected_and_writing(hosts: dict[str, LabHost]) -> None:
    a, b = hosts["lab1"], hosts["lab2"]
    fill(start_redis(a), 10_000)
    with Clients([(a.address, 6379), (b.address, 6379)]) as cl:
        assert _wait(lambda: cl.acked > 50)
        r = run_cli("migrate", "r1", "--from", "lab1", "--to", "lab2", "--json")
        assert r.returncode == 0, r.stderr
        seen = cl.acked
        assert _wait(lambda: cl.acked > seen + 50), "the writer resumed on the new host"
    final = int(b.redis().get("counter") or 0)
    assert final >= cl.acked, "no acknowledged INCR is missing"
    assert cl.holder_reconnected, "the idle client reconnected to the new address"
    check_all(b.redis(), 10_000)


def _wait(pred, timeout: float = 30) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_chain_lab1_lab2_lab1_lab3(hosts: dict[str, LabHost]) -> None:
    fill(start_redis(hosts["lab1"]), 5_000)
    for src, dst in (("lab1", "lab2"), ("lab2", "lab1"), ("lab1", "lab3")):
        r = run_cli("migrate", "r1", "--from", src, "--to", dst)
        assert r.returncode == 0, f"{src}->{dst}: {r.stderr}"
        check_all(hosts[dst].wait_redis(), 5_000)
    assert [h.running() for h in hosts.values()] == [[], [], ["r1"]]


def _stop_dockerd_on(lab: Lab, host: str, phase: str, kind: str = "done"):  # type: ignore[no-untyped-def]
    def hook(ev: Event) -> None:
        if ev.kind == kind and ev.phase == phase:
            lab.stop_service(lab.host(host), "dockerd")
    return hook


@pytest.mark.parametrize("phase, kind, frozen", [("preflight", "done", False), ("restore", "phase", True)])
def test_target_dockerd_dies_source_comes_back(hosts: dict[str, LabHost], inv: Inventory, lab: Lab,
                                               phase: str, kind: str, frozen: bool) -> None:
    a, b = hosts["lab1"], hosts["lab2"]
    fill(start_redis(a), 20_000)
    m = Migration(inv, "r1", "lab1", "lab2", events=_stop_dockerd_on(lab, "lab2", phase, kind))
    try:
        with pytest.raises(MigrationFailed) as e:
            m.run()
        assert e.value.exit_code == 1
        assert m.report.status == "rolled_back"
        assert ("freeze" in [p.name for p in m.report.phases]) == frozen
    finally:
        lab.start_dockerd(lab.host("lab2"))
    check_all(a.wait_redis(), 20_000)
    assert a.running() == ["r1"]
    b.host.close()
    assert b.running() == [], "never two running copies"
    left = b.engine.inspect("r1")
    if frozen and left is not None:  # its dockerd was down: the message names what is left
        assert f"container r1 ({left['Id'][:12]}) is left" in str(e.value)
        b.engine.remove_container("r1")
    assert b.engine.inspect("r1") is None, "nothing left on the target"
    for h in (a, b):
        assert not any(h.leftovers().values()), f"{h.name}: {h.leftovers()}"


def test_a_bug_of_ours_after_the_freeze_still_gives_the_container_back(hosts: dict[str, LabHost], inv: Inventory,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Not only migrator's own errors roll back: an exception it did not expect, met with
    the source frozen, does too (exit 1, the same process running on the source)."""
    a, b = hosts["lab1"], hosts["lab2"]
    fill(start_redis(a), 1000)
    before = a.redis().info("server")

    def bug(*_args: object, **_kw: object) -> int:
        raise NameError("name 'pages' is not defined")

    monkeypatch.setattr(checkpoint, "start_from_images", bug)
    m = Migration(inv, "r1", "lab1", "lab2")
    with pytest.raises(MigrationFailed, match=r"internal error: NameError") as e:
        m.run()
    assert e.value.exit_code == 1 and m.report.status == "rolled_back" and m.report.downtime_s > 0
    assert a.running() == ["r1"] and b.running() == []
    assert a.redis().info("server")["process_id"] == before["process_id"]
    check_all(a.redis(), 1000)
    for h in (a, b):
        assert not any(h.leftovers().values()), f"{h.name}: {h.leftovers()}"


def test_source_is_held_frozen_and_refusing_until_the_target_answers(hosts: dict[str, LabHost],
                                                                      inv: Inventory) -> None:
    """Between the dump and the verdict the source's process still exists, frozen (CRIU's
    post-dump hold), its address refuses connections at once, and runc.conf was left as it
    was (the dump's CRIU options are in a file of its own); after the commit the process
    is gone. (The rollback side, the process resuming, is what the fault tests check.)"""
    a, b = hosts["lab1"], hosts["lab2"]
    fill(start_redis(a), 5_000)
    pid = a.engine.inspect("r1")["State"]["Pid"]
    seen: dict[str, object] = {}

    def hook(ev: Event) -> None:
        if ev.kind == "phase" and ev.phase == "restore":
            seen["alive"] = a.host.ok(["test", "-e", f"/proc/{pid}"])
            # the dump's pre-dump step froze the container: CRIU found it frozen, so it did not
            # wait out its own 100 ms freezer poll (the first state it logs is a frozen one)
            seen["freezer"] = a.sh("bash", "-c", "grep -m1 -E '^\\([0-9.]+\\) (freezer\\.state|cgroup\\.freeze)=' "
                                   "/dev/shm/migrator/mig-*/criu-work/dump.log | cut -d' ' -f2").strip()
            # the dump's CRIU options came from a file of its own (dumps on one host need not
            # wait for each other); runc.conf was never changed for it
            seen["config"] = a.sh("bash", "-c", "grep -c -E 'Parsing config file /dev/shm/migrator/mig-[^/]+/"
                                  "criu-work/criu.conf' /dev/shm/migrator/mig-*/criu-work/dump.log").strip()
            seen["runc.conf"] = a.sh("bash", "-c", "cat /etc/criu/runc.conf 2>/dev/null; "
                                     "ls /var/lib/migrator/locks/runc-conf 2>/dev/null; true").strip()
            t0 = time.monotonic()
            try:
                socket.create_connection((a.address, 6379), timeout=2).close()
                seen["connect"] = "accepted"
            except ConnectionRefusedError:
                seen["connect"] = "refused"
            except OSError as ex:
                seen["connect"] = f"{type(ex).__name__}"
            seen["connect_s"] = time.monotonic() - t0

    rep = Migration(inv, "r1", "lab1", "lab2", events=hook).run()
    assert rep.status == "migrated"
    assert seen["alive"] is True, seen  # held, not killed by the dump
    assert seen["freezer"] in ("freezer.state=FROZEN", "cgroup.freeze=1"), seen
    assert seen["runc.conf"] == "" and seen["config"] == "1", seen
    assert seen["connect"] == "refused" and float(str(seen["connect_s"])) < 1, seen
    assert not a.host.ok(["test", "-e", f"/proc/{pid}"]), "committed: the source's process is gone"
    assert not any(b.leftovers().values()), b.leftovers()  # containerd's copy of the checkpoint too
    check_all(b.wait_redis(), 5_000)


def test_target_refuses_new_connections_during_the_restore_never_drops_them(hosts: dict[str, LabHost],
                                                                             inv: Inventory) -> None:
    """While CRIU restores the container on the target its network is locked; a client that
    tries the new address then is refused at once (and retries), not left waiting for a SYN
    retransmit (1 s and more) because the lock dropped its SYN."""
    a, b = hosts["lab1"], hosts["lab2"]
    fill(start_redis(a), 5_000)
    go, stop = threading.Event(), threading.Event()
    attempts: list[tuple[float, str]] = []  # (seconds it took, outcome)

    def hammer() -> None:
        go.wait()
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                socket.create_connection((b.address, 6379), timeout=3).close()
                out = "accepted"
            except ConnectionRefusedError:
                out = "refused"
            except OSError as ex:
                out = type(ex).__name__
            attempts.append((time.monotonic() - t0, out))
            time.sleep(0.002)

    t = threading.Thread(target=hammer, daemon=True)
    t.start()

    def hook(ev: Event) -> None:
        if ev.kind == "phase" and ev.phase == "restore":
            go.set()

    try:
        rep = Migration(inv, "r1", "lab1", "lab2", events=hook).run()
    finally:
        go.set()
        stop.set()
        t.join(10)
    assert rep.status == "migrated"
    outcomes = [o for _, o in attempts]
    assert "refused" in outcomes and outcomes[-1] == "accepted", outcomes
    slow = [(round(d, 3), o) for d, o in attempts if d > 0.5]
    assert not slow, f"connection attempts left hanging during the restore: {slow}"
    assert not b.leftovers()["guards"], "the guard of its published port is gone"
    check_all(b.wait_redis(), 5_000)


@pytest.mark.parametrize("args, needle", [
    (["r1", "--from", "nohost", "--to", "lab2"], "unknown host 'nohost'"),
    (["ghost", "--from", "lab1", "--to", "lab2"], "no container 'ghost'"),
    (["$(touch /tmp/pwned)", "--from", "lab1", "--to", "lab2"], "not a container name"),
    (["r1; rm -rf /", "--from", "lab1", "--to", "lab2"], "not a container name"),
    (["r1", "--from", "lab1", "--to", "lab1"], "both 'lab1'"),
])
def test_bad_input_exit_2_nothing_changed(hosts: dict[str, LabHost], args: list[str], needle: str) -> None:
    a = hosts["lab1"]
    start_redis(a).set("x", "1")
    Path("/tmp/pwned").unlink(missing_ok=True)
    r = run_cli("migrate", *args)
    assert r.returncode == 2, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], r.stderr
    assert r.stderr.rstrip().endswith(errors[0].rstrip())
    assert not Path("/tmp/pwned").exists()
    for h in hosts.values():
        assert not h.host.ok(["test", "-e", "/tmp/pwned"])
    assert a.running() == ["r1"] and a.redis().get("x") == b"1"
    assert not any(a.leftovers().values())


def test_dry_run_changes_nothing_and_preflight_refuses(hosts: dict[str, LabHost]) -> None:
    a, b = hosts["lab1"], hosts["lab2"]
    start_redis(a)
    r = run_cli("migrate", "r1", "--from", "lab1", "--to", "lab2", "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["status"] == "planned" and all(c["ok"] for c in rep["preflight"])
    assert a.running() == ["r1"] and b.running() == []
    # the port is taken on the target: refused before anything changes
    start_redis(b, "other", 6379)
    r = run_cli("migrate", "r1", "--from", "lab1", "--to", "lab2")
    assert r.returncode == 2
    assert "lab2: port 6379/tcp" in r.stderr
    assert a.running() == ["r1"] and b.running() == ["other"]
    for h in (a, b):
        assert not any(h.leftovers().values())


def test_relay_through_the_controller(hosts: dict[str, LabHost]) -> None:
    a, b = hosts["lab1"], hosts["lab2"]
    a.sh("docker", "volume", "create", "rdata")
    a.sh("docker", "run", "-d", "--name", "r1", "-p", "6379:6379", "-v", "rdata:/data", "lab/redis")
    fill(a.wait_redis(), 20_000)
    a.sh("docker", "exec", "r1", "sh", "-c", "echo relayed > /data/file")
    r = run_cli("migrate", "r1", "--from", "lab1", "--to", "lab2", "--relay", "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["transfer"] == "relay" and rep["bytes_sent"] > 0
    check_all(b.wait_redis(), 20_000)
    assert b.sh("docker", "exec", "r1", "cat", "/data/file").strip() == "relayed"
    for h in (a, b):
        assert not any(h.leftovers().values()), f"{h.name}: {h.leftovers()}"


GHOST = ("head -c 3000000 /dev/zero > /tmp/big; exec 3</tmp/big; rm /tmp/big; "
         "exec /usr/bin/redis-server --protected-mode no --save '' --appendonly no")


def test_preflight_refuses_a_container_criu_cannot_dump_before_any_freeze(hosts: dict[str, LabHost]) -> None:
    """A process holding a 3 MB deleted file open: CRIU would refuse it after the freeze
    (over its ghost-limit). Preflight says so first, with the fix; nothing is touched."""
    a, b = hosts["lab1"], hosts["lab2"]
    a.sh("docker", "run", "-d", "--name", "ghost", "-p", "6379:6379", "lab/redis", "sh", "-c", GHOST)
    a.wait_redis().set("k", "v")
    pid = a.engine.inspect("ghost")["State"]["Pid"]
    r = run_cli("migrate", "ghost", "--from", "lab1", "--to", "lab2")
    assert r.returncode == 2, r.stderr
    assert "criu can dump it" in r.stderr and "deleted file /tmp/big" in r.stderr and "ghost-limit" in r.stderr
    assert a.running() == ["ghost"] and a.engine.inspect("ghost")["State"]["Pid"] == pid
    assert a.redis().get("k") == b"v"
    assert b.running() == [] and not any(a.leftovers().values()) and not any(b.leftovers().values())


def test_a_failed_dump_says_criu_s_error_and_keeps_its_log(hosts: dict[str, LabHost], inv: Inventory) -> None:
    """The dump itself (past preflight) of that container fails: the error carries CRIU's
    Error line (the cause, not "Dumping FAILED" alone) and names its log, kept 0600; the
    container goes on answering."""
    a = hosts["lab1"]
    a.sh("docker", "run", "-d", "--name", "ghost", "-p", "6379:6379", "lab/redis", "sh", "-c", GHOST)
    a.wait_redis().set("k", "v")
    cid = a.engine.inspect("ghost")["Id"]
    with Host(inv.host("lab1")) as h, pytest.raises(CheckpointError) as failed:
        checkpoint.dump(h, cid, "/var/lib/migrator/work/failing/img", root=runtime_root(h, cid))
    msg = str(failed.value)
    assert "Can't dump ghost file" in msg and "increase limit" in msg, msg
    log = re.search(r"CRIU's log: (\S+)", msg)
    assert log and log[1].startswith("/var/lib/migrator/logs/"), msg
    assert a.sh("stat", "-c", "%a", log[1]).strip() == "600"
    assert "Can't dump ghost file" in a.sh("cat", log[1])
    assert a.redis().get("k") == b"v"


def test_keep_source_leaves_the_source_stopped_with_its_configuration(hosts: dict[str, LabHost]) -> None:
    a, b = hosts["lab1"], hosts["lab2"]
    start_redis(a, "r1", 6379, "--restart", "always", "-v", "kept:/data").set("k", "v")
    r = run_cli("migrate", "r1", "--from", "lab1", "--to", "lab2", "--keep-source", "--json")
    assert r.returncode == 0, r.stderr
    assert b.wait_redis().get("k") == b"v"
    kept = a.engine.inspect("r1")
    assert kept is not None and not kept["State"]["Running"], "kept, stopped"
    # its restart policy "no": a dockerd restart there never starts this stale copy beside the moved one
    assert kept["HostConfig"]["RestartPolicy"]["Name"] == "no"
    assert b.engine.inspect("r1")["HostConfig"]["RestartPolicy"]["Name"] == "always"  # the moved one has it
    assert a.sh("docker", "volume", "ls", "-q").split() == ["kept"]  # its volume stays with it

