"""Checks before anything changes. Each failure is one line: host, check, and the fix."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from . import hosts
from .container import Spec
from .engine import Engine
from .errors import MigratorError
from .transport import Host

CRIU_MIN = (4, 2)
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

    def add(self, host: str, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append(Check(host, name, ok, detail))
        return ok

    @property
    def failures(self) -> list[str]:
        return [f"{c.host}: {c.name}: {c.detail}" for c in self.checks if not c.ok]


def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split(".")[:2] if x.isdigit())


def check_host(pf: Preflight, host: Host, engine: Engine, tools: list[str]) -> dict | None:
    """The checks one host needs whatever its role; returns docker info when reachable."""
    n = host.name
    try:
        info = engine.info()
        ver = engine.version()
    except MigratorError as e:
        pf.add(n, "docker", False, f"{e} (start dockerd, check the SSH user may use docker)")
        return None
    pf.add(n, "docker experimental", bool(ver.get("Experimental")),
           'checkpoints need `"experimental": true` in /etc/docker/daemon.json; restart dockerd')
    pf.add(n, "storage driver", info.get("Driver") == "overlay2",
           f"is {info.get('Driver')}; migrator moves the container's overlay2 diff")
    cv = hosts.criu_version(host)
    if pf.add(n, "criu", cv is not None and _version_tuple(cv) >= CRIU_MIN,
              f"found {cv or 'none'}; install CRIU >= {'.'.join(map(str, CRIU_MIN))} (see README)"):
        r = host.run(["criu", "check"], check=False, timeout=60)
        pf.add(n, "criu check", r.ok, (r.stderr.strip().splitlines() or ["failed"])[-1])
    missing = host.run(["bash", "-c", 'for t; do command -v "$t" >/dev/null || echo "$t"; done', "_",
                        *tools], check=False).stdout.split()
    pf.add(n, "tools", not missing, f"missing {', '.join(missing)}; install them")
    return info


def run(src: Host, dst: Host, spec: Spec, src_wd: str, dst_wd: str) -> Preflight:
    pf = Preflight()
    se, de = Engine(src), Engine(dst)
    with ThreadPoolExecutor(2) as ex:
        fs = ex.submit(check_host, pf, src, se, TOOLS + SOURCE_TOOLS)
        fd = ex.submit(check_host, pf, dst, de, TOOLS + TARGET_TOOLS)
        sinfo, dinfo = fs.result(), fd.result()
    if sinfo is None or dinfo is None:
        return pf
    s, t = src.name, dst.name
    mark = hosts.cordoned(dst)
    pf.add(t, "not cordoned", mark is None,
           f"cordoned ({(mark or {}).get('reason') or 'no reason given'}); `migrator uncordon {t}` first")
    pf.add(t, "architecture", sinfo.get("Architecture") == dinfo.get("Architecture"),
           f"{dinfo.get('Architecture')} here, {sinfo.get('Architecture')} on {s}")
    # CPU features: what the process may use on the source must exist on the target.
    r = src.run(["bash", "-c", 'umask 077; exec criu cpuinfo dump -D "$1"', "_", src_wd], check=False)
    if pf.add(s, "criu cpuinfo dump", r.ok, r.stderr.strip()[-200:]):
        dst.put(src.get(f"{src_wd}/cpuinfo.img"), f"{dst_wd}/cpuinfo.img")
        r = dst.run(["criu", "cpuinfo", "check", "-D", dst_wd], check=False)
        pf.add(t, "cpu compatible", r.ok, f"CPU lacks features the process may use on {s}: "
               f"{r.stderr.strip()[-200:]}; pick a target with the same CPU")
    # The container itself.
    cfg = spec.inspect["Config"]
    pf.add(s, "running", spec.running, f"{spec.name} is {spec.inspect['State'].get('Status')}; "
           "start it, or use `migrator checkpoint` for stopped state")
    pf.add(s, "tty", not cfg.get("Tty"), f"{spec.name} has a TTY (-t); CRIU cannot checkpoint it "
           "through Docker; recreate it without -t")
    binds = spec.bind_mounts()
    pf.add(s, "bind mounts", not binds, "host paths " + ", ".join(m["Source"] for m in binds) +
           " are not moved; use named volumes")
    mode = spec.network_mode
    if mode.startswith("container:"):
        pf.add(s, "network", False, f"{mode}: shares another container's network; move that one")
    elif mode not in ("default", "bridge", "host", "none"):
        pf.add(t, "network", de.network_exists(mode),
               f"network {mode!r} missing; `docker network create {mode}` there")
    other = de.inspect(spec.name)
    pf.add(t, "name free", other is None, f"a container named {spec.name} exists there; remove or rename it")
    tagged = de.image_inspect(spec.image_ref)
    if tagged is not None:
        tid = tagged["Id"]
        pf.add(t, "image tag", tid == spec.image_id, f"{spec.image_ref} is {tid[:19]} there but "
               f"{spec.image_id[:19]} on {s}; retag one of them")
    taken = hosts.taken_ports(dst, de) if spec.published_ports() else {}
    for _ip, port, proto in spec.published_ports():
        user = taken.get((port, proto))
        pf.add(t, f"port {port}/{proto}", user is None,
               f"in use ({user}); free it or pick another target")
    # Room for the process and the checkpoint.
    st = se.stats(spec.id) if spec.running else {}
    mem = int((st.get("memory_stats") or {}).get("usage") or 0)
    upper = spec.upper_dir
    diff = int(src.run(["du", "-sb", upper], check=False).stdout.split()[0] or 0) if upper else 0
    pf.memory_bytes, pf.fs_diff_bytes = mem, diff
    avail = hosts.mem_info(dst).get("MemAvailable", 0)
    pf.add(t, "memory", avail >= mem * MEM_MARGIN,
           f"{avail >> 20} MiB available, the container uses {mem >> 20} MiB; free memory or pick another")
    root = dinfo.get("DockerRootDir", "/var/lib/docker")
    free = hosts.free_bytes(dst, root)
    need = int((mem + diff) * DISK_MARGIN)
    pf.add(t, "disk", free >= need, f"{free >> 20} MiB free in {root}, need {need >> 20} MiB")
    return pf

