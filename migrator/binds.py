"""Bind mounts: host paths a container uses, moved one of two ways.

- `sync`: each bind source is copied to the same path on the target before the freeze, and
  its delta while frozen (files changed since the presync resent by content, as volumes'
  are). The path must not hold anything on the target yet (an empty directory will do):
  migrator never overwrites a host's own files. What it made there goes on rollback.
- `shared`: the path is the same storage on both hosts (NFS, a cluster filesystem); it is
  proven first: a marker written under it on the source must be read under it on the
  target, or the move is refused.

A clone takes them the same way (on its own host only `shared`: the copy mounts the same
path). A stored checkpoint keeps a copy of each with `sync` (`pack`), which a restore puts
back only where the path is missing or empty; with `shared` it keeps only the paths, which
must be there where it is restored.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from . import shell
from .errors import MigratorError
from .transport import Host

if TYPE_CHECKING:
    from .transfer import Link

MODES = ("sync", "shared")


def check_mode(mode: str | None) -> str | None:
    if mode not in (None, *MODES):
        raise MigratorError(f"--bind-mounts {mode!r}: expected one of {', '.join(MODES)}")
    return mode


def refusal(binds: list[dict[str, Any]]) -> str:
    return ("host paths " + ", ".join(m["Source"] for m in binds) + " are bind-mounted: pass --bind-mounts sync "
            "(copied to the same paths on the target, their delta while frozen) or --bind-mounts shared (the same "
            "storage on both hosts, proven first)")


def is_dir(host: Host, path: str) -> bool:
    return host.ok(["test", "-d", path])


def sync_blocker(dst: Host, path: str) -> str | None:
    """Why `path` cannot receive a copy on dst (it holds something already), or None."""
    r = dst.run(["bash", "-c", '[ ! -e "$1" ] || { [ -d "$1" ] && [ -z "$(ls -A "$1")" ]; }', "_", path], check=False)
    if r.ok:
        return None
    return (f"{path} exists on {dst.name} and is not empty; migrator does not overwrite a host's own files: "
            "remove or move it there, or use --bind-mounts shared if it is the same storage")


def shared_proof(src: Host, dst: Host, path: str) -> str | None:
    """None when `path` is the same storage on both hosts (a marker written under it on src
    is read under it on dst), else why not. The marker is removed either way."""
    where = path if is_dir(src, path) else path.rsplit("/", 1)[0] or "/"
    marker, token = f"{where}/.migrator-shared-{secrets.token_hex(6)}", secrets.token_hex(16)
    try:
        src.put(token.encode(), marker, 0o600)
    except (MigratorError, OSError) as ex:
        return f"cannot write a marker under {where} on {src.name} to prove it is shared: {ex}"
    try:
        seen = dst.run(["cat", marker], check=False)
    finally:
        src.run(["rm", "-f", marker], check=False)
    if seen.ok and seen.stdout == token:
        return None
    return (f"{where} is not the same storage on {dst.name} (a marker written there on {src.name} is not seen "
            f"on {dst.name}); mount the shared storage at that path on both, or use --bind-mounts sync")


def first_missing(dst: Host, path: str) -> str | None:
    """The topmost ancestor of `path` (or itself) that does not exist on dst: what a copy
    makes there, and a rollback removes."""
    r = dst.run(["bash", "-c", 'p=$1; m=; while [ -n "$p" ] && [ ! -e "$p" ]; do m=$p; p=${p%/*}; done; '
                 'printf %s "$m"', "_", path.rstrip("/")], check=False)
    return r.stdout or None


def unmake(host: Host, path: str, check: bool = True) -> None:
    """Remove what a copy made at `path` (as `first_missing` named it), on its filesystem only."""
    host.run(["rm", "-rf", "--one-file-system", "--", path], check=check)


def send(link: Link, path: str) -> tuple[bool, int]:
    """Copy bind source `path` to the same path on the link's target (made there as needed;
    `first_missing` says beforehand what that makes). Returns (it is a file, bytes sent)."""
    file = not is_dir(link.src, path)
    link.dst.run(["mkdir", "-p", path.rsplit("/", 1)[0] if file else path])
    return file, link.sync_dir(path, path, file=file)


def pack(host: Host, path: str, archive: str) -> None:
    """A bind source (directory or file) into a compressed tar, owners and modes kept."""
    parent, name = path.rstrip("/").rsplit("/", 1)
    host.run(shell.pipeline([*shell.TAR, "-C", parent or "/", "-cf", "-", name],
                            [*shell.ZSTD[:-1], "-f", "-o", archive]))


def unpack(host: Host, archive: str, path: str) -> None:
    """`pack`'s archive back at `path` (which must be missing, or an empty directory)."""
    parent = path.rstrip("/").rsplit("/", 1)[0] or "/"
    host.run(["mkdir", "-p", parent])
    host.run(shell.pipeline([*shell.UNZSTD, archive], [*shell.TAR, "-C", parent, "-xpf", "-"]))


def refusals(src: Host, dst: Host | None, mounts: list[dict[str, Any]], mode: str | None) -> list[str]:
    """Why the bind mounts cannot go the way `mode` says to dst (None: the same host, as a
    clone there or a checkpoint is), or nothing."""
    if not mounts:
        return []
    if mode is None:
        return [refusal(mounts)]
    if dst is None:
        return []
    found = [sync_blocker(dst, m["Source"]) if mode == "sync" else shared_proof(src, dst, m["Source"])
             for m in mounts]
    return [why for why in found if why]
