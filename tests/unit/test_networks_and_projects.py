"""User networks made like the source's, and a compose project's order: pure functions."""

from __future__ import annotations

from typing import Any

from migrator import networks
from migrator.container import Spec
from migrator.project import order

NET = {"Name": "shop_default", "Driver": "bridge", "Scope": "local", "Internal": False, "Attachable": True,
       "EnableIPv6": False, "Options": {"com.docker.network.bridge.enable_icc": "true"},
       "Labels": {"com.docker.compose.project": "shop", "com.docker.compose.network": "default"},
       "IPAM": {"Driver": "default", "Options": {},
                "Config": [{"Subnet": "172.18.0.0/16", "Gateway": "172.18.0.1"}]}}


def spec(name: str, nets: dict[str, dict[str, Any]], mode: str | None = None, **labels: str) -> Spec:
    return Spec({"Id": (name.encode().hex() + "c" * 64)[:64], "Name": f"/{name}",
                 "Config": {"Image": "x", "Labels": labels},
                 "HostConfig": {"NetworkMode": mode or next(iter(nets), "default")},
                 "NetworkSettings": {"Networks": nets}})


def test_a_missing_network_is_made_like_the_source_s_addresses_only_when_fixed() -> None:
    body = networks.create_body(NET, fixed=False)
    assert (body["Driver"], body["Labels"], body["Options"], body["Attachable"]) == (
        "bridge", NET["Labels"], NET["Options"], True)
    assert body["IPAM"]["Config"] == []  # the target picks a free range
    assert networks.create_body(NET, fixed=True)["IPAM"]["Config"] == NET["IPAM"]["Config"]


def test_network_refusals_say_what_to_do() -> None:
    ep = {"IPAMConfig": {"IPv4Address": "172.18.0.9"}}
    assert networks.refusal("n", NET, None, {}, "a", "b") is None  # made there
    assert networks.refusal("n", NET, NET, ep, "a", "b") is None  # there, the address in range
    other = {**NET, "IPAM": {"Config": [{"Subnet": "10.9.0.0/24"}]}}
    assert "fixed address 172.18.0.9 is outside network n's subnet on b" in str(networks.refusal(
        "n", NET, other, ep, "a", "b"))
    assert "is a macvlan network on b, bridge on a" in str(networks.refusal(
        "n", NET, {**NET, "Driver": "macvlan"}, {}, "a", "b"))
    assert "create it there as on a" in str(networks.refusal("n", {**NET, "Driver": "macvlan"}, None, {}, "a", "b"))
    assert "only local networks" in str(networks.refusal("n", {**NET, "Scope": "swarm", "Driver": "overlay"},
                                                         None, {}, "a", "b"))
    assert networks.refusal("n", None, None, {}, "a", "b") == "network n is gone on a"


def test_a_container_on_two_networks_is_created_on_its_own_and_keeps_aliases_address_links() -> None:
    s = spec("web", {"front": {"Aliases": ["776562cccccc", "www"]},
                     "back": {"Aliases": ["web"], "IPAMConfig": {"IPv4Address": "10.0.0.7"}, "Links": ["db:d"]}},
             mode="back")
    assert list(s.user_networks()) == ["back", "front"]  # its own network first
    assert s.create_body()["NetworkingConfig"] == {"EndpointsConfig": {"back": {
        "Aliases": ["web"], "IPAMConfig": {"IPv4Address": "10.0.0.7"}, "Links": ["db:d"]}}}
    assert s.endpoint("front") == {"Aliases": ["www"]}  # the short id is the target copy's own
    assert spec("b", {"bridge": {}}, mode="default").user_networks() == {}


def test_a_project_moves_dependencies_first() -> None:
    dep = "com.docker.compose.depends_on"
    specs = [spec("shop-front-1", {}, **{"com.docker.compose.service": "front", dep: "app:service_started:false"}),
             spec("shop-app-1", {}, **{"com.docker.compose.service": "app",
                                      dep: "db:service_healthy:true,cache:service_started:false"}),
             spec("shop-cache-1", {}, **{"com.docker.compose.service": "cache"}),
             spec("shop-db-1", {}, **{"com.docker.compose.service": "db", dep: "gone:service_started:false"})]
    assert [s.name for s in order(specs)] == ["shop-cache-1", "shop-db-1", "shop-app-1", "shop-front-1"]
    loop = [spec("x-a-1", {}, **{"com.docker.compose.service": "a", dep: "b:service_started:false"}),
            spec("x-b-1", {}, **{"com.docker.compose.service": "b", dep: "a:service_started:false"})]
    assert sorted(s.name for s in order(loop)) == ["x-a-1", "x-b-1"]  # a cycle still moves everything
