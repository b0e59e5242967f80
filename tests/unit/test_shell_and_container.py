import shlex
import subprocess

import pytest

from migrator import shell
from migrator.container import Spec, validate_name
from migrator.errors import MigratorError

HOSTILE = ["$(touch /tmp/pwned)", "; rm -rf /", "a b", "'quoted'", '"dq"', "`id`", "x\ny", ""]


@pytest.mark.parametrize("arg", HOSTILE)
def test_join_round_trips_through_a_real_shell(arg: str) -> None:
    out = subprocess.run(["bash", "-c", shell.join(["printf", "%s", arg])], capture_output=True,
                         text=True, check=True).stdout
    assert out == arg


def test_pipeline_fails_when_producer_fails() -> None:
    argv = shell.pipeline(["false"], ["cat"])
    assert subprocess.run(argv).returncode != 0
    argv = shell.pipeline(["printf", "%s", "$(x)"], ["cat"])
    assert subprocess.run(argv, capture_output=True, text=True).stdout == "$(x)"


def test_nested_quoting_for_ssh_remote_command() -> None:
    inner = shell.join(shell.pipeline(["printf", "%s", "a'b; $(c)"], ["cat"]))
    out = subprocess.run(["bash", "-c", inner], capture_output=True, text=True).stdout
    assert out == "a'b; $(c)"
    assert shlex.split(inner)[0] == "bash"


@pytest.mark.parametrize("name", ["redis", "web-1", "a.b_c", "0123456789ab"])
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["$(touch /tmp/pwned)", "a;b", "-rf", "", "a b", "../x"])
def test_hostile_names_refused(name: str) -> None:
    with pytest.raises(MigratorError):
        validate_name(name)


def inspect(**over: object) -> dict:
    base: dict = {
        "Id": "c" * 64, "Name": "/web", "Image": "sha256:" + "i" * 64,
        "State": {"Running": True, "Pid": 42},
        "Config": {"Image": "lab/redis", "Env": ["A=1"], "Labels": {"l": "v"},
                   "ExposedPorts": {"6379/tcp": {}, "53/udp": {}}},
        "HostConfig": {"NetworkMode": "default", "RestartPolicy": {"Name": "always"},
                       "PortBindings": {"6379/tcp": [{"HostIp": "", "HostPort": "7000"}],
                                        "53/udp": [{"HostIp": "127.0.0.1", "HostPort": "5353"}]}},
        "Mounts": [{"Type": "volume", "Name": "data", "Source": "/v/data/_data"},
                   {"Type": "bind", "Source": "/etc/x"}],
        "NetworkSettings": {"Networks": {"bridge": {"IPAddress": "172.17.0.2"}}},
        "GraphDriver": {"Name": "overlay2", "Data": {"UpperDir": "/u"}},
    }
    base.update(over)
    return base


def test_spec_reads_ports_volumes_and_body() -> None:
    s = Spec(inspect())
    assert s.name == "web"
    assert sorted(s.published_ports()) == [("", 7000, "tcp"), ("127.0.0.1", 5353, "udp")]
    assert s.container_tcp_ports() == [6379]
    assert [m["Name"] for m in s.named_volumes()] == ["data"]
    assert [m["Source"] for m in s.bind_mounts()] == ["/etc/x"]
    body = s.create_body()
    assert body["Env"] == ["A=1"] and body["HostConfig"]["RestartPolicy"] == {"Name": "always"}
    assert "NetworkingConfig" not in body
    assert s.upper_dir == "/u"


def test_user_network_keeps_aliases_not_addresses() -> None:
    s = Spec(inspect(HostConfig={"NetworkMode": "app"},
                     NetworkSettings={"Networks": {"app": {"IPAddress": "10.1.0.5",
                                                           "Aliases": ["cccccccccccc", "db"]}}}))
    assert s.create_body()["NetworkingConfig"] == {"EndpointsConfig": {"app": {"Aliases": ["db"]}}}


def test_other_storage_driver_has_no_upper_dir() -> None:
    assert Spec(inspect(GraphDriver={"Name": "btrfs", "Data": {}})).upper_dir is None
