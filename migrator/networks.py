"""User-defined networks: what a container needs on the target, and how one that is missing
there is made like the source's (driver, options, labels; its addresses only when the
container's own address on it is fixed, since the target may use that range already)."""

from __future__ import annotations

import ipaddress
from typing import Any

CREATABLE = ("bridge",)  # drivers a target can have made for it with nothing but the source's facts


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
    if driver not in CREATABLE:
        return (f"network {name} ({driver}) is missing on {target} and migrator makes only "
                f"{', '.join(CREATABLE)} networks; create it there as on {source}")
    return None

