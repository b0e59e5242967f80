"""Stored checkpoints, persist, restore and clone on the lab (the seed article's use cases)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import MIGRATOR, ROOT, LabHost, check_all, fill, run_cli

from migrator.lab import Lab
from migrator.transport import wait_for

INV = ["-i", str(ROOT / "inventory" / "lab.yaml")]


def start_redis(h: LabHost, name: str = "r1", port: int = 6379) -> None:
    h.sh("docker", "run", "-d", "--name", name, "-p", f"{port}:6379", "lab/redis")
    h.wait_redis(port)


def stored(host: str, container: str = "r1") -> list[dict]:
    r = run_cli("checkpoint", "ls", container, "--on", host, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def persist(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*MIGRATOR, *INV, "persist", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_persist_keeps_3_and_restore_latest_after_kill(hosts: dict[str, LabHost]) -> None:
    a = hosts["lab1"]
    start_redis(a)
    fill(a.redis(), 20_000)
    p = persist("r1", "--on", "lab1", "--every", "2s", "--keep", "3")
    try:
        counts: list[int] = []
        assert wait_for(lambda: counts.append(len(stored("lab1"))) or counts[-1] >= 3, 60), counts
        written = time.time()
        fill(a.redis(), 1_000, prefix="late")
        assert wait_for(lambda: counts.append(len(stored("lab1"))) or
                        max(s["created"] for s in stored("lab1")) > written + 0.5, 30)
        a.sh("docker", "kill", "r1")
        out, err = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == 0, err
    assert "persist ends" in out
    assert max(counts) == 3, f"never more than 3 complete checkpoints: {counts}"
    assert len(stored("lab1")) == 3
    files = a.sh("bash", "-c", "find /var/lib/migrator/checkpoints -perm /077 | head")
    assert files == "", f"checkpoint files readable by others: {files}"
    r = run_cli("restore", "r1", "--on", "lab1", "--checkpoint", "latest")
    assert r.returncode == 0, r.stderr
    check_all(a.wait_redis(), 20_000)
    check_all(a.redis(), 1_000, prefix="late")
    # a second restore while it runs would make two: refused
    r = run_cli("restore", "r1", "--on", "lab1")
    assert r.returncode == 2 and "is running" in r.stderr


def test_replica_restores_on_lab2_with_lab1_docker_down(hosts: dict[str, LabHost], lab: Lab) -> None:
    a, b = hosts["lab1"], hosts["lab2"]
    start_redis(a)
    fill(a.redis(), 10_000)
    p = persist("r1", "--on", "lab1", "--every", "1s", "--keep", "2", "--replicate-to", "lab2")
    try:
        assert wait_for(lambda: len(stored("lab2")) >= 1, 60)
        p.send_signal(signal.SIGINT)
        p.communicate(timeout=60)
    finally:
        p.kill()
    reps = stored("lab2")
    assert reps and all(s["replica"] and s["source_host"] == "lab1" for s in reps)
    lab.stop_service(lab.host("lab1"), "dockerd")
    try:
        r = run_cli("restore", "r1", "--on", "lab2")
        assert r.returncode == 0, r.stderr
        check_all(b.wait_redis(), 10_000)
    finally:
        lab.start_dockerd(lab.host("lab1"))
        a.host.close()


def test_clone_same_host_and_other_host(hosts: dict[str, LabHost]) -> None:
    a, b = hosts["lab1"], hosts["lab2"]
    start_redis(a)
    fill(a.redis(), 5_000)
    r = run_cli("clone", "r1", "--from", "lab1", "--to", "lab1", "--name", "r1-debug",
                "--publish", "6380:6379")
    assert r.returncode == 0, r.stderr
    r = run_cli("clone", "r1", "--from", "lab1", "--to", "lab2", "--name", "r1-dry", "--json")
    assert r.returncode == 0, r.stderr
    orig, copy, other = a.redis(6379), a.wait_redis(6380), b.wait_redis(6379)
    for c in (orig, copy, other):
        check_all(c, 5_000)
    copy.set("only-in-copy", "1")
    orig.set("only-in-orig", "1")
    assert orig.get("only-in-copy") is None and copy.get("only-in-orig") is None
    assert other.get("only-in-copy") is None and other.get("only-in-orig") is None
    assert a.running() == ["r1", "r1-debug"] and b.running() == ["r1-dry"]
    assert a.engine.inspect("r1-debug")["Config"]["Labels"]["migrator.clone-of"] == "r1"
    # the same name twice, or a port in use: refused, nothing made
    r = run_cli("clone", "r1", "--from", "lab1", "--to", "lab1", "--name", "r1-x", "--publish", "6380:6379")
    assert r.returncode == 2 and "6380" in r.stderr
    assert a.running() == ["r1", "r1-debug"]


def test_interrupted_checkpoint_is_never_listed_or_latest(hosts: dict[str, LabHost]) -> None:
    a = hosts["lab1"]
    start_redis(a)
    fill(a.redis(), 2_000)
    r = run_cli("checkpoint", "create", "r1", "--on", "lab1", "--leave-running", "--name", "good")
    assert r.returncode == 0, r.stderr
    fill(a.redis(), 300_000, prefix="big")  # makes the next dump take a while
    p = subprocess.Popen([*MIGRATOR, *INV, "checkpoint", "create", "r1", "--on", "lab1", "--leave-running",
                          "--name", "torn"], cwd=ROOT)
    assert wait_for(lambda: a.host.ok(["test", "-d", "/var/lib/migrator/checkpoints/r1/.tmp-torn"]), 30, 0.02)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert [s["name"] for s in stored("lab1")] == ["good"]
    # the killed run's lock is taken over (its process is gone), and latest is still "good"
    a.sh("docker", "kill", "r1")
    r = run_cli("restore", "r1", "--on", "lab1", "--checkpoint", "latest", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["name"] == "good"
    check_all(a.wait_redis(), 2_000)
    r = run_cli("checkpoint", "create", "r1", "--on", "lab1", "--leave-running", "--name", "after")
    assert r.returncode == 0, r.stderr
    assert [s["name"] for s in stored("lab1")] == ["good", "after"]
    assert not a.host.ok(["test", "-e", "/var/lib/migrator/checkpoints/r1/.tmp-torn"])
    r = run_cli("checkpoint", "rm", "r1", "good", "--on", "lab1")
    assert r.returncode == 0
    assert [s["name"] for s in stored("lab1")] == ["after"]


def test_persist_installs_its_systemd_unit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--install-systemd writes what --print-unit prints, 0644, under the unit's own name
    (in MIGRATOR_SYSTEMD_DIR here, not this machine's /etc/systemd/system)."""
    monkeypatch.setenv("MIGRATOR_SYSTEMD_DIR", str(tmp_path))
    args = ("persist", "r1", "--on", "lab1", "--every", "10s", "--keep", "4", "--bind-mounts", "sync")
    printed = run_cli(*args, "--print-unit")
    r = run_cli(*args, "--install-systemd")
    assert r.returncode == 0 and printed.returncode == 0, r.stderr + printed.stderr
    unit = tmp_path / "migrator-persist-r1-lab1.service"
    assert unit.read_text() == printed.stdout and unit.stat().st_mode & 0o777 == 0o644
    assert "systemctl enable --now migrator-persist-r1-lab1.service" in " ".join(r.stdout.split())


def test_persist_unit_file() -> None:
    r = run_cli("persist", "r1", "--on", "lab1", "--every", "10s", "--keep", "4", "--replicate-to", "lab2",
                "--print-unit")
    assert r.returncode == 0, r.stderr
    assert "ExecStart=" in r.stdout
    assert "persist r1 --on lab1 --every 10s --keep 4 --replicate-to lab2" in r.stdout
    assert "Restart=on-failure" in r.stdout


def test_a_failed_restore_says_criu_s_error_and_keeps_its_log(hosts: dict[str, LabHost]) -> None:
    """A checkpoint of a process holding a file of a shared bind mount open, restored after
    that file was removed: CRIU's restore fails. The error carries CRIU's own Error line
    (which file it could not open), names its log, kept 0600 on the host, and no container
    is left half-made."""
    a = hosts["lab1"]
    a.sh("bash", "-c", "rm -rf /tmp/rf; mkdir -p /tmp/rf && echo x > /tmp/rf/held && echo y > /tmp/rf/other")
    a.sh("docker", "run", "-d", "--name", "rf", "-v", "/tmp/rf:/data", "lab/redis", "sh", "-c",
         "exec 3</data/held; while :; do sleep 1; done")
    r = run_cli("checkpoint", "create", "rf", "--on", "lab1", "--name", "cp1", "--bind-mounts", "shared")
    assert r.returncode == 0, r.stderr
    a.sh("rm", "/tmp/rf/held")
    r = run_cli("restore", "rf", "--on", "lab1", "--checkpoint", "cp1")
    assert r.returncode != 0
    flat = " ".join(r.stderr.split())
    assert "Error" in flat and "held" in flat, r.stderr  # CRIU's line naming the file
    log = re.search(r"CRIU's log: (\S+)", flat)
    assert log and log[1].startswith("/var/lib/migrator/logs/"), r.stderr
    assert a.sh("stat", "-c", "%a", log[1]).strip() == "600"
    # the container the restore made is gone again; the stopped one it was to replace is kept
    assert a.sh("docker", "ps", "-a", "--format", "{{.Names}} {{.State}}").split() == ["rf", "exited"]
    a.sh("rm", "-rf", "/tmp/rf")
