"""User-defined networks: what a container needs on the target, and how one that is missing
there is made like the source's (driver, options, labels; its addresses only when the
container's own address on it is fixed, since the target may use that range already)."""

from __future__ import annotations

import ipaddress
from typing import Any

CREATABLE = ("bridge",)  # drivers a target can have made for it with nothing but the source's facts
# Drivers whose addresses belong to the L2 the hosts share, not to a host: a container keeps
# its address (and MAC) on another host of that L2, and with it its connections.
MOVING = ("macvlan", "ipvlan")


def create_body(net: dict[str, Any], fixed: bool) -> dict[str, Any]:
    """The Engine API body that makes `net` (a source's `docker network inspect`) again."""
    ipam = dict(net.get("IPAM") or {})
    body: dict[str, Any] = {
        "Driver": net.get("Driver") or "bridge",
        "Options": net.get("Options") or {},
        "Labels": net.get("Labels") or {},
        "Internal": bool(net.get("Internal")),
        "Attachable": bool(net.get("Attachable")),
        "EnableIPv6": bool(net.get("EnableIPv6")),
        "CheckDuplicate": True,
        "IPAM": {"Driver": ipam.get("Driver") or "default", "Options": ipam.get("Options") or {},
                 "Config": (ipam.get("Config") or []) if fixed else []},
    }
    return body


def fixed_address(endpoint: dict[str, Any]) -> str:
    """The address a container was given on a network (`--ip`), or ""."""
    return str((endpoint.get("IPAMConfig") or {}).get("IPv4Address") or "")


def _in_subnets(address: str, net: dict[str, Any]) -> bool:
    subnets = [c.get("Subnet") for c in (net.get("IPAM") or {}).get("Config") or [] if c.get("Subnet")]
    try:
        return any(ipaddress.ip_address(address) in ipaddress.ip_network(s, strict=False) for s in subnets)
    except ValueError:
        return False


def refusal(name: str, source_net: dict[str, Any] | None, target_net: dict[str, Any] | None,
            endpoint: dict[str, Any], source: str, target: str) -> str | None:
    """Why the container cannot join `name` on the target, or None (it exists there fit for
    it, or migrator will make it)."""
    if source_net is None:
        return f"network {name} is gone on {source}"
    driver = source_net.get("Driver") or "bridge"
    if (source_net.get("Scope") or "local") != "local":
        return f"network {name} is a {source_net.get('Scope')}-scope {driver} network; only local networks are moved"
    address = fixed_address(endpoint)
    if target_net is not None:
        if (target_net.get("Driver") or "bridge") != driver:
            return f"network {name} is a {target_net.get('Driver')} network on {target}, {driver} on {source}"
        if address and not _in_subnets(address, target_net):
            return f"its fixed address {address} is outside network {name}'s subnet on {target}"
        return None
    if driver in MOVING:
        return (f"network {name} ({driver}) is missing on {target}; create it there on the same L2: "
                f"`{_command(name, source_net)}`")
    if driver not in CREATABLE:
        return (f"network {name} ({driver}) is missing on {target} and migrator makes only "
                f"{', '.join(CREATABLE)} networks; create it there as on {source}")
    return None


def _subnets(net: dict[str, Any]) -> list[str]:
    return sorted(str(c.get("Subnet")) for c in (net.get("IPAM") or {}).get("Config") or [] if c.get("Subnet"))


def _command(name: str, net: dict[str, Any]) -> str:
    """The `docker network create` of an L2 network like `net` (its parent interface may be
    named otherwise on another host)."""
    parent = (net.get("Options") or {}).get("parent", "")
    return (f"docker network create -d {net.get('Driver')} " + "".join(f"--subnet {n} " for n in _subnets(net))
            + f"-o parent={parent or 'IFACE'} {name}")



def address_stays(spec_networks: dict[str, dict[str, Any]], nets: dict[str, dict[str, Any] | None]) -> str | None:
    """None when every network the container is on (`spec_networks`: name -> its endpoint,
    `nets`: name -> the source's `docker network inspect`) gives it an address of the L2
    (MOVING), which it keeps on the target; else why its address is the host's."""
    if not spec_networks:
        return "it is on Docker's default bridge (or host) network: its address is the host's"
    for name in spec_networks:
        driver = (nets.get(name) or {}).get("Driver") or "bridge"
        if driver not in MOVING:
            return f"network {name} is a {driver} network: its address is the host's"
    return None


def same_l2_refusal(name: str, source_net: dict[str, Any], target_net: dict[str, Any], address: str,
                    users: dict[str, str], target: str) -> str | None:
    """Why the target's network `name` cannot take the container's `address` as it is (or
    None): the same driver and subnets, and the address free on it (`users`: address ->
    container there)."""
    if target_net.get("Driver") != source_net.get("Driver") or _subnets(target_net) != _subnets(source_net):
        return (f"network {name} is {target_net.get('Driver')} {', '.join(_subnets(target_net)) or 'without a subnet'}"
                f" on {target}, {source_net.get('Driver')} {', '.join(_subnets(source_net))} here; the address "
                f"moves only onto the same network (`{_command(name, source_net)}`)")
    if address in users:
        return f"address {address} is taken on {target} by {users[address]}"
    return None
