"""Probing hosts: reachable over SSH and docker, and the versions migration depends on."""

from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .engine import Engine
from .errors import MigratorError
from .inventory import HostSpec
from .transport import Host


@dataclass
class HostStatus:
    name: str
    address: str
    reachable: bool
    docker_version: str | None = None
    api_version: str | None = None
    storage: str | None = None  # overlay2, containerd snapshotter, or another driver's name
    experimental: bool | None = None
    criu_version: str | None = None
    containers_running: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    cordoned: bool = False
    error: str | None = None


CORDON_FILE = "/var/lib/migrator/cordon"


SNAPSHOTTER = "containerd snapshotter"


def storage(info: dict[str, Any]) -> str:
    """How a daemon stores images and containers (from `docker info`): "overlay2", the
    containerd image store ("containerd snapshotter", whose snapshotter is overlayfs by
    default), or another graph driver's name."""
    status = dict(tuple(x) for x in info.get("DriverStatus") or [] if len(x) == 2)
    if str(status.get("driver-type", "")).startswith("io.containerd.snapshotter"):
        return SNAPSHOTTER
    return str(info.get("Driver") or "unknown")


def engine_major(version: str | None) -> int:
    """The major number of a Docker engine version ("28.5.2+dfsg4" -> 28; 0 if unknown)."""
    head = (version or "").split(".")[0]
    return int(head) if head.isdigit() else 0


# Docker 28 and newer start a restored container's network from its task's pid, which is 0
# until the restore has run: every container with a network namespace of its own fails
# ("bind-mount /proc/0/ns/net"; moby daemon/start_linux.go, containerd issue 12141).
RESTORE_NETNS_BROKEN_FROM = 28


def restore_at_create(version: str) -> bool:
    """Whether Docker `version` restores through migrator's runc wrapper, at `runc create`
    (restore.sh --at-create), instead of `docker start --checkpoint`."""
    return engine_major(version) >= RESTORE_NETNS_BROKEN_FROM


def cordoned(host: Host) -> dict[str, Any] | None:
    """The host's cordon mark, kept on the host itself so that every controller sees it."""
    r = host.run(["cat", CORDON_FILE], check=False)
    if not r.ok:
        return None
    try:
        mark = json.loads(r.stdout or "{}")
    except ValueError:
        mark = {}
    return mark if isinstance(mark, dict) else {}


def cordon(host: Host, reason: str = "") -> None:
    mark = json.dumps({"reason": reason, "since": time.time(), "by": socket.gethostname()})
    host.run(["bash", "-c", 'umask 077; mkdir -p "$(dirname "$1")" && printf "%s" "$2" > "$1"', "_",
              CORDON_FILE, mark])


def uncordon(host: Host) -> None:
    host.run(["rm", "-f", CORDON_FILE])


def mem_info(host: Host) -> dict[str, int]:
    out = {}
    for line in host.run(["cat", "/proc/meminfo"]).stdout.splitlines():
        k, _, v = line.partition(":")
        parts = v.split()
        if parts and parts[0].isdigit():
            out[k] = int(parts[0]) * 1024
    return out


def free_bytes(host: Host, path: str) -> int:
    r = host.run(["df", "-B1", "--output=avail", path], check=False)
    lines = r.stdout.split()
    return int(lines[-1]) if r.ok and lines and lines[-1].isdigit() else 0


def criu_version(host: Host) -> str | None:
    r = host.run(["criu", "--version"], check=False, timeout=30)
    for line in r.stdout.splitlines():
        if line.startswith("Version:"):
            return line.split(":", 1)[1].strip()
    return None


def probe(spec: HostSpec, timeout: float = 10.0) -> HostStatus:
    status = HostStatus(spec.name, spec.address, False, labels=dict(spec.labels))
    try:
        with Host(spec, connect_timeout=timeout) as h:
            engine = Engine(h)
            v = engine.version()
            status.docker_version = v.get("Version")
            status.api_version = v.get("ApiVersion")
            status.storage = storage(engine.info())
            status.experimental = bool(v.get("Experimental", False))
            status.criu_version = criu_version(h)
            status.containers_running = sorted(c["Names"][0].lstrip("/") for c in engine.containers())
            status.cordoned = cordoned(h) is not None
            status.reachable = True
    except MigratorError as ex:
        status.error = str(ex)
    return status


def probe_all(specs: list[HostSpec], timeout: float = 10.0) -> list[HostStatus]:
    """One result per host; one host's failure never hides the others'."""
    if not specs:
        return []
    with ThreadPoolExecutor(max_workers=min(16, len(specs))) as ex:
        return list(ex.map(lambda s: probe(s, timeout), specs))


def taken_ports(host: Host, engine: Engine) -> dict[tuple[int, str], str]:
    """Every host port in use, (port, "tcp"|"udp") -> who holds it: the containers that
    publish it, or "a process" listening on it."""
    taken: dict[tuple[int, str], str] = {}
    for line in host.run(["ss", "-Hltun"], check=False).stdout.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0] in ("tcp", "udp") and parts[4].rsplit(":", 1)[-1].isdigit():
            taken[(int(parts[4].rsplit(":", 1)[-1]), parts[0])] = "a process"
    publishers: dict[tuple[int, str], set[str]] = {}
    for c in engine.containers():
        for p in c.get("Ports") or []:
            if p.get("PublicPort"):
                publishers.setdefault((int(p["PublicPort"]), p.get("Type", "tcp")), set()).add(
                    c["Names"][0].lstrip("/"))
    taken.update({k: ", ".join(sorted(v)) for k, v in publishers.items()})
    return taken


def port_user(host: Host, engine: Engine, port: int, proto: str = "tcp") -> str | None:
    """Who holds a host port: a container's name, "a process", or None when it is free."""
    return taken_ports(host, engine).get((port, proto))
