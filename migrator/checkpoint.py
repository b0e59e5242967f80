"""CRIU through Docker on one host: dump, restore, and what surrounds them.

Dumps go through runc directly (`runc checkpoint --image-path`), not `docker checkpoint
create`: Docker copies every page through containerd's content store on dump and again on
restore, which is most of the time at any real size. Restores go through Docker (`docker
start --checkpoint`) so the container stays a normal Docker container, with the memory
pages left where they are: the checkpoint directory Docker reads holds the small image
files and relative symlinks to the pages (Docker tars that directory; CRIU follows the
links from its image directory on the host).

The host-side halves are scripts in `migrator/host/` (dump.sh, held.sh, post-dump.sh,
release.sh, restore.sh, ...); this module builds their arguments and reads their results.
"""

from __future__ import annotations

import logging
import os

from . import hosts, hostscripts, shell
from .engine import Engine
from .errors import CheckpointError, MigratorError, tail
from .images import checkpoint_dir, in_tmpfs
from .layout import RUNC_CONF, RUNC_LOCK, hold_dir
from .locks import connection_opts, criu_argv, criu_result, criu_run
from .probes import runtime_root
from .transport import Host

log = logging.getLogger(__name__)

def dump_argv(host: Host, container_id: str, img: str, *, root: str, leave_running: bool = False,
              hold: tuple[str, int] | None = None, keep_connections: bool = False,
              address_moves: bool = False) -> list[str | int]:
    """argv that checkpoints the container's processes into `img` (CRIU images, 0600, and
    their MANIFEST). With `hold` (the operation id and the container's pid), the dump keeps
    the processes frozen once the images are complete, in a process of its own on the host,
    and the argv returns then: `release` later commits (they die) or aborts (they resume).
    `keep_connections`: established connections dumped as they are (locks.KEEP_CRIU_OPTS);
    `address_moves`: the address goes to the target, so the held source stops answering
    ARP for it (post-dump.sh)."""
    work = f"{os.path.dirname(img)}/criu-work"
    held = hold_dir(hold[0]) if hold else ""
    opts = [*connection_opts(keep_connections), *([f"action-script {held}/post-dump"] if hold else [])]
    dump = hostscripts.argv(host, "dump.sh", "--img", img, "--work", work, "--container", container_id,
                            "--root", root, *(["--leave-running"] if leave_running else []),
                            *[w for o in opts for w in ("--opt", o)])
    if not root:  # Docker's own checkpoint: it reads CRIU options from runc.conf only
        dump = criu_argv(host, dump, opts)
    if hold is None:
        return dump
    return hostscripts.argv(host, "held.sh", "--hold", held, "--pid", hold[1], "--img", img,
                            "--lock", RUNC_LOCK, "--conf", RUNC_CONF, *(["--address-moves"] if address_moves else []),
                            "--", *dump)


def dump(host: Host, container_id: str, img: str, *, root: str, leave_running: bool = False,
         hold: tuple[str, int] | None = None, keep_connections: bool = False, address_moves: bool = False) -> None:
    r = host.run(dump_argv(host, container_id, img, root=root, leave_running=leave_running, hold=hold,
                           keep_connections=keep_connections, address_moves=address_moves),
                 check=False, timeout=3600)
    try:
        criu_result(host, f"checkpoint of {container_id[:12]}", r)
    except MigratorError:
        if hold:
            release(host, hold[0], commit=False)
        repair(host, container_id)  # a dump that died part-way may have left it frozen and cut off
        raise


def release(host: Host, operation: str, *, commit: bool) -> int | None:
    """End the held dump of `operation`: commit (CRIU kills the frozen processes) or not
    (CRIU resumes them). Returns runc's status, None when no dump was held there. Safe to
    call again: a dump that ended keeps its status."""
    r = host.run(hostscripts.argv(host, "release.sh", "--hold", hold_dir(operation),
                                  "--verdict", "commit" if commit else "abort"), check=False, timeout=90)
    if not r.ok:
        raise CheckpointError(f"{host.name}: {r.stderr.strip() or 'releasing the held dump failed'}")
    return int(r.stdout.strip()) if r.stdout.strip().isdigit() else None


def repair(host: Host, container_id: str) -> None:
    """Undo what a dump that died part-way can leave on a container that is still "Up":
    frozen (a frozen process still completes TCP handshakes) and behind CRIU's network lock.
    Both steps are harmless on a healthy container."""
    info = Engine(host).inspect(container_id)
    if info and info["State"].get("Running"):
        thaw(host, container_id)
        unlock_network(host, int(info["State"].get("Pid") or 0))


def thaw(host: Host, container_id: str) -> None:
    """Resume a container a dead CRIU left frozen (runc's freezer); harmless when running."""
    root = runtime_root(host, container_id)
    if root:
        host.run(["runc", "--root", root, "resume", container_id], check=False)


def unlock_network(host: Host, pid: int) -> bool:
    """Remove a network lock CRIU left in the container's netns (a failed dump leaves the
    container "Up" but cut off). Returns True when one was found."""
    if pid <= 0:
        return False
    found = host.run(hostscripts.argv(host, "unlock-network.sh", "--pid", pid), check=False).ok
    if found:
        log.warning("%s: removed CRIU's leftover network lock in pid %d's namespace", host.name, pid)
    return found


def prepare_memory(host: Host, img: str, need_bytes: int) -> bool:
    """Before the freeze, put to use on the target the memory the restore will need (see
    prepare.sh): faulting in fresh memory is then no part of the downtime. Only when the
    host has that memory available twice and its tmpfs the room; returns whether it did."""
    mib = need_bytes // 1048576 + 1
    if not in_tmpfs(img) or hosts.free_bytes(host, "/dev/shm") < 2.5 * need_bytes:
        return False
    r = host.run(hostscripts.argv(host, "prepare.sh", "--img", img, "--mib", mib), check=False, timeout=600)
    if r.rc == 3:  # not worth an out-of-memory risk there: the restore allocates as it goes
        return False
    if not r.ok:
        host.run(["rm", "-f", f"{img}/pages-1.img", f"{img}/../reserve"], check=False)
        raise CheckpointError(f"{host.name}: could not set aside {mib} MiB for the restore: {tail(r.stderr)}",
                              hint="free memory there or pick another target")
    return True


def start_from_images(host: Host, engine: Engine, container_id: str, img: str, name: str,
                      options: list[str] | None = None, *, verify: bool = False, ports: list[int] | None = None,
                      wait: int = 30, pages: dict[str, int] | None = None, action: bool = True,
                      published: list[int] | None = None, keep_connections: bool = False,
                      address_moves: bool = False, addresses: list[str] | None = None) -> int:
    """`docker start --checkpoint` from the CRIU images in `img` (restore.sh), without
    copying the pages; with `verify`, only if they match their MANIFEST, and the pages files
    the sizes in `pages` (images.expected_pages); with `ports`, returns once the container
    accepts connections on them (fails after `wait` s). With `action`, CRIU runs
    restore-action.sh: clients are refused, not dropped, while it restores, and from the
    `published` host ports (TCP) while Docker sets the container up; with
    `keep_connections` (images dumped so) the connections are restored as they were, and
    their packets dropped, not refused, until then (on an engine that networks it only after
    the restore, its `addresses` stand in meanwhile); with `address_moves` the address is
    announced from here once restored. Returns the connections restored (kept ones)."""
    sizes = " ".join(f"{f}:{n}" for f, n in sorted((pages or {}).items()))
    action_script = f"action-script {hostscripts.installed(host)}/restore-action.sh"
    base = connection_opts(keep_connections) if options is None else options
    opts = [*base, *([action_script] if action else [])]
    restore = hostscripts.argv(
        host, "restore.sh", "--img", img, "--cpdir", checkpoint_dir(engine.docker_root, container_id, name),
        "--name", name, "--container", container_id, *(["--verify"] if verify else []), "--pages", sizes,
        *(["--action"] if action else []), "--published", " ".join(map(str, published or [])), "--wait", wait,
        *(["--at-create"] if hosts.restore_at_create(engine.server_version) else []),
        *(["--keep-connections"] if keep_connections else []), *(["--announce"] if address_moves else []),
        "--addresses", " ".join(addresses or []),
        "--", *(ports or []))
    said = criu_run(host, f"restore of {container_id[:12]}", restore, opts).split()
    return int(said[1]) if said[:1] == ["sockets"] and said[1:2] and said[1].isdigit() else 0


def pack_fs(host: Host, upper_dir: str, archive: str) -> None:
    """The container's own writable layer into a compressed tar (stored checkpoints, clones)."""
    host.run(shell.pipeline([*shell.TAR, "-C", upper_dir, "-cf", "-", "."], [*shell.ZSTD[:-1], "-f", "-o", archive]))


def unpack_fs(host: Host, archive: str, upper_dir: str) -> None:
    host.run(shell.pipeline([*shell.UNZSTD, archive], [*shell.TAR, "-C", upper_dir, "-xpf", "-"]))
