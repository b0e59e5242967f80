"""Faults injected for real on the lab; after each, the invariant: exactly one running
instance, holding every acknowledged write, and nothing stray on either host."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import MIGRATOR, ROOT, LabHost, check_all, fill, kill_cli_at, record, run_cli
from redis.backoff import NoBackoff
from redis.retry import Retry

from migrator import clone as clone_module
from migrator.errors import MigrationFailed, MigratorError, RollbackFailed
from migrator.inventory import Inventory
from migrator.lab import Lab
from migrator.lab.faults import corrupting, criu_killer
from migrator.migrate import Event, Migration
from migrator.transport import wait_for

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
    kill_cli_at(f"{phase} ...", "migrate", "r1", "--from", "lab1", "--to", "lab2")
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
    record("controller SIGKILLed, then `migrator recover`", phase, res["outcome"], hosts)


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
    record("a second migrate of the same container", "presync", "refused by the lock; first one migrated", hosts)


# --- faults injected during a live migration (in-process, to time them to a phase) -----------
def _run_with(inv: Inventory, hook: Callable[[Event], None]) -> tuple[Migration, MigratorError | None]:
    m = Migration(inv, "r1", "lab1", "lab2", events=hook)
    try:
        m.run()
        return m, None
    except MigratorError as e:
        return m, e


def _recover_leftovers(err: MigratorError | None) -> None:
    """What a rollback could not remove while a host was unreachable is named in the error,
    and `migrator recover` removes it once the host answers again."""
    r = run_cli("recover", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    for res in json.loads(r.stdout):
        assert err is not None and "migrator recover" in str(err), str(err)
        assert res["outcome"] == "rolled_back" and not res["notes"], res


def test_link_to_target_cut_during_transfer(hosts: dict[str, LabHost], inv: Inventory, lab: Lab) -> None:
    a = hosts["lab1"]
    start_redis(a)
    fill(a.redis(), 20_000)
    veth = "mgv-lab2"

    def hook(ev: Event) -> None:
        if ev.kind == "phase" and ev.phase == "transfer":
            subprocess.run(["ip", "link", "set", veth, "down"], check=True)

    try:
        m, err = _run_with(inv, hook)
    finally:
        subprocess.run(["ip", "link", "set", veth, "up"], check=True)
    assert isinstance(err, MigrationFailed), err
    assert m.report.status == "rolled_back"
    _recover_leftovers(err)
    assert assert_invariant(hosts, 20_000) == "lab1"
    record("link to the target cut", "transfer", m.report.status, hosts)


def test_target_dockerd_killed_during_restore(hosts: dict[str, LabHost], inv: Inventory, lab: Lab) -> None:
    a = hosts["lab1"]
    start_redis(a)
    fill(a.redis(), 20_000)
    h2 = lab.host("lab2")
    at: dict[str, float] = {}

    def kill_soon() -> None:
        time.sleep(0.2)
        os.kill(int((Path(h2.dir) / "dockerd.pid").read_text()), signal.SIGKILL)
        at["killed"] = time.monotonic()

    def hook(ev: Event) -> None:
        if ev.kind == "phase" and ev.phase == "restore":
            threading.Thread(target=kill_soon).start()
        elif ev.kind == "done" and ev.phase == "restore":
            at["restored"] = time.monotonic()

    try:
        m, err = _run_with(inv, hook)
    finally:
        lab.start_dockerd(h2)
    # The fault hit: dockerd died while the restore still needed it.
    assert "killed" in at and at["killed"] < at.get("restored", float("inf")), at
    # Either the restore got far enough before the kill (then it is migrated and runs on
    # lab2), or it rolled back; never two copies, never none.
    _recover_leftovers(err)
    where = assert_invariant(hosts, 20_000)
    assert (where == "lab2") == (err is None), err
    record("target dockerd SIGKILLed during restore", "restore", m.report.status, hosts)
    # A dockerd that comes back to a container CRIU restored without it (which the rollback
    # then killed through runc) can keep a docker-proxy on the port: restart it, for the
    # next tests.
    lab.restart("lab2")


def test_source_sshd_stopped_mid_migration(hosts: dict[str, LabHost], inv: Inventory, lab: Lab) -> None:
    a = hosts["lab1"]
    start_redis(a)
    fill(a.redis(), 20_000)
    h1 = lab.host("lab1")
    down: list[bool] = []

    def refused() -> bool:
        try:
            socket.create_connection((h1.address, 22), timeout=2).close()
            return False
        except ConnectionRefusedError:
            return True

    def hook(ev: Event) -> None:
        if ev.kind == "phase" and ev.phase == "freeze":
            lab.stop_service(h1, "sshd")
            down.append(refused())

    try:
        m, err = _run_with(inv, hook)
        down.append(refused())
    finally:
        lab.start_service(h1, "sshd")
    # The fault hit: no new connection to lab1 could be made from the freeze to the end,
    # while the move still ran its dump there and its cleanup or rollback.
    assert down == [True, True], down
    assert assert_invariant(hosts, 20_000) == ("lab2" if err is None else "lab1")
    record("source sshd stopped (sessions open stay)", "freeze", m.report.status, hosts)


def test_criu_killed_mid_dump_source_answers_again(hosts: dict[str, LabHost], inv: Inventory, lab: Lab) -> None:
    """A dump that dies part-way leaves the container frozen and behind CRIU's network lock
    ('Up', but cut off): the rollback thaws it, removes the lock and checks it answers."""
    a = hosts["lab1"]
    a.sh("docker", "run", "-d", "--name", "r1", "-p", "6379:6379", "lab/redis")
    fill(a.wait_redis(), 200_000)  # a dump long enough to be caught
    killer, killed = criu_killer(lab, "lab1")

    def hook(ev: Event) -> None:
        if ev.kind == "phase" and ev.phase == "freeze":
            killer.start()

    m, err = _run_with(inv, hook)
    killer.join()
    assert killed, "criu was never seen"
    assert isinstance(err, MigrationFailed), err
    assert assert_invariant(hosts, 200_000) == "lab1"
    a.redis().set("after", "1")  # it really answers (no network lock, not frozen)
    record("criu SIGKILLed part-way through the dump", "freeze", m.report.status, hosts)


@pytest.mark.parametrize("op", ["checkpoint create", "clone"])
def test_criu_killed_during_a_leave_running_dump(hosts: dict[str, LabHost], lab: Lab, op: str) -> None:
    """`checkpoint create` (what `persist` runs) and `clone` dump with the container left
    running: when CRIU dies part-way, it must keep running and answering, and nothing of the
    attempt may stay (no checkpoint listed, no copy, no work dir, no lock)."""
    a, b = hosts["lab1"], hosts["lab2"]
    a.sh("docker", "run", "-d", "--name", "r1", "-p", "6379:6379", "lab/redis")
    fill(a.wait_redis(), 200_000)
    killer, killed = criu_killer(lab, "lab1")
    killer.start()
    if op == "clone":
        r = run_cli("clone", "r1", "--from", "lab1", "--to", "lab2", "--name", "r1-copy")
    else:
        r = run_cli("checkpoint", "create", "r1", "--on", "lab1", "--leave-running")
    killer.join()
    assert killed, "criu was never seen"
    assert r.returncode != 0 and "\nerror: lab1: checkpoint of" in "\n" + r.stderr, r.stderr
    assert assert_invariant(hosts, 200_000) == "lab1"
    a.redis(6379).set("after", "1")  # not frozen, no network lock
    assert json.loads(run_cli("checkpoint", "ls", "--on", "lab1", "--json").stdout) == []
    assert a.sh("bash", "-c", "ls -A /var/lib/migrator/checkpoints/r1 2>/dev/null || true").strip() == ""
    assert b.running() == []
    record(f"criu SIGKILLed part-way through `{op}`", "dump", "failed; the container never stopped answering",
           hosts)


@pytest.mark.parametrize("fault", ["target cut off before the copy starts", "controller killed mid-transfer"])
def test_a_broken_clone_leaves_only_what_recover_removes(hosts: dict[str, LabHost], monkeypatch: pytest.MonkeyPatch,
                                                          fault: str) -> None:
    """A clone has no rollback of the original to do, but it makes work dirs on both hosts
    and a transfer key on the target: when the target drops off the network, the error names
    what stays there (exit 3); when the controller dies, the journal does. Either way `recover`
    removes all of it, and the original never stops answering."""
    a, b = hosts["lab1"], hosts["lab2"]
    start_redis(a)
    fill(a.redis(), 200_000)
    if fault.startswith("target cut off"):
        veth, start_from = "mgv-lab2", clone_module.store.start_from

        def cut_then_start(*args: Any, **kwargs: Any) -> str:
            subprocess.run(["ip", "link", "set", veth, "down"], check=True)
            return start_from(*args, **kwargs)

        monkeypatch.setattr(clone_module.store, "start_from", cut_then_start)
        try:
            with pytest.raises(RollbackFailed) as err:
                clone_module.clone(a.host, b.host, "r1", "r1-copy")
        finally:
            subprocess.run(["ip", "link", "set", veth, "up"], check=True)
        assert err.value.exit_code == 3 and "left over: " in str(err.value), str(err.value)
        assert "migrator recover clone-" in str(err.value), str(err.value)
    else:
        p = subprocess.Popen([*MIGRATOR, *INV, "clone", "r1", "--from", "lab1", "--to", "lab2", "--name", "r1-copy"],
                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_for(lambda: "migrator-transfer-clone-" in b.sh("cat", "/root/.ssh/authorized_keys"), 60,
                        interval=0.02), "the clone never opened its link"
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert b.leftovers()["work"] and b.leftovers()["keys"], b.leftovers()  # the fault hit: there is something
    r = run_cli("recover", "--json")
    assert r.returncode == 0, r.stderr + r.stdout
    [res] = json.loads(r.stdout)
    assert res["migration_id"].startswith("clone-") and res["outcome"] == "rolled_back" and not res["notes"], res
    assert json.loads(run_cli("recover", "--json").stdout) == []
    assert b.running() == [], b.running()  # never started: its copy did not get that far
    assert assert_invariant(hosts, 200_000) == "lab1"
    record(f"clone: {fault}", "transfer", "failed; `recover` removed what it left", hosts)


def test_writes_fail_only_inside_the_reported_downtime(hosts: dict[str, LabHost], inv: Inventory) -> None:
    a, b = hosts["lab1"], hosts["lab2"]
    start_redis(a)
    fill(a.redis(), 20_000)
    stop = threading.Event()
    acked: list[int] = []
    failures: list[float] = []

    def writer() -> None:
        conns = [redis.Redis(x.address, 6379, socket_timeout=0.2, socket_connect_timeout=0.2,
                             retry=Retry(NoBackoff(), 0)) for x in (a, b)]
        while not stop.is_set():
            for c in conns:
                try:
                    acked.append(int(c.incr("counter")))
                    break
                except redis.RedisError:
                    c.connection_pool.disconnect()
            else:
                failures.append(time.monotonic())
            time.sleep(0.001)

    marks: dict[str, float] = {}

    def hook(ev: Event) -> None:
        marks.setdefault(f"{ev.kind}:{ev.phase}", time.monotonic())

    t = threading.Thread(target=writer)
    t.start()
    time.sleep(0.5)
    m, err = _run_with(inv, hook)
    time.sleep(0.5)
    stop.set()
    t.join(10)
    assert err is None, err
    freeze = marks["phase:freeze"]
    window = (freeze - 0.3, freeze + m.report.downtime_s + 0.3)  # one request timeout either side
    outside = [f for f in failures if not window[0] <= f <= window[1]]
    assert not outside, f"{len(outside)} failed writes outside the downtime {window}"
    assert int(b.redis().get("counter") or 0) == max(acked), "no acknowledged INCR is lost"
    record("client INCRs every ms during the move", "all", f"migrated; failures only in the "
           f"{m.report.downtime_s:.2f} s downtime", hosts)


def test_preflight_refuses_what_criu_cannot_move(hosts: dict[str, LabHost], tmp_path: Path) -> None:
    a = hosts["lab1"]
    a.sh("docker", "run", "-d", "-t", "--name", "tty", "lab/redis")
    a.sh("mkdir", "-p", "/var/lib/migrator/bindsrc")
    a.sh("docker", "run", "-d", "--name", "bound", "-v", "/var/lib/migrator/bindsrc:/data", "lab/redis")
    r = run_cli("migrate", "tty", "--from", "lab1", "--to", "lab2")
    assert r.returncode == 2 and "has a TTY" in r.stderr
    r = run_cli("migrate", "bound", "--from", "lab1", "--to", "lab2")
    assert r.returncode == 2 and "pass --bind-mounts sync" in r.stderr and "--bind-mounts shared" in r.stderr
    assert a.running() == ["bound", "tty"]
    record("container with a TTY / a bind mount without --bind-mounts", "preflight", "refused, nothing changed", hosts,
           "none (nothing touched)")


def test_hostile_select_label_and_unreachable_host(hosts: dict[str, LabHost], tmp_path: Path) -> None:
    """A --select value that would be shell syntax runs nowhere: not here, not on the hosts
    (each has its own /tmp), whose containers are asked for by it."""
    Path("/tmp/pwned").unlink(missing_ok=True)
    a = hosts["lab1"]
    a.sh("docker", "run", "-d", "--name", "r1", "--label", "a=$(touch /tmp/pwned); rm -rf /", "lab/redis")
    for h in hosts.values():
        h.sh("bash", "-c", "rm -f /tmp/pwned; touch /tmp/canary")
    r = run_cli("drain", "lab1", "--select", "a=$(touch /tmp/pwned); rm -rf /", "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    assert [m["container"] for m in json.loads(r.stdout)["moves"]] == ["r1"]  # the label matched, as data
    assert not Path("/tmp/pwned").exists()
    for h in hosts.values():
        assert h.sh("bash", "-c", "ls /tmp/pwned /tmp/canary 2>&1 || true").strip() == (
            "ls: cannot access '/tmp/pwned': No such file or directory\n/tmp/canary"), h.name
    inv = tmp_path / "inv.yaml"
    lab_inv = (ROOT / "inventory" / "lab.yaml").read_text()
    inv.write_text(lab_inv.replace("hosts:\n", "hosts:\n  ghost:\n    address: 10.203.0.99\n", 1))
    t0 = time.monotonic()
    r = run_cli("hosts", "--json", inventory=inv)
    assert time.monotonic() - t0 < 40, "an unreachable host is a timeout, not a hang"
    ghost = next(x for x in json.loads(r.stdout) if x["name"] == "ghost")
    assert not ghost["reachable"] and "unreachable" in ghost["error"]
    record("unreachable host in the inventory", "hosts", "reported within the connect timeout", hosts,
           "n/a (no data involved)")


@pytest.mark.parametrize("tool", ["tar", "dd"])
def test_checkpoint_corrupted_in_transit_is_never_restored(hosts: dict[str, LabHost], inv: Inventory, lab: Lab,
                                                            tool: str) -> None:
    a, b = hosts["lab1"], hosts["lab2"]
    start_redis(a)
    fill(a.redis(), 20_000)
    started: list[str] = []

    def hook(ev: Event) -> None:
        if ev.kind == "phase":
            started.append(ev.phase)

    with corrupting(lab, "lab2", tool):
        m, err = _run_with(inv, hook)
    assert isinstance(err, MigrationFailed), err
    if tool == "tar":  # the MANIFEST check, before anything is started
        assert "does not match its checksums" in str(err) and "not restoring from it" in str(err), err
    else:  # their size is checked against CRIU's pagemap (CRIU's restore would spin on them)
        assert "its pagemap says" in str(err) and "not restoring from it" in str(err), err
    assert m.report.status == "rolled_back" and "restore" in started
    assert b.engine.containers(all=True) == [], "the target copy does not run, and is removed"
    assert assert_invariant(hosts, 20_000) == "lab1"
    record("an image file corrupted in transit (a byte flipped on arrival)" if tool == "tar" else
           "the memory pages cut short in transit (8 KiB missing)", "transfer/restore",
           "checksum mismatch found before the restore; rolled back" if tool == "tar" else
           "size mismatch with CRIU's pagemap found before the restore; rolled back", hosts)


@pytest.mark.parametrize("where", ["checkpoint area", "docker dir"])
def test_target_out_of_space_during_transfer(hosts: dict[str, LabHost], inv: Inventory, where: str) -> None:
    """At the freeze, after preflight counted the space, the target runs out of it: where the
    CRIU images land (its /dev/shm, a tmpfs: the space set aside is freed and the tmpfs shrunk
    to what is in use), or where the container's filesystem diff lands (its upper dir in the
    docker directory, a 64 KiB tmpfs mounted over it). The copy fails with ENOSPC and rolls
    back."""
    a, b = hosts["lab1"], hosts["lab2"]
    start_redis(a)
    fill(a.redis(), 20_000)
    a.sh("docker", "exec", "r1", "sh", "-c", "head -c 2000000 /dev/urandom > /written")
    undo: list[list[str]] = []

    def hook(ev: Event) -> None:
        if ev.kind == "phase" and ev.phase == "freeze":
            if where == "checkpoint area":
                # what was set aside there before the freeze is taken away, and the tmpfs
                # shrunk to what is left in use and 4 KiB more
                b.sh("bash", "-c", 'rm -f /dev/shm/migrator/*/img/pages-1.img /dev/shm/migrator/*/reserve; '
                     'u=$(df --output=used -k /dev/shm | tail -1); mount -o remount,size=$((u + 4))k /dev/shm')
                undo.append(["mount", "-o", "remount,size=50%", "/dev/shm"])
            else:
                upper = b.engine.inspect("r1")["GraphDriver"]["Data"]["UpperDir"]
                b.sh("mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", upper)
                undo.append(["umount", upper])

    try:
        m, err = _run_with(inv, hook)
    finally:
        for argv in undo:
            b.sh(*argv, check=False)  # the upper dir may be gone with the target copy already
    assert "tmpfs" not in b.sh("bash", "-c", "findmnt -rn -o FSTYPE -T /var/lib/docker/overlay2 || true")
    assert isinstance(err, MigrationFailed), err
    assert "No space left on device" in str(err) or "Wrote only" in str(err), err  # tar's short write
    assert m.report.status == "rolled_back"
    _recover_leftovers(err)
    assert assert_invariant(hosts, 20_000) == "lab1"
    assert len(a.sh("docker", "exec", "r1", "cat", "/written")) > 0
    record(f"target out of space ({where}) during the copy", "transfer", m.report.status, hosts)


def test_auth_failure_one_line_and_no_key_material(hosts: dict[str, LabHost], tmp_path: Path) -> None:
    key = tmp_path / "not_authorized"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    inv = tmp_path / "inv.yaml"
    inv.write_text((ROOT / "inventory" / "lab.yaml").read_text().replace(
        "  lab1:\n", f"  lab1:\n    identity_file: {key}\n", 1))
    secret = [ln for ln in key.read_text().splitlines() if ln and "PRIVATE KEY" not in ln]
    for args in (["-v", "migrate", "r1", "--from", "lab1", "--to", "lab2"], ["-v", "hosts", "--json"]):
        r = run_cli(*args, inventory=inv)
        out = r.stdout + r.stderr
        assert "authentication failed" in out, out
        assert not any(s in out for s in secret) and "PRIVATE KEY" not in out
    assert r.returncode == 1  # `hosts` reports the host as unreachable, with the reason
    r = run_cli("migrate", "r1", "--from", "lab1", "--to", "lab2", inventory=inv)
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert r.returncode == 2 and len(errors) == 1 and "authentication failed" in errors[0], r.stderr
    record("wrong SSH key for the source", "resolve", "one-line error naming the key file; no key material "
           "in any output, also with -v", hosts, "n/a (nothing touched)")


def test_drain_with_the_link_cut_during_the_second_move(hosts: dict[str, LabHost], inv: Inventory) -> None:
    """A drain is one migration per container: the one hit by the fault rolls back to the
    source, the one already moved stays moved, each exactly once with all its data, and
    the drain says which is which."""
    from migrator import fleet

    a, b = hosts["lab1"], hosts["lab2"]
    for name, port in (("d1", 6379), ("d2", 6380)):
        a.sh("docker", "run", "-d", "--name", name, "-p", f"{port}:6379", "lab/redis")
        fill(a.wait_redis(port), 5_000, prefix=name)
    veth = "mgv-lab2"
    seen: list[str] = []

    def hook(container: str, ev: Event) -> None:
        if ev.kind == "phase" and ev.phase == "transfer":
            seen.append(container)
            if len(seen) == 2:
                subprocess.run(["ip", "link", "set", veth, "down"], check=True)

    try:
        plan = fleet.drain(inv, "lab1", to=["lab2"], events=hook)
    finally:
        subprocess.run(["ip", "link", "set", veth, "up"], check=True)
    out = {m.container: m.outcome for m in plan.moves}
    first, second = seen
    assert out == {first: "migrated", second: "rolled_back"}, out
    assert not fleet.drain_ok(plan)
    # what the rollback could not remove on lab2 while it was cut off, `recover` removes now
    r = run_cli("recover", "--json")
    assert r.returncode == 0 and all(x["outcome"] == "rolled_back" and not x["notes"]
                                     for x in json.loads(r.stdout)), r.stdout
    for name, port in (("d1", 6379), ("d2", 6380)):
        where = [h for h in (a, b) if name in h.running()]
        assert [h.name for h in where] == (["lab2"] if name == first else ["lab1"]), name
        check_all(where[0].wait_redis(port), 5_000, prefix=name)
    for h in (a, b):
        assert not any(h.leftovers().values()), f"{h.name}: {h.leftovers()}"
    record("drain of two: link to the target cut during the second move", "transfer",
           "first migrated, second rolled back; drain reports it", hosts)


def test_checkpoint_files_private_in_transit_and_secrets_not_logged(hosts: dict[str, LabHost], inv: Inventory) -> None:
    """While the images sit on both hosts (the restore is starting), no file or directory of
    them is readable by anyone but root; a container's secret env never shows in -v output."""
    a = hosts["lab1"]
    a.sh("docker", "run", "-d", "--name", "r1", "-p", "6379:6379", "-e", "DB_PASSWORD=hunter2-not-for-logs",
         "lab/redis")
    fill(a.wait_redis(), 5_000)
    seen: dict[str, str] = {}

    def hook(ev: Event) -> None:
        if ev.kind == "phase" and ev.phase == "restore":
            for h in (a, hosts["lab2"]):
                seen[h.name] = h.sh("bash", "-c", "find /dev/shm/migrator /var/lib/migrator/work -mindepth 1 "
                                    "-perm /077 -printf '%m %p\\n'; find /dev/shm/migrator -name 'pages-*' | wc -l")

    m, err = _run_with(inv, hook)
    assert err is None, err
    assert seen == {"lab1": "1\n", "lab2": "1\n"}, seen  # one pages file each side, nothing group/other-readable
    record("checkpoint files while in transit (both hosts)", "restore", "0600 files in 0700 dirs", hosts)
    a.sh("docker", "run", "-d", "--name", "r2", "-p", "6380:6379", "-e", "DB_PASSWORD=hunter2-not-for-logs",
         "lab/redis")
    a.wait_redis(6380)
    r = run_cli("-v", "migrate", "r2", "--from", "lab1", "--to", "lab3", "--json")
    assert r.returncode == 0, r.stderr
    assert "hunter2" not in r.stdout + r.stderr
    assert "migrator-transfer" in r.stderr and "PRIVATE KEY" not in r.stderr  # -v logs commands, never keys


def test_recover_by_migration_id_touches_only_that_one(hosts: dict[str, LabHost]) -> None:
    a = hosts["lab1"]
    start_redis(a)
    fill(a.redis(), 1_000)
    kill_cli_at("freeze ...", "migrate", "r1", "--from", "lab1", "--to", "lab2")
    [entry] = [json.loads(p.read_text()) for p in (ROOT / ".test-state" / "journal").glob("*.json")]
    r = run_cli("recover", "mig-00000000-000000-000000", "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == [], r.stdout  # another id: nothing done
    assert (ROOT / ".test-state" / "journal" / f"{entry['migration_id']}.json").exists()
    r = run_cli("recover", entry["migration_id"], "--json")
    assert r.returncode == 0, r.stderr + r.stdout
    assert [(x["migration_id"], x["outcome"]) for x in json.loads(r.stdout)] == [(entry["migration_id"], "rolled_back")]
    assert assert_invariant(hosts, 1_000) == "lab1"
