"""A container's configuration as Docker reports it, and the body that recreates it elsewhere."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .errors import MigratorError

# Docker's own rule for names, or a (short) hex id. Anything else is refused up front.
NAME_RE = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")
ID_RE = re.compile(r"^[0-9a-f]{12,64}$")


def validate_name(name: str) -> str:
    if not (NAME_RE.match(name) or ID_RE.match(name)):
        raise MigratorError(
            f"{name!r} is not a container name or id",
            hint="names are letters, digits, '_', '.' and '-', starting with a letter or digit",
        )
    return name.lstrip("/")


@dataclass(frozen=True)
class Spec:
    """What a container is, from `docker inspect`: enough to recreate it on another host."""

    inspect: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.inspect["Id"])

    @property
    def name(self) -> str:
        return str(self.inspect["Name"]).lstrip("/")

    @property
    def image_id(self) -> str:
        return str(self.inspect["Image"])

    @property
    def image_ref(self) -> str:
        return str(self.inspect["Config"]["Image"])

    @property
    def running(self) -> bool:
        return bool(self.inspect["State"].get("Running"))

    @property
    def pid(self) -> int:
        return int(self.inspect["State"].get("Pid") or 0)

    @property
    def host_config(self) -> dict[str, Any]:
        return dict(self.inspect.get("HostConfig") or {})

    @property
    def network_mode(self) -> str:
        return str(self.host_config.get("NetworkMode") or "default")

    @property
    def upper_dir(self) -> str | None:
        gd = self.inspect.get("GraphDriver") or {}
        if gd.get("Name") != "overlay2":
            return None
        return (gd.get("Data") or {}).get("UpperDir")

    def published_ports(self) -> list[tuple[str, int, str]]:
        """(host ip, host port, proto) for every published port."""
        out = []
        for key, binds in (self.host_config.get("PortBindings") or {}).items():
            proto = key.split("/")[1] if "/" in key else "tcp"
            for b in binds or []:
                if b.get("HostPort"):
                    out.append((b.get("HostIp") or "", int(b["HostPort"]), proto))
        return out

    def container_tcp_ports(self) -> list[int]:
        """Ports the service listens on inside the container (exposed or published)."""
        keys = set((self.inspect["Config"].get("ExposedPorts") or {}).keys())
        keys |= set((self.host_config.get("PortBindings") or {}).keys())
        return sorted(int(k.split("/")[0]) for k in keys if k.endswith("/tcp"))

    def named_volumes(self) -> list[dict[str, Any]]:
        return [m for m in self.inspect.get("Mounts") or [] if m.get("Type") == "volume"]

    def bind_mounts(self) -> list[dict[str, Any]]:
        return [m for m in self.inspect.get("Mounts") or [] if m.get("Type") == "bind"]

    def user_networks(self) -> dict[str, dict[str, Any]]:
        """The user-defined networks it is on (name: its endpoint there), its own network first."""
        mode = self.network_mode
        if mode in ("default", "bridge", "host", "none") or mode.startswith("container:"):
            return {}
        nets = (self.inspect.get("NetworkSettings") or {}).get("Networks") or {}
        return dict(sorted(nets.items(), key=lambda kv: kv[0] != mode))

    def addresses(self) -> list[str]:
        """Its IPv4 addresses on its user-defined networks."""
        return [str(ep["IPAddress"]) for ep in self.user_networks().values() if ep.get("IPAddress")]

    def endpoint(self, network: str, same_address: bool = False) -> dict[str, Any]:
        """How it joins `network` on another host: its aliases (but its short id, which is
        the target copy's own), its fixed address if it has one, links and driver options.
        With `same_address` (an address of the L2, which moves with it: networks.MOVING),
        its address and MAC as they are now, fixed or not."""
        ep = self.user_networks().get(network) or {}
        out: dict[str, Any] = {}
        aliases = [a for a in ep.get("Aliases") or [] if not self.id.startswith(a)]
        if aliases:
            out["Aliases"] = aliases
        for key in ("IPAMConfig", "Links", "DriverOpts"):
            if ep.get(key):
                out[key] = ep[key]
        if same_address:
            out["IPAMConfig"] = {**(ep.get("IPAMConfig") or {}), "IPv4Address": ep.get("IPAddress") or "",
                                 **({"IPv6Address": ep["GlobalIPv6Address"]} if ep.get("GlobalIPv6Address") else {})}
            if ep.get("MacAddress"):
                out["MacAddress"] = ep["MacAddress"]  # API 1.44 and newer
        return out

    def create_body(self, same_address: bool = False) -> dict[str, Any]:
        """The Engine API create body: the same Config and HostConfig, on its own network (the
        others are connected before it starts: API 1.41 takes one here); `same_address` as
        for endpoint()."""
        body: dict[str, Any] = dict(self.inspect["Config"])
        body["HostConfig"] = self.host_config
        nets = self.user_networks()
        if nets:
            first = next(iter(nets))
            ep = self.endpoint(first, same_address)
            body["NetworkingConfig"] = {"EndpointsConfig": {first: ep}}
            if ep.get("MacAddress"):  # where API 1.41 takes it (for its own network), the same
                body["MacAddress"] = ep["MacAddress"]
        return body
