"""A checkpoint's CRIU images on a host: where they go, their checksums, and what CRIU's
pagemap images say the memory pages files must measure."""

from __future__ import annotations

from . import hostscripts
from .errors import CheckpointError
from .hosts import free_bytes
from .layout import SHM_DIR, shm_dir, workdir
from .transport import Host


def make_workdir(host: Host, operation: str) -> str:
    """The operation's work dir and tmpfs image dir on the host (0700: they hold memory)."""
    directory = workdir(operation)
    host.run(["bash", "-c", 'umask 077; mkdir -p "$1" "$2" && chmod 0700 "$1" "$(dirname "$1")" "$2"', "_",
              directory, shm_dir(operation)])
    return directory


def remove_workdir(host: Host, operation: str) -> None:
    """The work dir and the tmpfs image dir of one operation (they hold process memory)."""
    host.run(["rm", "-rf", "--one-file-system", workdir(operation), shm_dir(operation)], check=False)


def image_dir(host: Host, operation: str, need_bytes: int) -> str:
    """Where the CRIU images go: tmpfs when it has room (1.5x), else the work dir on disk."""
    free = free_bytes(host, "/dev/shm")
    return f"{shm_dir(operation)}/img" if free > need_bytes * 1.5 else f"{workdir(operation)}/img"


def in_tmpfs(directory: str) -> bool:
    return directory.startswith(SHM_DIR + "/")


def checkpoint_dir(docker_root: str, container_id: str, name: str) -> str:
    """Where Docker looks for a container's checkpoint NAME."""
    return f"{docker_root}/containers/{container_id}/checkpoints/{name}"


def manifest(host: Host, directory: str) -> None:
    """Write MANIFEST: a CRC of every file (cheap at GB/s; SSH already authenticates the
    bytes, this catches what breaks on either disk or in our own copying)."""
    host.run(hostscripts.argv(host, "manifest.sh", "--dir", directory))


def verify_argv(host: Host, directory: str) -> list[str | int]:
    """argv that fails unless directory matches its MANIFEST (run on `host`, which has it)."""
    return hostscripts.argv(host, "manifest.sh", "--dir", directory, "--verify")


def verify_manifest(host: Host, directory: str) -> None:
    r = host.run(verify_argv(host, directory), check=False)
    if not r.ok:
        raise CheckpointError(f"{host.name}: {r.stderr.strip() or 'checksum check of ' + directory + ' failed'}")


# --- CRIU's pagemap images ---------------------------------------------------------------
PE_PARENT, PE_PRESENT = 1, 4  # CRIU's pagemap entry flags (criu/include/pagemap.h)


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    v = shift = 0
    while True:
        b = buf[i]
        i += 1
        v |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return v, i


def _fields(msg: bytes) -> dict[int, int]:
    """The varint fields of a protobuf message (all a CRIU pagemap entry needs), by number."""
    out, i = {}, 0
    while i < len(msg):
        key, i = _varint(msg, i)
        kind = key & 7
        if kind == 0:
            out[key >> 3], i = _varint(msg, i)
        elif kind == 2:
            n, i = _varint(msg, i)
            i += n
        else:
            i += 8 if kind == 1 else 4
    return out


def pages_size(pagemap: bytes) -> tuple[int, int]:
    """(pages file id, its size in bytes) from a CRIU pagemap image: two magic words, then
    messages behind their 32-bit length: a head naming the pages-<id>.img, then one entry per
    run of pages (nr_pages, field 5, or the older field 2; in the file when PRESENT)."""
    msgs, i = [], 8
    while i + 4 <= len(pagemap):
        n = int.from_bytes(pagemap[i:i + 4], "little")
        msgs.append(_fields(pagemap[i + 4:i + 4 + n]))
        i += 4 + n
    if not msgs:
        raise ValueError("no pagemap head")
    size = 0
    for entry in msgs[1:]:
        flags = entry.get(4, PE_PARENT if entry.get(3) else PE_PRESENT)
        if flags & PE_PRESENT:
            size += entry.get(5, entry.get(2, 0)) * 4096
    return msgs[0].get(1, 0), size


def expected_pages(pagemaps: list[bytes]) -> dict[str, int]:
    """{pages file name: size} from a checkpoint's CRIU pagemap images: what the pages files
    must measure on the target. Streamed pages are in no MANIFEST, and pages cut short on the
    way would make CRIU's restore spin, not fail (restore.sh checks them)."""
    want: dict[str, int] = {}
    for pm in pagemaps:
        try:
            pages_id, size = pages_size(pm)
        except (ValueError, IndexError) as ex:
            raise CheckpointError(f"a pagemap image of the checkpoint cannot be read ({ex}); not restoring "
                                  "from it") from ex
        if size:
            want[f"pages-{pages_id}.img"] = want.get(f"pages-{pages_id}.img", 0) + size
    return want
