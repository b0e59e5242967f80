"""What a container on a host is doing, asked from the host: does it answer, where does
Docker's runc keep it, how does its memory compress."""

from __future__ import annotations

from typing import Any

from . import hostscripts
from .container import Spec
from .engine import Engine
from .errors import CommandError, MigratorError
from .transport import Host, wait_for


def container_ip(info: dict[str, Any]) -> str | None:
    nets = (info.get("NetworkSettings") or {}).get("Networks") or {}
    for endpoint in nets.values():
        if endpoint.get("IPAddress"):
            return str(endpoint["IPAddress"])
    return None


def _accepts(host: Host, info: dict[str, Any], port: int) -> bool:
    """A TCP connect from the host to the container's own address (a leftover network lock
    fails this); host- or none-networked containers are probed inside their namespace."""
    argv = hostscripts.argv(host, "accepts.sh", "--pid", Spec(info).pid, "--ip", container_ip(info) or "",
                            "--port", port)
    try:
        return host.run(argv, check=False, timeout=10).ok
    except CommandError:
        return False


def open_ports(host: Host, engine: Engine, name: str) -> list[int]:
    """The container's TCP ports that accept connections now: what must answer again."""
    info = engine.inspect(name)
    if not info or not info["State"].get("Running"):
        return []
    return [p for p in Spec(info).container_tcp_ports() if _accepts(host, info, p)]


def answers(host: Host, engine: Engine, name: str, ports: list[int], timeout: float = 10.0) -> bool:
    """The container runs and accepts connections on `ports` (those that did before)."""

    def check() -> bool:
        info = engine.inspect(name)
        if not info or not info["State"].get("Running"):
            return False
        return all(_accepts(host, info, p) for p in ports)

    return wait_for(check, timeout, 0.05)


def upper_dir(host: Host, info: dict[str, Any]) -> str | None:
    """The directory of the container's own writable layer on the host: overlay2's
    UpperDir, or the containerd image store's (overlayfs snapshotter) upper dir, which
    `docker inspect` does not name. None for other storage (nothing to move it with)."""
    spec = Spec(info)
    if spec.upper_dir:
        return spec.upper_dir
    driver = info.get("GraphDriver") or {}
    if driver.get("Name") != "overlayfs" or driver.get("Data"):
        return None
    r = host.run(hostscripts.argv(host, "upper-dir.sh", "--container", spec.id, "--pid", spec.pid), check=False)
    return (r.stdout.strip() or None) if r.ok else None


def runtime_root(host: Host, container_id: str) -> str:
    """Docker's runc state directory for this container ('' when not found)."""
    r = host.run(hostscripts.argv(host, "runtime.sh", "root", "--container", container_id), check=False)
    return r.stdout.strip() if r.ok else ""


def runtime_stopped(host: Host, container_id: str) -> bool:
    """Without dockerd, ask runc itself: True when the container has no live process (or
    after killing it); False when that cannot be made sure."""
    try:
        return host.run(hostscripts.argv(host, "runtime.sh", "stopped", "--container", container_id),
                        check=False, timeout=120).ok
    except MigratorError:
        return False


def undumpable(host: Host, pid: int) -> list[str]:
    """What this host's CRIU would fail to dump in the container whose init is `pid`,
    found before any freeze (dumpable.sh): a reason with its fix each, or none."""
    r = host.run(hostscripts.argv(host, "dumpable.sh", "--pid", pid), check=False)
    found = [line.split(maxsplit=3) for line in r.stdout.splitlines()]
    why = []
    rlimits = [f for f in found if f[0] == "rlimits" and len(f) == 3]
    if rlimits:
        uids = ", ".join(sorted({f[1] for f in rlimits}))
        why.append(f"{len(rlimits)} of its processes run as uid {uids}, and CRIU here cannot read their rlimits "
                   "(prlimit() of another user's process needs CAP_SYS_RESOURCE, which root lacks on this host): "
                   "give root CAP_SYS_RESOURCE, or use a CRIU that reads /proc/PID/limits instead (migrator's "
                   "patch: scripts/criu-patches, which `make setup` builds)")
    for f in (f for f in found if f[0] == "ghost" and len(f) == 4):
        why.append(f"process {f[1]} holds open {int(f[2]) >> 20} MiB of the deleted file {f[3]}: CRIU copies a "
                   "deleted file into the checkpoint only up to its ghost-limit (1 MiB) and refuses larger ones; "
                   "let the process close it, or raise `ghost-limit` in /etc/criu/default.conf there")
    return why


def memory_usage(host: Host, engine: Engine, containers: dict[str, int]) -> dict[str, int]:
    """Bytes of memory each running container uses (container id -> its pid given), from
    its memory cgroup, in one command for all of them; `docker stats` for any it could not
    read (a half-second of Docker's sampling each)."""
    pids = {pid: cid for cid, pid in containers.items() if pid > 0}
    r = host.run(hostscripts.argv(host, "memory.sh", "--", *pids), check=False) if pids else None
    got: dict[str, int] = {}
    for line in (r.stdout.splitlines() if r is not None and r.ok else []):
        pid, _, n = line.partition(" ")
        if pid.isdigit() and n.isdigit() and int(pid) in pids:
            got[pids[int(pid)]] = int(n)
    for cid in containers:
        if cid not in got:
            got[cid] = int((engine.stats(cid).get("memory_stats") or {}).get("usage") or 0)
    return got


def memory_sample(host: Host, pid: int) -> tuple[int, int, float] | None:
    """(raw bytes, compressed bytes, seconds) of a sample of the process's memory, or None."""
    r = host.run(hostscripts.argv(host, "sample.sh", "--pid", pid), check=False)
    parts = r.stdout.split()
    if r.ok and len(parts) == 3 and all(p.isdigit() for p in parts) and int(parts[0]) > 0:
        return int(parts[0]), int(parts[1]), int(parts[2]) / 1e6
    return None
