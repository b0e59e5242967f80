"""The host-side scripts (`migrator/host/*.sh`): installed on a host once per version,
then run from there.

A version is the hash of the scripts' contents, so a host keeps one directory per
migrator version that ever used it (`/var/lib/migrator/scripts/<hash>`, some 35 KB each)
and two controllers of different versions never run each other's scripts. The first
script a `Host` connection needs installs them (one command, when missing); every
operation needs some long before any freeze, so no install ever falls inside a downtime.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from functools import cache
from importlib import resources

from .layout import SCRIPTS_DIR
from .transport import Host

_INSTALLED = "scripts"  # the Host.facts key: the directory they were found or put in


@cache
def bundle() -> tuple[str, bytes]:
    """(version, tar of the scripts): the same bytes for the same scripts."""
    files = sorted((p.name, p.read_bytes()) for p in resources.files("migrator.host").iterdir()
                   if p.name.endswith(".sh"))
    version = hashlib.sha256(b"".join(n.encode() + b"\0" + d + b"\0" for n, d in files)).hexdigest()[:16]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o700, 0
            tar.addfile(info, io.BytesIO(data))
    return version, buf.getvalue()


def local_dir() -> str:
    """The scripts in this package, where they can run here (tests, and this machine)."""
    return str(resources.files("migrator.host"))


# DIR: leave it when complete; else unpack stdin into a temporary beside it and rename it
# into place (a concurrent install that renamed first wins; both are the same bytes).
_INSTALL = ('d=$1; [ -f "$d/.complete" ] && exit 0; umask 077; mkdir -p "${d%/*}"; '
            't=$(mktemp -d "$d.XXXXXX") && tar -x -C "$t" -f - && : > "$t/.complete" && '
            '{ mv -T "$t" "$d" 2>/dev/null || { rm -rf "$t"; [ -f "$d/.complete" ]; }; }')


def installed(host: Host) -> str:
    """The directory of this version's scripts on `host`, installed there if missing."""
    where = host.facts.get(_INSTALLED)
    if where is None:
        version, tar = bundle()
        where = f"{SCRIPTS_DIR}/{version}"
        host.run(["bash", "-c", _INSTALL, "install", where], stdin=tar)
        host.facts[_INSTALLED] = where
    return str(where)


def argv(host: Host, script: str, *args: str | int) -> list[str | int]:
    """argv that runs one of the scripts on `host` (installed there first if need be)."""
    return ["bash", f"{installed(host)}/{script}", *args]

