"""Probing hosts: reachable over SSH and docker, and the versions migration depends on."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

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
    experimental: bool | None = None
    criu_version: str | None = None
    containers_running: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    error: str | None = None


def criu_version(host: Host) -> str | None:
    r = host.run(["criu", "--version"], check=False, timeout=30)
    for line in r.stdout.splitlines():
        if line.startswith("Version:"):
            return line.split(":", 1)[1].strip()
    return None


def probe(spec: HostSpec, timeout: float = 10.0) -> HostStatus:
    st = HostStatus(spec.name, spec.address, False, labels=dict(spec.labels))
    try:
        with Host(spec, connect_timeout=timeout) as h:
            eng = Engine(h)
            v = eng.version()
            st.docker_version = v.get("Version")
            st.experimental = bool(v.get("Experimental", False))
            st.criu_version = criu_version(h)
            st.containers_running = sorted(c["Names"][0].lstrip("/") for c in eng.containers())
            st.reachable = True
    except MigratorError as e:
        st.error = str(e)
    return st


def probe_all(specs: list[HostSpec], timeout: float = 10.0) -> list[HostStatus]:
    """One result per host; one host's failure never hides the others'."""
    if not specs:
        return []
    with ThreadPoolExecutor(max_workers=min(16, len(specs))) as ex:
        return list(ex.map(lambda s: probe(s, timeout), specs))
