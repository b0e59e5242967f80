"""The lab itself: idempotent up, status, a clean down (its own small lab, not the session's)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from conftest import LabHost, run_cli

from migrator.inventory import Inventory
from migrator.lab import Lab
from migrator.lab.processes import terminate


def _leftovers(lab: Lab) -> list[str]:
    found = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    found += [f"netns {line.split()[0]}" for line in netns.splitlines() if f"migrator-{lab.prefix}" in line]
    if Path(f"/sys/class/net/{lab.bridge}").exists():
        found.append(f"bridge {lab.bridge}")
    mounts = Path("/proc/self/mountinfo").read_text()
    if str(lab.root) in mounts:
        found.append("mounts under the lab dir")
    if lab.root.exists():
        found.append(f"dir {lab.root}")
    rule = subprocess.run(["iptables", "-C", "FORWARD", "-i", lab.bridge, "-o", lab.bridge, "-j", "ACCEPT"],
                          capture_output=True)
    if rule.returncode == 0:
        found.append("iptables rule")
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if str(lab.root).encode() in cmd:
                found.append(f"process {pid}: {cmd[:80]!r}")
    return found


def test_small_lab_up_twice_then_down_leaves_nothing(tmp_path: Path) -> None:
    lab = Lab(Path("/var/lib/migrator-tlab"), bridge="mgtest0", subnet="10.204.0", prefix="tlab")
    inventory = tmp_path / "tlab.yaml"
    try:
        done = lab.up(1, inventory)
        assert "tlab1: created" in done
        assert lab.up(1, inventory) == []  # already up: nothing to do
        h = lab.hosts()[0]
        mac = lab.ns_exec(h, ["cat", "/sys/class/net/eth0/address"]).stdout.strip()
        assert mac == "02:6d:0a:cc:00:0b"  # made of its address: the same whenever it is made again
        lab.ns_exec(h, ["docker", "run", "-d", "--name", "kept", "lab/redis"])
        # A broken host is repaired by the next `up`, keeping what it holds: its dockerd gone...
        lab.stop_service(h, "dockerd")
        assert not lab.healthy(h)
        assert "tlab1: repaired (dockerd started again)" in lab.up(1, inventory)
        assert lab.ns_exec(h, ["docker", "ps", "-aq", "--filter", "name=kept"]).stdout.strip()
        # ... or its namespaces (its first process killed): made again over its own directory
        terminate([h.anchor_pid], 5)
        assert "tlab1: repaired (started again over its own directory)" in lab.up(1, inventory)
        h = lab.hosts()[0]
        assert lab.healthy(h) and lab.ns_exec(h, ["docker", "ps", "-aq", "--filter", "name=kept"]).stdout.strip()
        assert lab.ns_exec(h, ["cat", "/sys/class/net/eth0/address"]).stdout.strip() == mac
        # wiping it is asked for by name
        assert "tlab1: rebuilt" in lab.up(1, inventory, rebuild={"tlab1"})
        h = lab.hosts()[0]
        assert lab.ns_exec(h, ["docker", "ps", "-aq"]).stdout.strip() == ""
        assert lab.ns_exec(h, ["cat", "/sys/class/net/eth0/address"]).stdout.strip() == mac
        r = run_cli("hosts", "--json", inventory=inventory)
        assert r.returncode == 0, r.stderr
        rows = json.loads(r.stdout)
        assert [(x["name"], x["address"], x["reachable"]) for x in rows] == [("tlab1", "10.204.0.11", True)]
        assert rows[0]["criu_version"].startswith("4.")
    finally:
        lab.down()
    assert _leftovers(lab) == []
    assert lab.down() == []  # idempotent


def test_hosts_are_isolated_and_reach_each_other(hosts: dict[str, LabHost], inv: Inventory) -> None:
    a, b = hosts["lab1"], hosts["lab2"]
    a.sh("bash", "-c", "echo lab1 > /etc/criu/marker; echo x > /dev/shm/marker; "
         "echo y > /var/lib/migrator/marker")
    try:
        for path in ("/etc/criu/marker", "/dev/shm/marker", "/var/lib/migrator/marker"):
            assert not b.host.ok(["test", "-e", path]), f"{path} written on lab1 is visible on lab2"
        # host to host over the bridge, by sshd's port
        assert b.host.ok(["bash", "-c", f"exec 3<>/dev/tcp/{a.address}/22"])
        assert a.sh("cat", "/sys/class/net/eth0/address") != b.sh("cat", "/sys/class/net/eth0/address")
        ids = {h.engine.image_inspect("lab/redis")["Id"] for h in hosts.values()}
        assert len(ids) == 1, "every host holds the same lab/redis image"
    finally:
        a.sh("rm", "-f", "/etc/criu/marker", "/dev/shm/marker", "/var/lib/migrator/marker")


def test_command_output_arrives_whole(hosts: dict[str, LabHost]) -> None:
    """sshd sends a command's exit status when it exits; output still on its way comes after
    it. Every byte of both streams arrives, every time (before the fix, 14 of 60 such runs
    came back short, cut at a multiple of 8 KiB)."""
    h = hosts["lab1"].host
    lines: list[str] = []
    for n in (40_000, 300_000, 2_000_000):
        for _ in range(10):
            r = h.run(["bash", "-c", f"head -c {n} /dev/zero | tr '\\0' o; "
                                     f"head -c {n // 2} /dev/zero | tr '\\0' e >&2"])
            assert (len(r.stdout), len(r.stderr)) == (n, n // 2)
            assert r.stdout == "o" * n
        s = h.stream(["bash", "-c", f"head -c {n} /dev/zero | tr '\\0' o; seq 1000 >&2"], lines.append)
        assert len(s.stdout) == n and lines[-1000:] == [str(i) for i in range(1, 1001)]


def test_lab_status_and_hosts_json(hosts: dict[str, LabHost]) -> None:
    r = run_cli("hosts", "--json")
    assert r.returncode == 0, r.stderr
    rows = {x["name"]: x for x in json.loads(r.stdout)}
    assert set(rows) == {"lab1", "lab2", "lab3"}
    assert all(x["reachable"] and x["experimental"] for x in rows.values())
    r = run_cli("lab", "status", inventory=None)
    assert r.returncode == 0 and "lab3" in r.stdout


def test_unknown_host_key_is_refused(tmp_path: Path, inv: Inventory) -> None:
    spec = inv.host("lab1")
    other = tmp_path / "known_hosts"
    # a different key for lab1's address: as if the host had been replaced
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True)
    other.write_text(f"{spec.address} {(tmp_path / 'k.pub').read_text().split()[0]} "
                     f"{(tmp_path / 'k.pub').read_text().split()[1]}\n")
    bad = tmp_path / "inv.yaml"
    bad.write_text(f"hosts:\n  lab1:\n    address: {spec.address}\n    identity_file: {spec.identity_file}\n"
                   f"    known_hosts: {other}\n")
    r = run_cli("hosts", "--json", inventory=bad)
    assert r.returncode == 1
    row = json.loads(r.stdout)[0]
    assert not row["reachable"]
    assert "host key does not match" in row["error"] and "ssh-keygen" in row["error"]
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    bad.write_text(bad.read_text().replace(str(other), str(empty)))
    r = run_cli("hosts", "--json", inventory=bad)
    assert "host key unknown" in json.loads(r.stdout)[0]["error"]


def test_bad_inventory_is_one_line_naming_file_key_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("hosts:\n  a:\n    address: 10.0.0.1\n    prot: 22\n")
    r = run_cli("hosts", inventory=bad)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{bad}:4" in lines[0] and "'prot'" in lines[0]
