"""Checks before anything changes. Each failure is one line: host, check, and the fix."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from . import binds, hosts, networks
from .container import Spec
from .engine import Engine
from .errors import MigratorError, tail
from .probes import memory_usage, undumpable, upper_dir
from .shared import Shared, once
from .transfer import same_image
from .transport import Host

CRIU_MIN = (4, 2)
STORES = ("overlay2", hosts.SNAPSHOTTER)
TOOLS = ["bash", "tar", "zstd", "b2sum", "nsenter", "timeout", "ss"]
SOURCE_TOOLS = ["ssh", "rsync"]
TARGET_TOOLS = ["rsync"]
MEM_MARGIN = 1.25
DISK_MARGIN = 1.5


@dataclass
class Check:
    host: str
    name: str
    ok: bool
    detail: str = ""


@dataclass
class Preflight:
    checks: list[Check] = field(default_factory=list)
    memory_bytes: int = 0
    fs_diff_bytes: int = 0
    address_moves: bool = False  # its address is the L2's (networks.MOVING): the same on the target
    keep_connections: bool = False  # and its connections are restored there as they are

    def add(self, host: str, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append(Check(host, name, ok, detail))
        return ok

    @property
    def failures(self) -> list[str]:
        return [f"{c.host}: {c.name}: {c.detail}" for c in self.checks if not c.ok]


def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split(".")[:2] if x.isdigit())


def restore_refusal(host: Host, version: str, spec: Spec) -> str | None:
    """Why the Docker `version` on `host` cannot restore this container, or None. Docker
    28+ restores a container with a network namespace of its own only through migrator's
    runc wrapper, at `runc create` (host/runc-wrapper.sh)."""
    mode = spec.network_mode
    own_netns = not (mode == "host" or mode.startswith("container:") or spec.inspect["Config"].get("NetworkDisabled"))
    if hosts.restore_at_create(version) and own_netns and not host.ok(["runc", "migrator-info"]):
        return (f"Docker {version} cannot restore a container with a network namespace of its own (network "
                f"{mode}) by itself: it sets up the network from the restored task's pid, which is 0 until the "
                "restore runs (moby daemon/start_linux.go; containerd issue 12141, unfixed); install migrator's "
                "runc wrapper there (`install -m 0755 migrator/host/runc-wrapper.sh /usr/local/sbin/runc`, earlier "
                "on dockerd's PATH than /usr/sbin, then restart dockerd), pick a target with Docker 20.10-27, or run "
                "the container with --network host")
    return None


def check_host(host: Host, engine: Engine, tools: list[str]) -> tuple[list[Check], dict | None]:
    """The checks one host needs whatever its role, and docker info when reachable."""
    n, checks = host.name, Preflight()
    try:
        info = engine.info()
        version = engine.version()
    except MigratorError as ex:
        checks.add(n, "docker", False, f"{ex} (start dockerd, check the SSH user may use docker)")
        return checks.checks, None
    checks.add(n, "docker experimental", bool(version.get("Experimental")),
           'checkpoints need `"experimental": true` in /etc/docker/daemon.json; restart dockerd')
    store = hosts.storage(info)
    checks.add(n, "storage", store in STORES,
               f"is {store}; migrator moves a container's writable layer on overlay2 or the containerd "
               "image store (overlayfs snapshotter) only")
    criu = hosts.criu_version(host)
    if checks.add(n, "criu", criu is not None and _version_tuple(criu) >= CRIU_MIN,
              f"found {criu or 'none'}; install CRIU >= {'.'.join(map(str, CRIU_MIN))} (Debian 12's 3.17 fails "
              "`criu check` on current kernels: build 4.2 from source)"):
        r = host.run(["criu", "check"], check=False, timeout=60)
        checks.add(n, "criu check", r.ok, (r.stderr.strip().splitlines() or ["failed"])[-1])
    missing = host.run(["bash", "-c", 'for t; do command -v "$t" >/dev/null || echo "$t"; done', "_",
                        *tools], check=False).stdout.split()
    checks.add(n, "tools", not missing, f"missing {', '.join(missing)}; install them")
    return checks.checks, info


def cpu_compatible(src: Host, dst: Host, source_workdir: str, target_workdir: str) -> list[Check]:
    """What the process may use of the source's CPU exists on the target's."""
    checks, s, t = Preflight(), src.name, dst.name
    r = src.run(["bash", "-c", 'umask 077; exec criu cpuinfo dump -D "$1"', "_", source_workdir], check=False)
    if checks.add(s, "criu cpuinfo dump", r.ok, tail(r.stderr, 2, 200)):
        dst.put(src.get(f"{source_workdir}/cpuinfo.img"), f"{target_workdir}/cpuinfo.img")
        r = dst.run(["criu", "cpuinfo", "check", "-D", target_workdir], check=False)
        checks.add(t, "cpu compatible", r.ok, f"CPU lacks features the process may use on {s}: "
                   f"{tail(r.stderr, 2, 200)}; pick a target with the same CPU")
    return checks.checks


def same_address(checks: Preflight, src: Host, dst: Host, spec: Spec, source_nets: dict[str, dict | None],
                 target_nets: dict[str, dict | None], connections: str | None) -> None:
    """Does its address move with it (and its connections), and can it: the same network on
    the target, the address free there, on the L2 the source is on (the address answers ARP
    through the target network's parent interface). `connections`: "keep", "close" or None
    (keep them where the address moves). Sets checks.address_moves/keep_connections."""
    s, t = src.name, dst.name
    stays = networks.address_stays(spec.user_networks(), source_nets)  # None: the address moves
    if connections == "keep":
        checks.add(s, "keep connections", stays is None, f"{stays}; connections are kept only where the address "
                   "moves with the container (macvlan or ipvlan networks); --close-connections closes them")
    if stays is not None:
        return
    checks.address_moves, checks.keep_connections = True, connections != "close"
    for name, ep in spec.user_networks().items():
        address, theirs = str(ep.get("IPAddress") or ""), target_nets.get(name)
        if theirs is None:  # the network check says what to create
            continue
        users = {str(c.get("IPv4Address", "")).split("/")[0]: str(c.get("Name", ""))
                 for c in ((theirs or {}).get("Containers") or {}).values()}
        blocked = networks.same_l2_refusal(name, source_nets[name] or {}, theirs, address, users, t)
        if not checks.add(t, f"address {address} on {name}", blocked is None, blocked or ""):
            continue
        parent = (theirs.get("Options") or {}).get("parent", "")
        answered = bool(parent) and dst.ok(["arping", "-q", "-c", "1", "-w", "2", "-I", parent, address])
        checks.add(t, f"same L2 as {s} ({name})", answered,
                   f"{address} does not answer ARP through {parent or 'a parent interface'} here: network {name} "
                   f"must sit on the L2 {s}'s does (its parent interface there: "
                   f"{((source_nets[name] or {}).get('Options') or {}).get('parent', 'none')})")


def run(src: Host, dst: Host, spec: Spec, source_workdir: str, target_workdir: str,
        shared: Shared | None = None, bind_mounts: str | None = None, connections: str | None = None) -> Preflight:
    """Every check of moving `spec` from src to dst. With `shared` (a batch of moves), what
    is the same for every move between two hosts is checked once for all of them.
    `connections`: see same_address."""
    checks = Preflight()
    source_engine, target_engine = Engine(src), Engine(dst)
    source_nets = {name: source_engine.network_inspect(name) for name in spec.user_networks()}
    target_nets = {name: target_engine.network_inspect(name) for name in spec.user_networks()}
    # where the address moves, both announce it (arping) when it changes hosts, and hold off
    # packets for kept connections until they are restored (nft)
    tools = ["arping", *(["nft"] if connections != "close" else [])] \
        if networks.address_stays(spec.user_networks(), source_nets) is None else []

    def host_checks(host: Host, engine: Engine, tools: list[str]) -> tuple[list[Check], dict | None]:
        return once(shared, ("host", host.name, tuple(tools)), lambda: check_host(host, engine, tools))

    with ThreadPoolExecutor(2) as pool:
        source_checks = pool.submit(host_checks, src, source_engine, TOOLS + SOURCE_TOOLS + tools)
        target_checks = pool.submit(host_checks, dst, target_engine, TOOLS + TARGET_TOOLS + tools)
        (source_list, source_info), (target_list, target_info) = source_checks.result(), target_checks.result()
    checks.checks += source_list + target_list
    if source_info is None or target_info is None:
        return checks
    s, t = src.name, dst.name
    mark = hosts.cordoned(dst)
    checks.add(t, "not cordoned", mark is None,
           f"cordoned ({(mark or {}).get('reason') or 'no reason given'}); `migrator uncordon {t}` first")
    refusal = restore_refusal(dst, str(target_info.get("ServerVersion") or ""), spec)
    checks.add(t, "restore on this engine", refusal is None, refusal or "")
    checks.add(t, "architecture", source_info.get("Architecture") == target_info.get("Architecture"),
           f"{target_info.get('Architecture')} here, {source_info.get('Architecture')} on {s}")
    checks.checks += once(shared, ("cpu", s, t), lambda: cpu_compatible(src, dst, source_workdir, target_workdir))
    # The container itself.
    config = spec.inspect["Config"]
    checks.add(s, "running", spec.running, f"{spec.name} is {spec.inspect['State'].get('Status')}; "
           "start it, or use `migrator checkpoint` for stopped state")
    if spec.running:
        why = undumpable(src, spec.pid)
        checks.add(s, "criu can dump it", not why, "; ".join(why))
    checks.add(s, "tty", not config.get("Tty"), f"{spec.name} has a TTY (-t); CRIU cannot checkpoint it "
           "through Docker; recreate it without -t")
    if spec.bind_mounts():
        refused = binds.refusals(src, dst, spec.bind_mounts(), bind_mounts)
        checks.add(t if bind_mounts else s, "bind mounts", not refused, "; ".join(refused) or str(bind_mounts))
    mode = spec.network_mode
    if mode.startswith("container:"):
        checks.add(s, "network", False, f"{mode}: shares another container's network; move that one")
    for name, endpoint in spec.user_networks().items():
        theirs = target_nets[name]
        blocked = networks.refusal(name, source_nets[name], theirs, endpoint, s, t)
        checks.add(t, f"network {name}", blocked is None, blocked or ("there" if theirs else f"made like {s}'s"))
    same_address(checks, src, dst, spec, source_nets, target_nets, connections)
    other = target_engine.inspect(spec.name)
    checks.add(t, "name free", other is None, f"a container named {spec.name} exists there; remove or rename it")
    tagged = target_engine.image_inspect(spec.image_ref)
    if tagged is not None:
        ours = source_engine.image_inspect(spec.image_id) or {}
        their_id = tagged["Id"]
        checks.add(t, "image tag", same_image(ours, tagged), f"{spec.image_ref} is {their_id[:19]} there but "
               f"{spec.image_id[:19]} on {s}; retag one of them")
    taken = hosts.taken_ports(dst, target_engine) if spec.published_ports() else {}
    for _ip, port, proto in spec.published_ports():
        user = taken.get((port, proto))
        checks.add(t, f"port {port}/{proto}", user is None,
               f"in use ({user}); free it or pick another target")
    # Room for the process and the checkpoint.
    mem = memory_usage(src, source_engine, {spec.id: spec.pid})[spec.id] if spec.running else 0
    upper = upper_dir(src, spec.inspect)
    checks.add(s, "writable layer", upper is not None, f"cannot find the writable layer of {spec.name} on {s}; "
               "`docker inspect` there shows its GraphDriver")
    diff = int(src.run(["du", "-sb", upper], check=False).stdout.split()[0] or 0) if upper else 0
    checks.memory_bytes, checks.fs_diff_bytes = mem, diff
    avail = hosts.mem_info(dst).get("MemAvailable", 0)
    checks.add(t, "memory", avail >= mem * MEM_MARGIN,
           f"{avail >> 20} MiB available, the container uses {mem >> 20} MiB; free memory or pick another")
    root = target_info.get("DockerRootDir", "/var/lib/docker")
    free = hosts.free_bytes(dst, root)
    need = int((mem + diff) * DISK_MARGIN)
    checks.add(t, "disk", free >= need, f"{free >> 20} MiB free in {root}, need {need >> 20} MiB")
    return checks

