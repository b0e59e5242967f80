"""The lab's images, made from this machine's own binaries (no registry exists here):
imported once and saved, so that every host loads the same image ID. lab/redis (root-run
Redis) on every host; lab/postgres (PostgreSQL 15 as its own user, uid 999: a multi-process
database with shared memory) and lab/nginx (nginx as www-data, uid 33: a master and its
worker processes, its configuration bind-mounted from the host) and lab/udp (a UDP service
counting the datagrams it answered, udp-counter.c built static here) where a test asks for
them (`Lab.ensure_image`)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from .processes import run

IMAGE = "lab/redis"
POSTGRES = "lab/postgres"
NGINX = "lab/nginx"
UDP = "lab/udp"
PG = Path("/usr/lib/postgresql/15")
NGINX_BIN = Path("/var/cache/migrator/nginx/root/usr/sbin/nginx")  # Debian 12's, unpacked by setup
Exec = Callable[..., object]  # runs argv inside one lab host (Lab.ns_exec bound to it)


def _copy_with_libs(rootfs: Path, binaries: list[str]) -> None:
    """binaries into rootfs at their paths, with every library ldd names for them."""
    files = list(binaries)
    for b in binaries:
        for line in run(["ldd", b]).stdout.splitlines():
            path = next((p for p in line.split() if p.startswith("/")), None)
            if path and path not in files:
                files.append(path)
    for f in files:
        dest = rootfs / f.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(f), dest)


def _busybox(rootfs: Path, tools: tuple[str, ...]) -> None:
    (rootfs / "bin").mkdir(exist_ok=True)
    shutil.copy2(shutil.which("busybox") or "/bin/busybox", rootfs / "bin" / "busybox")
    for tool in tools:
        os.symlink("busybox", rootfs / "bin" / tool)


def _tar(rootfs: Path) -> bytes:
    tarball = run(["tar", "-C", str(rootfs), "-c", "."], text=False)  # type: ignore[arg-type]
    shutil.rmtree(rootfs)
    return tarball.stdout  # type: ignore[return-value]


def build(rootfs: Path) -> bytes:
    """A root filesystem of redis-server, the libraries ldd names and a static busybox, as
    a tar stream for `docker import`."""
    if rootfs.exists():
        shutil.rmtree(rootfs)
    _copy_with_libs(rootfs, [shutil.which("redis-server") or "/usr/bin/redis-server"])
    _busybox(rootfs, ("sh", "ls", "cat", "sleep", "echo", "nc", "mkdir", "rm", "sync"))
    for d in ("tmp", "data", "etc"):
        (rootfs / d).mkdir(exist_ok=True)
    (rootfs / "tmp").chmod(0o1777)
    (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    return _tar(rootfs)


def build_postgres(rootfs: Path) -> bytes:
    """PostgreSQL 15 from this machine (postgres, initdb, their modules and share files,
    UTC's zone file), run as postgres (uid 999) with its data in /var/lib/postgresql/data."""
    if rootfs.exists():
        shutil.rmtree(rootfs)
    modules = sorted(str(p) for p in (PG / "lib").glob("*.so") if p.name != "llvmjit.so")
    _copy_with_libs(rootfs, [str(PG / "bin" / "postgres"), str(PG / "bin" / "initdb"), *modules])
    shutil.copytree("/usr/share/postgresql/15", rootfs / "usr/share/postgresql/15")
    (rootfs / "usr/share/zoneinfo").mkdir(parents=True)
    shutil.copy2("/usr/share/zoneinfo/UTC", rootfs / "usr/share/zoneinfo/UTC")
    _busybox(rootfs, ("sh", "ls", "cat", "sleep", "mkdir", "rm", "head"))
    for d in ("tmp", "etc", "var/lib/postgresql/data"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    (rootfs / "tmp").chmod(0o1777)
    (rootfs / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                       "postgres:x:999:999::/var/lib/postgresql:/bin/sh\n")
    (rootfs / "etc/group").write_text("root:x:0:\npostgres:x:999:\n")
    for d in ("var/lib/postgresql", "var/lib/postgresql/data"):
        os.chown(rootfs / d, 999, 999)
    (rootfs / "var/lib/postgresql/data").chmod(0o700)
    return _tar(rootfs)


def build_nginx(rootfs: Path) -> bytes:
    """nginx (Debian 12's, with its stub_status counters in shared memory) and busybox, for
    www-data (uid 33); the configuration is the container's to mount at /etc/nginx/nginx.conf."""
    if rootfs.exists():
        shutil.rmtree(rootfs)
    if not NGINX_BIN.exists():
        raise FileNotFoundError(f"{NGINX_BIN} is missing: `make setup` unpacks it")
    _copy_with_libs(rootfs, [str(NGINX_BIN)])
    (rootfs / "usr/sbin").mkdir(parents=True, exist_ok=True)
    os.replace(rootfs / str(NGINX_BIN).lstrip("/"), rootfs / "usr/sbin/nginx")
    shutil.rmtree(rootfs / "var")
    _busybox(rootfs, ("sh", "ls", "cat", "sleep", "awk", "tr"))
    for d in ("tmp", "etc/nginx", "var/www"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    (rootfs / "tmp").chmod(0o1777)
    (rootfs / "var/www/index.html").write_text("hello from lab/nginx\n")
    (rootfs / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33::/var/www:/bin/sh\n")
    (rootfs / "etc/group").write_text("root:x:0:\nwww-data:x:33:\n")
    return _tar(rootfs)


def build_udp(rootfs: Path) -> bytes:
    """udp-counter, compiled static from its source beside this file, and busybox."""
    if rootfs.exists():
        shutil.rmtree(rootfs)
    (rootfs / "usr/bin").mkdir(parents=True)
    run(["gcc", "-static", "-O2", "-o", str(rootfs / "usr/bin/udp-counter"),
         str(Path(__file__).with_name("udp-counter.c"))])
    _busybox(rootfs, ("sh", "sleep"))
    (rootfs / "tmp").mkdir(mode=0o1777)
    return _tar(rootfs)


CHANGES = [
    'CMD ["/usr/bin/redis-server", "--protected-mode", "no", "--save", "", "--appendonly", "no"]',
    "EXPOSE 6379", "WORKDIR /data", "ENV PATH=/usr/bin:/bin",
]
# first start: a cluster (trusting every client: a lab) in the volume; then the server
_PG_START = ('[ -s "$PGDATA/PG_VERSION" ] || { initdb -D "$PGDATA" -U postgres --auth=trust -E UTF8 --locale=C '
             '>/dev/null && echo "host all all all trust" >> "$PGDATA/pg_hba.conf"; }; '
             'exec postgres -D "$PGDATA" -c listen_addresses=* -c unix_socket_directories=/tmp')
POSTGRES_CHANGES = ["ENV PATH=/usr/lib/postgresql/15/bin:/bin", "ENV PGDATA=/var/lib/postgresql/data",
                    "ENV TZ=UTC", "USER postgres", "EXPOSE 5432", "CMD " + json.dumps(["sh", "-c", _PG_START])]
NGINX_CHANGES = ["ENV PATH=/usr/sbin:/bin", "USER www-data", "EXPOSE 8080",
                 'CMD ["nginx", "-e", "stderr", "-g", "daemon off;"]']
UDP_CHANGES = ["EXPOSE 5353/udp", 'CMD ["/usr/bin/udp-counter", "5353"]']
BUILDS = {IMAGE: (build, CHANGES), POSTGRES: (build_postgres, POSTGRES_CHANGES),
          NGINX: (build_nginx, NGINX_CHANGES), UDP: (build_udp, UDP_CHANGES)}


def import_argv(name: str = IMAGE) -> list[str]:
    argv = ["docker", "import"]
    for c in BUILDS[name][1]:
        argv += ["--change", c]
    return [*argv, "-", name]
