from pathlib import Path

import pytest

from migrator.errors import InventoryError
from migrator.inventory import load


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "hosts.yaml"
    p.write_text(text)
    return p


def test_loads_hosts_defaults_groups(tmp_path: Path) -> None:
    p = write(tmp_path, """
defaults:
  user: ops
  identity_file: keys/id
hosts:
  a:
    address: 10.0.0.1
    labels: {zone: a, size: 2}
  b:
    address: 10.0.0.2
    port: 2222
    user: root
groups:
  web: [a, b]
""")
    inv = load(p)
    a, b = inv.host("a"), inv.host("b")
    assert (a.user, a.port, a.labels) == ("ops", 22, {"zone": "a", "size": "2"})
    assert (b.user, b.port) == ("root", 2222)
    assert a.identity_file == tmp_path / "keys/id"  # relative to the inventory file
    assert [h.name for h in inv.resolve(["web", "a"])] == ["a", "b"]


@pytest.mark.parametrize("text, needle, line", [
    ("hosts:\n  a:\n    address: x\n    adress: y\n", "unknown key 'adress'", 4),
    ("hosts:\n  a:\n    port: 22\n", "missing 'address'", 3),
    ("hosts:\n  a:\n    address: x\n  a:\n    address: y\n", "duplicate key 'a'", 4),
    ("hosts:\n  a:\n    address: x\n    port: twenty\n", "'port' must be a whole number", 4),
    ("hosts:\n  a:\n    address: x\n    port: 70000\n", "1-65535", 4),
    ("hosts:\n  a: {address: x}\ngroups:\n  g: [a, zz]\n", "unknown host 'zz'", 4),
    ("hostz:\n  a: {address: x}\n", "unknown top-level key 'hostz'", 1),
    ("hosts:\n  a: {address: x}\n  'b c': {address: y}\n", "host name 'b c'", 3),
    ("hosts: [\n", "not valid YAML", 2),
])
def test_errors_name_file_key_and_line(tmp_path: Path, text: str, needle: str, line: int) -> None:
    p = write(tmp_path, text)
    with pytest.raises(InventoryError) as e:
        load(p)
    msg = str(e.value)
    assert needle in msg
    assert f"{p}:{line}:" in msg


def test_missing_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="not found.*-i PATH"):
        load(tmp_path / "nope.yaml")


def test_unknown_host_lists_known(tmp_path: Path) -> None:
    inv = load(write(tmp_path, "hosts:\n  a: {address: x}\n"))
    with pytest.raises(InventoryError, match="known hosts: a"):
        inv.host("b")


def test_env_var_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = write(tmp_path, "hosts:\n  a: {address: x}\n")
    monkeypatch.setenv("MIGRATOR_INVENTORY", str(p))
    assert list(load().hosts) == ["a"]


@pytest.mark.parametrize("address", ["10.0.0.1", "::1", "fd00::12", "db-1.example.com", "lab1"])
def test_addresses_that_are_addresses_load(tmp_path: Path, address: str) -> None:
    assert load(write(tmp_path, f"hosts:\n  a:\n    address: '{address}'\n")).host("a").address == address


@pytest.mark.parametrize("field, value, needle", [
    ("address", '10.0.0.1",command="sh', "'address' must be an IP address or a host name"),
    ("address", "a b", "'address' must be"),
    ("address", "-oProxyCommand=x", "'address' must be"),
    ("address", "host.", "'address' must be"),
    ("user", "root; rm -rf /", "'user' must be a user name"),
    ("user", "-oProxyCommand=x", "'user' must be"),
])
def test_values_that_reach_a_remote_file_or_command_are_checked_at_load(tmp_path: Path, field: str, value: str,
                                                                       needle: str) -> None:
    extra = "    address: 10.0.0.1\n" if field != "address" else ""
    p = write(tmp_path, f"hosts:\n  a:\n{extra}    {field}: '{value}'\n")
    with pytest.raises(InventoryError, match=needle) as err:
        load(p)
    assert f"{p}:" in str(err.value)  # names the file and line
    line = int(str(err.value).split(":")[1])
    assert line == 3 + (1 if extra else 0)
