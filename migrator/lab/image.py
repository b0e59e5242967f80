"""The lab's Redis image, made from this machine's redis-server (no registry exists here):
imported once and saved, so that every host loads the same image ID."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from .processes import run

IMAGE = "lab/redis"
Exec = Callable[..., object]  # runs argv inside one lab host (Lab.ns_exec bound to it)


def build(rootfs: Path) -> bytes:
    """A root filesystem of redis-server, the libraries ldd names and a static busybox, as
    a tar stream for `docker import`."""
    redis = shutil.which("redis-server") or "/usr/bin/redis-server"
    busybox = shutil.which("busybox") or "/bin/busybox"
    if rootfs.exists():
        shutil.rmtree(rootfs)
    libs = [redis]
    for line in run(["ldd", redis]).stdout.splitlines():
        path = next((p for p in line.split() if p.startswith("/")), None)
        if path:
            libs.append(path)
    for f in libs:
        dest = rootfs / f.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(f), dest)
    (rootfs / "bin").mkdir(exist_ok=True)
    shutil.copy2(busybox, rootfs / "bin" / "busybox")
    for tool in ("sh", "ls", "cat", "sleep", "echo", "nc", "mkdir", "rm", "sync"):
        os.symlink("busybox", rootfs / "bin" / tool)
    for d in ("tmp", "data", "etc"):
        (rootfs / d).mkdir(exist_ok=True)
    (rootfs / "tmp").chmod(0o1777)
    (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    tarball = run(["tar", "-C", str(rootfs), "-c", "."], text=False)  # type: ignore[arg-type]
    shutil.rmtree(rootfs)
    return tarball.stdout  # type: ignore[return-value]


CHANGES = [
    'CMD ["/usr/bin/redis-server", "--protected-mode", "no", "--save", "", "--appendonly", "no"]',
    "EXPOSE 6379", "WORKDIR /data", "ENV PATH=/usr/bin:/bin",
]


def import_argv() -> list[str]:
    argv = ["docker", "import"]
    for c in CHANGES:
        argv += ["--change", c]
    return [*argv, "-", IMAGE]
