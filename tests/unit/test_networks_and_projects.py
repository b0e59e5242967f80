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
    assert "create it there as on a" in str(networks.refusal("n", {**NET, "Driver": "weave"}, None, {}, "a", "b"))
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


MACVLAN = {"Name": "l2", "Driver": "macvlan", "Scope": "local", "Options": {"parent": "eth0"},
           "IPAM": {"Driver": "default", "Config": [{"Subnet": "10.1.0.0/24", "Gateway": "10.1.0.1"}]}}
EP = {"IPAddress": "10.1.0.200", "MacAddress": "02:42:0a:01:00:c8", "Aliases": ["kv"], "IPAMConfig": None}


def test_the_address_moves_only_where_every_network_is_the_l2_s() -> None:
    assert networks.address_stays({"l2": EP}, {"l2": MACVLAN}) is None
    assert networks.address_stays({"l2": EP}, {"l2": {**MACVLAN, "Driver": "ipvlan"}}) is None
    assert "network shop_default is a bridge network" in str(
        networks.address_stays({"l2": EP, "shop_default": {}}, {"l2": MACVLAN, "shop_default": NET}))
    assert "default bridge" in str(networks.address_stays({}, {}))


def test_the_target_s_network_must_be_the_same_and_the_address_free_there() -> None:
    assert networks.same_l2_refusal("l2", MACVLAN, {**MACVLAN, "Options": {"parent": "ens3"}}, "10.1.0.200", {},
                                    "b") is None  # another parent name: the L2 is proven by ARP
    other = {**MACVLAN, "IPAM": {"Config": [{"Subnet": "10.2.0.0/24"}]}}
    said = str(networks.same_l2_refusal("l2", MACVLAN, other, "10.1.0.200", {}, "b"))
    assert "macvlan 10.2.0.0/24 on b, macvlan 10.1.0.0/24 here" in said
    assert "docker network create -d macvlan --subnet 10.1.0.0/24 -o parent=eth0 l2" in said
    assert "taken on b by web" in str(networks.same_l2_refusal("l2", MACVLAN, MACVLAN, "10.1.0.200",
                                                               {"10.1.0.200": "web"}, "b"))
    missing = str(networks.refusal("l2", MACVLAN, None, EP, "a", "b"))
    assert "missing on b; create it there on the same L2: `docker network create -d macvlan" in missing


def test_the_same_address_and_mac_are_asked_for_on_the_target() -> None:
    s = spec("kv", {"l2": EP})
    assert "IPAMConfig" not in s.endpoint("l2")  # not fixed: the target picks, on a bridge
    ep = s.endpoint("l2", same_address=True)
    assert ep["IPAMConfig"] == {"IPv4Address": "10.1.0.200"} and ep["MacAddress"] == EP["MacAddress"]
    assert ep["Aliases"] == ["kv"]
    body = s.create_body(same_address=True)
    assert body["MacAddress"] == EP["MacAddress"]  # where API 1.41 takes it
    assert body["NetworkingConfig"]["EndpointsConfig"]["l2"] == ep
    assert "MacAddress" not in s.create_body()
    assert s.addresses() == ["10.1.0.200"]
