"""The inventory: hosts, groups and defaults from YAML, validated into typed objects at load.

A typo is an error naming the file, the key and the line, never a KeyError at run time.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import InventoryError

DEFAULT_PATH = "inventory/hosts.yaml"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
# What may reach a remote file or command line (authorized_keys' from="...", ssh's -l):
# a DNS name (RFC 1123 labels) or an IP address; a POSIX user name.
HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                         r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
USER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")

# The defaults, in one place. A host's own value wins over the file's `defaults:`.
BUILTIN_DEFAULTS: dict[str, Any] = {
    "port": 22,
    "user": "root",
    "identity_file": "~/.ssh/id_ed25519",
    "known_hosts": "~/.ssh/known_hosts",
    "labels": {},
}
HOST_KEYS = {"address", *BUILTIN_DEFAULTS}
TOP_KEYS = {"hosts", "groups", "defaults"}


@dataclass(frozen=True)
class HostSpec:
    name: str
    address: str
    port: int
    user: str
    identity_file: Path
    known_hosts: Path
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Inventory:
    path: Path
    hosts: dict[str, HostSpec]
    groups: dict[str, list[str]]

    def host(self, name: str) -> HostSpec:
        try:
            return self.hosts[name]
        except KeyError:
            known = ", ".join(sorted(self.hosts)) or "none"
            raise InventoryError(
                f"unknown host {name!r} in {self.path}", hint=f"known hosts: {known}"
            ) from None

    def resolve(self, names: list[str]) -> list[HostSpec]:
        """Host or group names to hosts, in order, each once."""
        out: dict[str, HostSpec] = {}
        for n in names:
            if n in self.groups:
                for h in self.groups[n]:
                    out.setdefault(h, self.hosts[h])
            else:
                out.setdefault(n, self.host(n))
        return list(out.values())


def default_path() -> Path:
    return Path(os.environ.get("MIGRATOR_INVENTORY", DEFAULT_PATH))


class _Loader:
    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, node: yaml.Node | None, msg: str) -> InventoryError:
        where = f"{self.path}:{node.start_mark.line + 1}" if node is not None else str(self.path)
        return InventoryError(f"{where}: {msg}")

    def mapping(self, node: yaml.Node, what: str) -> list[tuple[str, yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"{what} must be a mapping")
        seen: set[str] = set()
        out: list[tuple[str, yaml.Node, yaml.Node]] = []
        for k, v in node.value:
            if not isinstance(k, yaml.ScalarNode):
                raise self.fail(k, f"{what}: keys must be plain names")
            if k.value in seen:
                raise self.fail(k, f"{what}: duplicate key {k.value!r}")
            seen.add(k.value)
            out.append((k.value, k, v))
        return out

    def scalar(self, node: yaml.Node, key: str, kind: type) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, f"{key!r} must be a {kind.__name__}")
        value = yaml.safe_load(yaml.serialize(node))
        if kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = node.value  # an address or user that YAML read as a number
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise self.fail(node, f"{key!r} must be a whole number, not {node.value!r}")
        if kind is str and not isinstance(value, str):
            raise self.fail(node, f"{key!r} must be a string, not {node.value!r}")
        return value

    def host_fields(self, node: yaml.Node, what: str) -> dict[str, tuple[Any, yaml.Node]]:
        out: dict[str, tuple[Any, yaml.Node]] = {}
        for key, knode, vnode in self.mapping(node, what):
            if key not in HOST_KEYS:
                raise self.fail(knode, f"{what}: unknown key {key!r} (known: {', '.join(sorted(HOST_KEYS))})")
            if key == "labels":
                labels = {}
                for lk, _lkn, lv in self.mapping(vnode, f"{what}.labels"):
                    labels[lk] = str(self.scalar(lv, f"labels.{lk}", str))
                out[key] = (labels, vnode)
            elif key == "address":
                address = self.scalar(vnode, key, str)
                if not _is_address(address):
                    raise self.fail(vnode, f"'address' must be an IP address or a host name, not {address!r}")
                out[key] = (address, vnode)
            elif key == "user":
                user = self.scalar(vnode, key, str)
                if not USER_RE.match(user):
                    raise self.fail(vnode, f"'user' must be a user name (letters, digits, '_', '.', '-'), "
                                           f"not {user!r}")
                out[key] = (user, vnode)
            elif key == "port":
                port = self.scalar(vnode, key, int)
                if not 0 < port < 65536:
                    raise self.fail(vnode, f"'port' must be 1-65535, not {port}")
                out[key] = (port, vnode)
            else:
                out[key] = (self.scalar(vnode, key, str), vnode)
        return out

    def load(self) -> Inventory:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            raise InventoryError(
                f"inventory {self.path} not found",
                hint="pass -i PATH, set MIGRATOR_INVENTORY, or run `migrator lab up` for a lab one",
            ) from None
        try:
            root = yaml.compose(text)
        except yaml.YAMLError as ex:
            line = getattr(getattr(ex, "problem_mark", None), "line", None)
            where = f"{self.path}:{line + 1}" if line is not None else str(self.path)
            raise InventoryError(f"{where}: not valid YAML: {getattr(ex, 'problem', ex)}") from None
        if root is None:
            raise InventoryError(f"{self.path}: empty inventory", hint="it needs a 'hosts:' mapping")
        top = {k: (kn, v) for k, kn, v in self.mapping(root, "inventory")}
        for k, (kn, _v) in top.items():
            if k not in TOP_KEYS:
                raise self.fail(kn, f"unknown top-level key {k!r} (known: {', '.join(sorted(TOP_KEYS))})")
        defaults = dict(BUILTIN_DEFAULTS)
        if "defaults" in top:
            for k, (v, vnode) in self.host_fields(top["defaults"][1], "defaults").items():
                if k == "address":
                    raise self.fail(vnode, "'address' cannot be a default")
                defaults[k] = v
        if "hosts" not in top:
            raise self.fail(root, "missing 'hosts:' mapping")
        hosts: dict[str, HostSpec] = {}
        for name, knode, vnode in self.mapping(top["hosts"][1], "hosts"):
            if not NAME_RE.match(name):
                raise self.fail(knode, f"host name {name!r}: use letters, digits, '.', '_' or '-'")
            if isinstance(vnode, yaml.ScalarNode) and vnode.value == "":
                raise self.fail(vnode, f"host {name!r}: missing 'address'")
            f = {k: v for k, (v, _n) in self.host_fields(vnode, f"hosts.{name}").items()}
            if "address" not in f:
                raise self.fail(vnode, f"host {name!r}: missing 'address'")
            merged = {**defaults, **f}
            base = self.path.parent
            hosts[name] = HostSpec(
                name=name,
                address=merged["address"],
                port=merged["port"],
                user=merged["user"],
                identity_file=_expand(merged["identity_file"], base),
                known_hosts=_expand(merged["known_hosts"], base),
                labels=dict(merged["labels"]),
            )
        groups: dict[str, list[str]] = {}
        if "groups" in top:
            for gname, gknode, gnode in self.mapping(top["groups"][1], "groups"):
                if gname in hosts:
                    raise self.fail(gknode, f"group {gname!r} has the name of a host")
                if not isinstance(gnode, yaml.SequenceNode):
                    raise self.fail(gnode, f"group {gname!r} must be a list of host names")
                members = []
                for m in gnode.value:
                    hname = self.scalar(m, f"groups.{gname}", str)
                    if hname not in hosts:
                        raise self.fail(m, f"group {gname!r}: unknown host {hname!r}")
                    members.append(hname)
                groups[gname] = members
        return Inventory(path=self.path, hosts=hosts, groups=groups)


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return bool(HOSTNAME_RE.match(text))


def _expand(p: str, base: Path) -> Path:
    """`~` is the user's home; a relative path is relative to the inventory file."""
    path = Path(os.path.expanduser(p))
    return path if path.is_absolute() else (base / path)


def load(path: Path | str | None = None) -> Inventory:
    return _Loader(Path(path) if path is not None else default_path()).load()
