"""The lab's network: a bridge in this namespace, a veth and a network namespace per host,
and the firewall rule that lets bridged host-to-host traffic through."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from ..errors import LabError
from ..transport import wait_for
from .processes import run


def forward_rule(bridge: str) -> list[str]:
    # With bridge-nf-call-iptables, bridged host-to-host packets cross this namespace's
    # FORWARD chain, whose policy may be DROP (left by some other dockerd).
    return ["FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT"]


def bridge_up(bridge: str, subnet: str, say: Callable[[str], None]) -> None:
    if not Path(f"/sys/class/net/{bridge}").exists():
        say(f"bridge {bridge} {subnet}.1/24")
        run(["ip", "link", "add", bridge, "type", "bridge"])
        run(["ip", "addr", "add", f"{subnet}.1/24", "dev", bridge])
        run(["ip", "link", "set", bridge, "up"])
    rule = forward_rule(bridge)
    if run(["iptables", "-C", *rule], check=False).returncode != 0:
        run(["iptables", "-I", *rule])


def bridge_down(bridge: str) -> bool:
    """Remove the bridge and its rule; True when there was a bridge."""
    there = Path(f"/sys/class/net/{bridge}").exists()
    if there:
        run(["ip", "link", "del", bridge])
    rule = forward_rule(bridge)
    while run(["iptables", "-C", *rule], check=False).returncode == 0:
        run(["iptables", "-D", *rule])
    return there


def veth_name(host: str) -> str:
    return f"mgv-{host}"[:15]


def mac_for(address: str) -> str:
    """A locally administered MAC made of the IPv4 address: 10.203.0.11 -> 02:6d:0a:cb:00:0b."""
    return "02:6d:" + ":".join(f"{int(o):02x}" for o in address.split("."))


def host_net_up(host: str, netns: str, address: str, bridge: str, subnet: str) -> None:
    """A network namespace for the host, with eth0 at `address` on the bridge."""
    run(["ip", "netns", "add", netns])
    veth = veth_name(host)
    if Path(f"/sys/class/net/{veth}").exists():
        run(["ip", "link", "del", veth])
    run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns])
    run(["ip", "link", "set", veth, "master", bridge, "up"])
    ns = ["ip", "-n", netns]
    run([*ns, "link", "set", "lo", "up"])
    # Its MAC comes from its address, so a host made again has the same one: neighbours that
    # cached it (the controller, the other hosts) reach it at once.
    run([*ns, "link", "set", "eth0", "address", mac_for(address)])
    run([*ns, "addr", "add", f"{address}/24", "dev", "eth0"])
    run([*ns, "link", "set", "eth0", "up"])
    run([*ns, "route", "add", "default", "via", f"{subnet}.1"])


def macvlan_create(subnet: str, name: str, first: int = 192) -> list[str]:
    """The `docker network create` of a macvlan network on a lab host: the lab's subnet,
    addresses from `first`/27 (out of the hosts' own), the host's eth0 (on the lab
    bridge, the L2 the hosts share) its parent."""
    return ["docker", "network", "create", "-d", "macvlan", "--subnet", f"{subnet}.0/24", "--gateway", f"{subnet}.1",
            "--ip-range", f"{subnet}.{first}/27", "-o", "parent=eth0", name]


def host_net_down(host: str, netns: str) -> None:
    if Path(f"/run/netns/{netns}").exists():
        run(["ip", "netns", "del", netns], check=False)
    veth = veth_name(host)
    if Path(f"/sys/class/net/{veth}").exists():
        run(["ip", "link", "del", veth], check=False)


def check_links(names_addresses: list[tuple[str, str]], reaches: Callable[[str, str], bool]) -> None:
    """Every host reaches every host's sshd over the bridge (`reaches(host, address)`),
    not only the controller: host-to-host traffic is what a direct transfer needs."""
    for name, _ in names_addresses:
        for _, address in names_addresses:
            if not wait_for(functools.partial(reaches, name, address), 10):
                raise LabError(f"{name} cannot reach {address}:22 over the lab bridge",
                               hint="check the FORWARD chain and bridge-nf-call-iptables")
