"""Real services on the lab: a database of its own user, several processes, shared memory
and a data volume, moved under its own benchmark's load."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request

import pytest
from conftest import LabHost, run_cli

from migrator.errors import MigrationFailed
from migrator.inventory import Inventory
from migrator.lab import Lab
from migrator.lab.faults import cut_link
from migrator.lab.image import NGINX, POSTGRES, UDP
from migrator.migrate import Event, Migration
from migrator.transport import wait_for

PG_BIN = "/usr/lib/postgresql/15/bin"


def psql(address: str, sql: str) -> list[str]:
    r = subprocess.run([f"{PG_BIN}/psql", "-h", address, "-U", "postgres", "-Atc", sql, "postgres"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.split("\n")[:-1]


def pg_ready(address: str) -> bool:
    return subprocess.run([f"{PG_BIN}/psql", "-h", address, "-U", "postgres", "-Atc", "select 1", "postgres"],
                          capture_output=True, timeout=10).returncode == 0


def server(h: LabHost) -> list[tuple[str, str]]:
    """(uid, command) of each process of the container pg on h."""
    out = h.sh("bash", "-c", "for p in $(docker top pg -eo pid | tail -n +2); do "
               "printf '%s %s\\n' \"$(awk '/^Uid:/ {print $2}' /proc/$p/status)\" "
               "\"$(tr '\\0' ' ' < /proc/$p/cmdline)\"; done")
    return sorted(tuple(line.split(" ", 1)) for line in out.splitlines())  # type: ignore[misc]


def test_postgres_of_its_own_user_moves_under_pgbench_keeping_every_commit(hosts: dict[str, LabHost],
                                                                           lab: Lab) -> None:
    """PostgreSQL 15 as uid 999 (postmaster and five helpers, its shared memory and dynamic
    shared memory segments in /dev/shm, data in a named volume) moved lab1 -> lab2 while
    pgbench runs against it. Every transaction pgbench saw committed is on the target, and
    the server was not restarted: the same postmaster start time and pid, its processes
    still uid 999."""
    a, b = hosts["lab1"], hosts["lab2"]
    for h in (a, b):
        lab.ensure_image(lab.host(h.name), POSTGRES)
    a.sh("docker", "run", "-d", "--name", "pg", "-p", "5432:5432", "-v", "pgdata:/var/lib/postgresql/data", POSTGRES)
    assert wait_for(lambda: pg_ready(a.address), 60)
    init = subprocess.run([f"{PG_BIN}/pgbench", "-h", a.address, "-U", "postgres", "-i", "-s", "2", "postgres"],
                          capture_output=True, text=True, timeout=120)
    assert init.returncode == 0, init.stderr
    before = psql(a.address, "select pg_postmaster_start_time()")
    postmaster = a.sh("docker", "exec", "pg", "head", "-1", "/var/lib/postgresql/data/postmaster.pid").strip()
    procs = server(a)
    assert len(procs) == 6 and {uid for uid, _ in procs} == {"999"}, procs
    assert a.sh("docker", "exec", "pg", "ls", "/dev/shm").split(), "dynamic shared memory segments in /dev/shm"

    load = subprocess.Popen([f"{PG_BIN}/pgbench", "-h", a.address, "-U", "postgres", "-c", "4", "-j", "2",
                             "-T", "8", "postgres"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(2)
    r = run_cli("migrate", "pg", "--from", "lab1", "--to", "lab2", "--json")
    assert r.returncode == 0, r.stderr
    out, _ = load.communicate(timeout=60)
    done = re.search(r"number of transactions actually processed: (\d+)", out)
    assert done and int(done[1]) > 0, out  # its clients lose their connections at the move
    committed = int(done[1])
    assert wait_for(lambda: pg_ready(b.address), 30)
    on_target = int(psql(b.address, "select count(*) from pgbench_history")[0])
    assert committed <= on_target <= committed + 4, (committed, on_target)  # + at most one in flight a client
    assert psql(b.address, "select pg_postmaster_start_time()") == before
    assert b.sh("docker", "exec", "pg", "head", "-1", "/var/lib/postgresql/data/postmaster.pid").strip() == postmaster
    assert server(b) == procs
    after = subprocess.run([f"{PG_BIN}/pgbench", "-h", b.address, "-U", "postgres", "-c", "2", "-t", "50",
                            "postgres"], capture_output=True, text=True, timeout=120)
    assert after.returncode == 0 and "processed: 100/100" in after.stdout, after.stdout + after.stderr


NGINX_CONF = """worker_processes 3;
pid /tmp/nginx.pid;
error_log stderr notice;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path /tmp/body; proxy_temp_path /tmp/proxy; fastcgi_temp_path /tmp/fcgi;
    uwsgi_temp_path /tmp/uwsgi; scgi_temp_path /tmp/scgi;
    server {
        listen 8080;
        location = /status { stub_status; }
        location / { root /var/www; }
    }
}
"""


def nginx_requests(address: str) -> int:
    """nginx's own count of the requests it served (stub_status: in its shared memory, so a
    restarted server starts again from 1), this one included."""
    with urllib.request.urlopen(f"http://{address}:8088/status", timeout=5) as r:
        return int(r.read().decode().split("\n")[2].split()[2])


def processes(h: LabHost, name: str) -> list[tuple[str, str, str]]:
    """(pid in the container, uid, command) of each process of container `name` on h."""
    out = h.sh("docker", "exec", name, "sh", "-c", "for d in /proc/[0-9]*; do "
               "printf '%s %s %s\\n' \"${d#/proc/}\" \"$(awk '/^Uid:/ {print $2}' $d/status)\" "
               "\"$(tr '\\0' ' ' < $d/cmdline)\"; done")
    return sorted(tuple(line.split(" ", 2)) for line in out.splitlines()  # type: ignore[misc]
                  if line.split(" ", 2)[2].startswith("nginx"))


def test_a_web_server_of_its_own_user_with_workers_and_a_bind_mounted_config(hosts: dict[str, LabHost],
                                                                             lab: Lab) -> None:
    """nginx as www-data (uid 33): a master and three workers sharing their listening socket
    and a shared-memory counter, its nginx.conf bind-mounted from the host's /tmp (a path of
    that host only) and moved with --bind-mounts sync. On the target: the same processes
    (pids, uid), the same config file, and its request counter goes on from where it was."""
    a, b = hosts["lab1"], hosts["lab2"]
    for h in (a, b):
        lab.ensure_image(lab.host(h.name), NGINX)
    b.sh("rm", "-rf", "/tmp/web")
    a.host.run(["bash", "-c", "rm -rf /tmp/web; mkdir -p /tmp/web; cat > /tmp/web/nginx.conf"],
               stdin=NGINX_CONF.encode())
    a.sh("docker", "run", "-d", "--name", "web", "-p", "8088:8080",
         "-v", "/tmp/web/nginx.conf:/etc/nginx/nginx.conf:ro", NGINX)
    assert wait_for(lambda: nginx_requests(a.address) > 0, 20)
    for _ in range(20):
        served = nginx_requests(a.address)
    procs = processes(a, "web")
    assert len(procs) == 4 and {uid for _, uid, _ in procs} == {"33"}, procs
    assert sum("worker process" in cmd for _, _, cmd in procs) == 3, procs
    r = run_cli("migrate", "web", "--from", "lab1", "--to", "lab2", "--bind-mounts", "sync", "--json")
    assert r.returncode == 0, r.stderr
    assert b.sh("cat", "/tmp/web/nginx.conf") == NGINX_CONF
    assert b.sh("stat", "-c", "%U %a", "/tmp/web/nginx.conf") == a.sh("stat", "-c", "%U %a", "/tmp/web/nginx.conf")
    assert processes(b, "web") == procs
    assert nginx_requests(b.address) == served + 1  # the same server's count: not restarted
    with urllib.request.urlopen(f"http://{b.address}:8088/", timeout=5) as page:
        assert page.read() == b"hello from lab/nginx\n"
    for h in (a, b):
        h.sh("rm", "-rf", "/tmp/web")


def udp_ask(address: str, port: int, text: str) -> str:
    """One datagram to a UDP service, its answer (2 s to come)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.sendto(text.encode(), (address, port))
        return s.recv(600).decode()


def test_a_udp_service_moves_with_its_published_port_and_its_count(hosts: dict[str, LabHost], lab: Lab) -> None:
    """A service on a published UDP port (lab/udp counts the datagrams it answered, in its
    memory only): on the target the port is published as UDP again and the count goes on."""
    a, b = hosts["lab1"], hosts["lab2"]
    for h in (a, b):
        lab.ensure_image(lab.host(h.name), UDP)
    a.sh("docker", "run", "-d", "--name", "dns", "-p", "5353:5353/udp", UDP)
    assert wait_for(lambda: _answers(a.address), 10)
    counts = [int(udp_ask(a.address, 5353, f"q{i}").split()[0]) for i in range(5)]
    assert counts == list(range(counts[0], counts[0] + 5))
    r = run_cli("migrate", "dns", "--from", "lab1", "--to", "lab2", "--json")
    assert r.returncode == 0, r.stderr
    assert a.running() == [] and b.running() == ["dns"]
    ports = b.engine.inspect("dns")["NetworkSettings"]["Ports"]
    assert list(ports) == ["5353/udp"] and ports["5353/udp"][0]["HostPort"] == "5353", ports
    assert udp_ask(b.address, 5353, "after") == f"{counts[-1] + 1} after"  # the same process's count


def _answers(address: str) -> bool:
    try:
        return bool(udp_ask(address, 5353, "ping"))
    except OSError:
        return False


# --- bind mounts --------------------------------------------------------------------------------
# Lab hosts share this machine's root filesystem (a path like /var/tmp/x is one storage for all
# of them, as NFS would be) but each has its own /tmp: the two kinds of bind source.
TREE = ("find \"$1\" -printf '%P %U %G %m %y %s\\n' | sort; "
        "cd \"$1\" && find . -type f -print0 | sort -z | xargs -0 md5sum")


def test_bind_mounts_are_refused_unless_told_how_to_move_them(hosts: dict[str, LabHost]) -> None:
    a, b = hosts["lab1"], hosts["lab2"]
    b.sh("rm", "-rf", "/tmp/bm-none")
    a.sh("mkdir", "-p", "/tmp/bm-none")
    a.sh("docker", "run", "-d", "--name", "bm", "-v", "/tmp/bm-none:/data", "lab/redis")
    r = run_cli("migrate", "bm", "--from", "lab1", "--to", "lab2")
    assert r.returncode == 2 and "--bind-mounts sync" in r.stderr and "--bind-mounts shared" in r.stderr, r.stderr
    b.sh("bash", "-c", "mkdir -p /tmp/bm-none && echo theirs > /tmp/bm-none/own")  # the target's own files
    r = run_cli("migrate", "bm", "--from", "lab1", "--to", "lab2", "--bind-mounts", "sync")
    assert r.returncode == 2 and "/tmp/bm-none exists on lab2 and is not empty" in r.stderr, r.stderr
    assert b.sh("cat", "/tmp/bm-none/own").strip() == "theirs"  # never overwritten
    r = run_cli("migrate", "bm", "--from", "lab1", "--to", "lab2", "--bind-mounts", "shared")
    assert r.returncode == 2 and "is not the same storage on lab2" in r.stderr, r.stderr
    assert a.running() == ["bm"] and b.running() == []
    assert a.sh("ls", "-A", "/tmp/bm-none").strip() == ""  # the marker went
    b.sh("rm", "-rf", "/tmp/bm-none")


def test_bind_mounts_sync_arrive_equal_with_what_changed_during_the_presync(hosts: dict[str, LabHost],
                                                                           inv: Inventory) -> None:
    """A directory (owners, modes, a link, a subdirectory) and a config file bind-mounted
    read-only, copied to the same paths on a host that had neither: equal there, ownership
    and modes included, with a file written after the presync copied the rest."""
    a, b = hosts["lab1"], hosts["lab2"]
    b.sh("rm", "-rf", "/tmp/bm-sync", "/tmp/bm-etc")  # the test's own paths (a run before may have left them)
    a.sh("bash", "-c", "rm -rf /tmp/bm-sync /tmp/bm-etc; mkdir -p /tmp/bm-sync/sub /tmp/bm-etc; "
         "echo one > /tmp/bm-sync/a; head -c 300000 /dev/urandom > /tmp/bm-sync/sub/b; ln -s a /tmp/bm-sync/l; "
         "chown 1000:1000 /tmp/bm-sync/a; chmod 0640 /tmp/bm-sync/a; chown 999:999 /tmp/bm-sync/sub; "
         "chmod 0700 /tmp/bm-sync/sub; echo 'port 1' > /tmp/bm-etc/app.conf; chmod 0604 /tmp/bm-etc/app.conf")
    a.sh("docker", "run", "-d", "--name", "bm", "-v", "/tmp/bm-sync:/data",
         "-v", "/tmp/bm-etc/app.conf:/etc/app.conf:ro", "lab/redis")

    def hook(ev: Event) -> None:
        if ev.kind == "done" and ev.phase == "presync":
            a.sh("docker", "exec", "bm", "sh", "-c", "echo during > /data/late")

    binds = a.engine.inspect("bm")["HostConfig"]["Binds"]
    rep = Migration(inv, "bm", "lab1", "lab2", events=hook, bind_mounts="sync").run()
    assert rep.status == "migrated"
    for path in ("/tmp/bm-sync", "/tmp/bm-etc"):
        assert b.sh("bash", "-c", TREE, "_", path) == a.sh("bash", "-c", TREE, "_", path), path
    assert b.sh("docker", "exec", "bm", "cat", "/data/late", "/etc/app.conf").split() == ["during", "port", "1"]
    assert b.engine.inspect("bm")["HostConfig"]["Binds"] == binds
    for h in (a, b):
        h.sh("rm", "-rf", "/tmp/bm-sync", "/tmp/bm-etc")


def test_bind_mounts_shared_are_proven_then_left_where_they_are(hosts: dict[str, LabHost]) -> None:
    a, b = hosts["lab1"], hosts["lab2"]
    shared = f"/var/tmp/migrator-test-shared-{os.getpid()}"
    a.sh("bash", "-c", f"mkdir -p {shared} && echo kept > {shared}/f")
    try:
        a.sh("docker", "run", "-d", "--name", "bm", "-v", f"{shared}:/data", "lab/redis")
        r = run_cli("migrate", "bm", "--from", "lab1", "--to", "lab2", "--bind-mounts", "shared", "--json")
        assert r.returncode == 0, r.stderr
        checks = {c["name"]: c for c in json.loads(r.stdout)["preflight"]}
        assert checks["bind mounts"]["ok"] and checks["bind mounts"]["detail"] == "shared"
        assert b.sh("docker", "exec", "bm", "cat", "/data/f").strip() == "kept"
        assert sorted(os.listdir(shared)) == ["f"]  # no marker left
    finally:
        for h in (a, b):
            h.sh("docker", "rm", "-f", "bm", check=False)
        shutil.rmtree(shared, ignore_errors=True)


def test_a_rolled_back_bind_sync_removes_only_what_it_made_on_the_target(hosts: dict[str, LabHost],
                                                                         inv: Inventory) -> None:
    a, b = hosts["lab1"], hosts["lab2"]
    b.sh("bash", "-c", "rm -rf /tmp/bm-rb; mkdir -p /tmp/bm-keep && echo theirs > /tmp/bm-keep/own")
    a.sh("bash", "-c", "rm -rf /tmp/bm-rb; mkdir -p /tmp/bm-rb/deep/er && echo mine > /tmp/bm-rb/deep/er/f")
    a.sh("docker", "run", "-d", "--name", "bm", "-v", "/tmp/bm-rb/deep:/data", "lab/redis")

    def cut(ev: Event) -> None:  # the copy is on lab2 by then; the move fails after it
        if ev.kind == "phase" and ev.phase == "freeze":
            cut_link(inv, "lab1", "bm")

    with pytest.raises(MigrationFailed):
        Migration(inv, "bm", "lab1", "lab2", events=cut, bind_mounts="sync").run()
    assert a.running() == ["bm"] and a.sh("cat", "/tmp/bm-rb/deep/er/f").strip() == "mine"
    assert not b.host.ok(["test", "-e", "/tmp/bm-rb"])  # made by the move (from its first missing part): gone
    assert b.sh("cat", "/tmp/bm-keep/own").strip() == "theirs"
    for h in (a, b):
        h.sh("rm", "-rf", "/tmp/bm-rb", "/tmp/bm-keep")


def test_clone_and_checkpoints_take_bind_mounts_as_told(hosts: dict[str, LabHost]) -> None:
    """clone and checkpoint/restore refuse bind mounts without --bind-mounts, as migrate does.
    A clone to another host with sync gets its own copy of the path; on its own host only
    shared. A checkpoint with sync keeps a copy that a restore on a host without the path
    puts there (owner and mode kept); one with shared keeps only the path, refused where
    it is missing."""
    a, b, c = hosts["lab1"], hosts["lab2"], hosts["lab3"]
    for h in (b, c):
        h.sh("rm", "-rf", "/tmp/bm-cp")
    a.sh("bash", "-c", "rm -rf /tmp/bm-cp; mkdir -p /tmp/bm-cp && echo mine > /tmp/bm-cp/f && "
         "chown 1000:1000 /tmp/bm-cp/f && chmod 0640 /tmp/bm-cp/f")
    a.sh("docker", "run", "-d", "--name", "bm", "-v", "/tmp/bm-cp:/data", "lab/redis")
    r = run_cli("clone", "bm", "--from", "lab1", "--to", "lab2", "--name", "bm2")
    assert r.returncode == 2 and "--bind-mounts sync" in r.stderr and "--bind-mounts shared" in r.stderr, r.stderr
    r = run_cli("clone", "bm", "--from", "lab1", "--to", "lab1", "--name", "bm2", "--bind-mounts", "sync")
    assert r.returncode == 2 and "pass --bind-mounts shared to share them knowingly" in r.stderr, r.stderr
    r = run_cli("clone", "bm", "--from", "lab1", "--to", "lab2", "--name", "bm2", "--bind-mounts", "sync")
    assert r.returncode == 0, r.stderr
    assert b.sh("docker", "exec", "bm2", "cat", "/data/f").strip() == "mine"
    assert b.sh("bash", "-c", TREE, "_", "/tmp/bm-cp") == a.sh("bash", "-c", TREE, "_", "/tmp/bm-cp")
    r = run_cli("clone", "bm", "--from", "lab1", "--to", "lab1", "--name", "bm3", "--bind-mounts", "shared")
    assert r.returncode == 0, r.stderr
    assert a.sh("docker", "exec", "bm3", "cat", "/data/f").strip() == "mine" and a.running() == ["bm", "bm3"]
    a.sh("docker", "rm", "-f", "bm3")

    r = run_cli("checkpoint", "create", "bm", "--on", "lab1", "--leave-running")
    assert r.returncode == 2 and "--bind-mounts sync" in r.stderr, r.stderr
    assert run_cli("checkpoint", "create", "bm", "--on", "lab1", "--leave-running", "--name", "only-paths",
                   "--bind-mounts", "shared").returncode == 0
    r = run_cli("checkpoint", "create", "bm", "--on", "lab1", "--leave-running", "--name", "with-copy",
                "--bind-mounts", "sync", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["binds"] == [{"path": "/tmp/bm-cp", "mode": "sync", "archive": "binds/0.tar.zst"}]
    r = run_cli("restore", "bm", "--on", "lab3", "--from", "lab1", "--checkpoint", "only-paths")
    assert r.returncode != 0 and "/tmp/bm-cp missing here" in r.stderr, r.stderr
    assert c.running() == [] and not c.host.ok(["test", "-e", "/tmp/bm-cp"])
    r = run_cli("restore", "bm", "--on", "lab3", "--from", "lab1", "--checkpoint", "with-copy")
    assert r.returncode == 0, r.stderr
    assert c.sh("bash", "-c", TREE, "_", "/tmp/bm-cp") == a.sh("bash", "-c", TREE, "_", "/tmp/bm-cp")
    assert c.sh("docker", "exec", "bm", "cat", "/data/f").strip() == "mine"
    for h in (a, b, c):
        h.sh("rm", "-rf", "/tmp/bm-cp")
