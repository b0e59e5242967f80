"""Moving bytes between two hosts: straight from source to target over SSH with a
single-use key, or relayed through the controller when the hosts cannot reach each other.

Directories travel as `tar | zstd` streams; on a direct link every stream of one step runs
at once in one command on the source (transfer.sh), through one multiplexed connection.
The single-use key can do one thing: hand what comes to receive.sh on the target (its
forced command), which writes only in this transfer's places: its work dirs, and each
directory or file the controller named for it beforehand, over its own session (`place`).
The key is restricted to the source's address, expires by itself, and is removed from both
hosts when the link closes (also on failure); the source verifies the target's host key
from the inventory's known_hosts.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from . import hostscripts, shell
from .engine import Engine
from .errors import CommandError, TransferError, tail
from .images import expected_pages
from .layout import shm_dir, transfer_places, workdir
from .transport import CommandResult, Host, relay

log = logging.getLogger(__name__)
KEY_TTL_S = 3600
Progress = Callable[[int], None]

_PROGRESS = re.compile(r"^J(\w+) (\d+) bytes")
_NAME = re.compile(r"^[\w.+@-]+$")  # a file place's name: rsync takes it as a pattern
_JOB_LINE = re.compile(r"^J\w+ ")  # what dd says of a job: counts, not errors
DUMPED = "migrator: dumped"  # said by transfer.sh on stderr when the dump is complete
PAGEMAP = "migrator: pagemap "  # and before it, each of its pagemap images (base64) behind this


@dataclass
class Job:
    producer: list[list[str]]
    request: list[str]  # what receive.sh on the target does with it: untar, write, pages
    compress: bool = True


def worth_compressing(raw: int, packed: int, seconds: float, link_bps: float) -> bool:
    """Compress when it saves bytes and the compressor outruns the link: pipelined, the copy
    then takes max(size/compressor, size*ratio/link) instead of size/link. From a sample of
    the pages (random data does not shrink; a Redis of text shrinks a lot)."""
    if raw <= 0 or link_bps <= 0:
        return True
    ratio = packed / raw
    speed = raw / seconds if seconds > 0 else float("inf")
    return ratio < 0.9 and speed > 1.2 * link_bps * ratio


def tar_job(src_dir: str, dst_dir: str, *, verify: bool = False, compress: bool = True, exclude: str = "") -> Job:
    """Copy the contents of src_dir into dst_dir (which must exist); with `verify`, it must
    then match its MANIFEST there."""
    return Job([[*shell.TAR, "-C", src_dir, *([f"--exclude={exclude}"] if exclude else []), "-cf", "-", "."]],
               ["untar", dst_dir, *(["verify"] if verify else [])], compress)


@dataclass
class Link:
    """A way to move data from `src` to `dst`, opened with `open_link`."""

    src: Host
    dst: Host
    operation: str
    workdir: str
    direct: bool = False
    _key_path: str = ""
    _known_hosts: str = ""
    bytes_sent: int = 0
    bps: float = 0.0  # measured throughput of the direct path
    places: list[tuple[str, str]] = field(default_factory=list)  # where the key writes (receive.sh)

    def _ssh_argv(self) -> list[str]:
        s = self.dst.spec
        return ["ssh", "-i", self._key_path, "-o", f"UserKnownHostsFile={self._known_hosts}",
                "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
                "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=10",
                "-o", f"ControlPath={self.workdir}/ctl",
                "-o", "Ciphers=aes128-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr",
                "-p", str(s.port), "-l", s.user, s.address]

    def place(self, kind: str, path: str) -> int:
        """Let the key write at `path` on the target (receive.sh's `dir` or `file`), told
        to the target over the controller's own session when it is new; returns its line
        (rsync's module mN). Work dirs are places from the start; naming the others before
        the freeze keeps this round trip out of it."""
        if (kind, path) not in self.places:
            if not path.startswith("/") or "\n" in path or (kind == "file" and not _NAME.match(path.rsplit("/", 1)[1])):
                raise TransferError(f"{self.dst.name}: cannot receive at {path!r} over a transfer key",
                                    hint="a copied file's name is letters, digits and ._+@- only")
            self.places.append((kind, path))
            if self._key_path:
                self._tell_places()
        return self.places.index((kind, path))

    def _tell_places(self) -> None:
        lines = "".join(f"{k} {p}\n" for k, p in self.places)
        self.dst.run(["bash", "-c", 'umask 077; mkdir -p "${1%/*}" && printf %s "$2" > "$1.new" && mv -f "$1.new" "$1"',
                      "_", transfer_places(self.operation), lines])

    def _in_work(self, path: str) -> bool:
        return any(path == p or path.startswith(p + "/") for k, p in self.places if k == "tree")

    def _remote(self, request: list[str], compress: bool) -> str:
        """The key's command for `request` (its Z, compressed or not, after the verb), at a
        place of this transfer's."""
        if request[0] == "untar" and not self._in_work(request[1]):
            self.place("dir", request[1])
        assert request[0] == "untar" or self._in_work(request[1]), request
        return shell.request(_words(request, compress))

    def check(self, what: str, r: CommandResult) -> None:
        if not r.ok:
            raise TransferError(f"{what}: {self.src.name} -> {self.dst.name} failed on {r.host}: "
                                f"{tail(r.stderr, 3, 300)}")

    def pipe(self, producer: list[list[str]], request: list[str], what: str, progress: Progress | None = None) -> int:
        """Run producer stages on src into receive.sh's `request` on dst, compressed on the
        wire; returns the bytes that crossed it."""
        return self.pipes([Job(producer, request)], what, progress)

    def _transfer_argv(self, jobs: list[tuple[str, Job]], *follow: str | int) -> list[str | int]:
        """transfer.sh on the source, sending each job (and with `follow`, a dump's pages)."""
        argv = hostscripts.argv(self.src, "transfer.sh", "--ssh", shell.join(self._ssh_argv()),
                                "--zstd", shell.join(shell.ZSTD))
        for name, job in jobs:
            argv += ["--job", name, "--producer", " | ".join(shell.join(c) for c in job.producer),
                     "--remote", self._remote(job.request, job.compress), "--compress", int(job.compress)]
        return argv + list(follow)

    def _run_transfer(self, argv: list[str | int], progress: Progress | None,
                      on_line: Callable[[str], None] | None = None) -> tuple[CommandResult, int]:
        """Run transfer.sh on the source, reporting its jobs' bytes as they go; returns its
        result and the bytes that crossed the wire."""
        seen: dict[str, int] = {}

        def line(text: str) -> None:
            m = _PROGRESS.match(text)
            if m and int(m.group(2)) > seen.get(m.group(1), 0):
                n = int(m.group(2))
                if progress:
                    progress(n - seen.get(m.group(1), 0))
                seen[m.group(1)] = n
            elif on_line:
                on_line(text)

        r = self.src.stream(argv, line)
        r = dataclasses.replace(r, stderr="\n".join(x for x in r.stderr.splitlines() if not _JOB_LINE.match(x)
                                                    and x != DUMPED and not x.startswith(PAGEMAP)))
        sent = sum(seen.values())
        self.bytes_sent += sent
        return r, sent

    def pipes(self, jobs: list[Job], what: str, progress: Progress | None = None) -> int:
        """Several pipes at once: in one command on the source when direct (one round trip
        from here, the copies in parallel), one after the other when relayed."""
        if self.direct:
            r, sent = self._run_transfer(self._transfer_argv([(f"j{i}", j) for i, j in enumerate(jobs)]), progress)
            self.check(what, r)
            return sent
        sent = 0  # through this machine, usually a slower path: always compressed
        for j in jobs:
            n, rs, rd = relay(self.src.open(shell.pipeline(*j.producer, shell.ZSTD)),
                              self.dst.open(hostscripts.argv(self.dst, "receive.sh", "--", *_words(j.request, True))),
                              progress)
            for r in (rs, rd):
                self.check(what, r)
            sent += n
        self.bytes_sent += sent
        return sent

    def dump_and_send(self, dump: list[str | int], src_img: str, dst_img: str, after: list[Job], *,
                      compress: bool, progress: Progress | None = None,
                      on_dumped: Callable[[], None] | None = None) -> tuple[CommandResult, int, dict[str, int]]:
        """Run `dump` (argv writing CRIU images into src_img) on the source and send the
        memory pages to dst_img while they are written: the copy runs during the dump, not
        after it. Then the other image files and the `after` jobs. The MANIFEST goes along;
        checking against it, and the pages files against the sizes returned here (from CRIU's
        pagemaps), is the restore's first step (checkpoint.start_from_images). Direct links
        only. Returns the dump's result when it failed (nothing else is sent), else the whole
        result, the bytes sent and the pages files' sizes."""
        assert self.direct
        jobs = [("small", tar_job(src_img, dst_img, exclude="pages-*.img", compress=compress)),
                *((f"a{i}", j) for i, j in enumerate(after))]
        pages_writer = self._remote(["pages", f"{dst_img}/pages-1.img", *([] if compress else ["p1"])], compress)
        argv = self._transfer_argv(jobs, "--follow-img", src_img, "--follow-dst", shell.request([dst_img]),
                                   "--pages-writer", pages_writer, *([] if compress else ["--raw-pages"]),
                                   "--dumped", DUMPED, "--pagemap", PAGEMAP, "--", *dump)
        pagemaps: list[bytes] = []

        def line(text: str) -> None:
            if text.startswith(PAGEMAP):
                pagemaps.append(base64.b64decode(text[len(PAGEMAP):]))
            elif text == DUMPED and on_dumped:
                on_dumped()

        r, sent = self._run_transfer(argv, progress, line)
        return r, sent, expected_pages(pagemaps)

    def copy_dirs(self, pairs: list[tuple[str, str, bool]], progress: Progress | None = None) -> int:
        """Copy the contents of each src dir into its dst dir (which must exist); where the
        flag is set, the receiving side checks the copy against its MANIFEST to succeed."""
        jobs = [tar_job(s, d, verify=verify) for s, d, verify in pairs]
        return self.pipes(jobs, "copy " + ", ".join(s for s, _, _ in pairs), progress)

    def copy_dir(self, src_dir: str, dst_dir: str, progress: Progress | None = None, verify: bool = False) -> int:
        return self.copy_dirs([(src_dir, dst_dir, verify)], progress)

    def measure(self, mib: int = 128) -> float:
        """The direct path's throughput in bytes/s: `mib` MiB of zeros, less the time an ssh
        connection takes to set up, measured alongside."""
        if not self.direct:
            return 0.0
        r = self.src.run(hostscripts.argv(self.src, "measure-link.sh", "--ssh", shell.join(self._ssh_argv()),
                                          "--mib", int(mib)), check=False, timeout=120)
        parts = r.stdout.split()
        if r.ok and len(parts) == 2 and int(parts[1]) > int(parts[0]):
            self.bps = mib * 1048576 / ((int(parts[1]) - int(parts[0])) / 1e9)
        return self.bps

    def sync_dir(self, src_dir: str, dst_dir: str, changed_since: float | None = None, *,
                 file: bool = False) -> int:
        """Make dst_dir equal src_dir (rsync, deltas only) when direct; a full copy if relayed.
        With `changed_since` (the source's clock, seconds), every file changed since then is
        also resent by content (resync.sh): exact even where rsync's quick check is not.
        With `file`, both are one file (a file bind-mounted), sent by content when
        `changed_since` is given."""
        if not self.direct:
            if file:  # by tar: its owner and mode with it
                (src_parent, name), dst_parent = src_dir.rsplit("/", 1), dst_dir.rsplit("/", 1)[0]
                self.dst.run(["mkdir", "-p", dst_parent or "/"])
                return self.pipe([[*shell.TAR, "-C", src_parent or "/", "-cf", "-", name]],
                                 ["untar", dst_parent or "/"], f"copy {src_dir}")
            self.dst.run(["find", dst_dir, "-mindepth", "1", "-delete"])
            return self.copy_dir(src_dir, dst_dir)
        # rsync -e takes the ssh command without host; the key runs an rsync daemon whose
        # module mN is the place N, chrooted there
        ssh = shell.join(self._ssh_argv()[:-1])
        if file:
            module = f"{self.dst.spec.address}::m{self.place('file', dst_dir)}/{dst_dir.rsplit('/', 1)[1]}"
            argv: list[str | int] = ["rsync", "-aHAX", "--numeric-ids", "--stats", "-e", ssh,
                                     *(["--ignore-times"] if changed_since is not None else []), src_dir, module]
            return self._rsync([argv], src_dir, dst_dir)
        dest = f"{self.dst.spec.address}::m{self.place('dir', dst_dir.rstrip('/') or '/')}/"
        runs: list[list[str | int]] = [["rsync", "-aHAX", "--numeric-ids", "--delete", "--stats", "-e", ssh,
                                        src_dir.rstrip("/") + "/", dest]]
        if changed_since is not None:
            runs.append(hostscripts.argv(self.src, "resync.sh", "--src", src_dir, "--dest", dest, "--ssh", ssh,
                                         "--since", f"{changed_since:.3f}"))
        return self._rsync(runs, src_dir, dst_dir)

    def _rsync(self, runs: list[list[str | int]], src_dir: str, dst_dir: str) -> int:
        """Run rsync commands on the source; the bytes they sent."""
        sent = 0
        for argv in runs:
            r = self.src.run(argv, check=False, timeout=None)
            if not r.ok:
                raise TransferError(f"rsync {self.src.name}:{src_dir} -> {self.dst.name}:{dst_dir} failed:"
                                    f" {tail(r.stderr, 3, 300)}")
            for line in r.stdout.splitlines():
                if line.startswith("Total bytes sent:"):
                    sent += int(line.split(":")[1].strip().replace(",", ""))
        self.bytes_sent += sent
        return sent

    def close(self) -> None:
        """Remove the single-use key from both hosts. Safe to call more than once."""
        if not self.direct and not self._key_path:
            return
        remove_key(self.dst, self.operation)
        stop_master(self.src, self.workdir)
        self.src.run(["rm", "-f", self._key_path, self._known_hosts], check=False)
        self._key_path = ""
        self.direct = False


def _words(request: list[str], compress: bool) -> list[str | int]:
    """receive.sh's words for `request`: its Z (1: compressed) after the verb."""
    return [request[0], int(compress), *request[1:]]


def key_comment(operation: str) -> str:
    return f"migrator-transfer-{operation}"


def stop_master(host: Host, directory: str) -> None:
    """End the source's multiplexing ssh master of this transfer, if one runs."""
    host.run(["bash", "-c", '[ ! -S "$1/ctl" ] || ssh -o ControlPath="$1/ctl" -O exit migrator-target 2>/dev/null',
              "_", directory], check=False)


def remove_key(host: Host, operation: str) -> None:
    """Drop the single-use key of `operation` from host's authorized_keys, and its places."""
    remove = shell.join(hostscripts.argv(host, "authorized-keys.sh", "remove", "--comment", key_comment(operation)))
    host.run(["bash", "-c", remove + '; rm -f -- "$1" "$1".rsyncd.*', "_", transfer_places(operation)], check=False)


def open_link(src: Host, dst: Host, operation: str, source_workdir: str, *, relay_only: bool = False) -> Link:
    """Try the direct path (source -> target SSH with a single-use key); fall back to relay.
    The target's places start as the operation's work dirs there."""
    link = Link(src, dst, operation, source_workdir)
    if relay_only:
        return link
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    host_key = _target_host_key(dst)
    if host_key is None:
        log.info("%s: no host key for the target in known_hosts; relaying", dst.name)
        return link
    expiry = time.strftime("%Y%m%d%H%M", time.gmtime(time.time() + KEY_TTL_S))
    receive = f"{hostscripts.installed(dst)}/receive.sh --allow {transfer_places(operation)}"
    assert re.fullmatch(r"[\w./+ -]+", receive), receive  # inside command="..."
    opts = f'restrict,command="bash {receive}",from="{src.spec.address}",expiry-time="{expiry}Z"'
    line = f"{opts} {public} {key_comment(operation)}"
    link._key_path = f"{source_workdir}/transfer_key"
    link._known_hosts = f"{source_workdir}/known_hosts"
    link.places = [("tree", workdir(operation)), ("tree", shm_dir(operation))]
    src.put(private, link._key_path, 0o600)
    src.put(host_key.encode(), link._known_hosts, 0o600)
    link._tell_places()
    dst.run(hostscripts.argv(dst, "authorized-keys.sh", "add", "--line", line))
    try:
        # One ssh connection for every copy of this transfer (no handshake in the freeze
        # window): a master in the background, its stdio detached so this command returns.
        ssh = link._ssh_argv()
        r = src.run(["bash", "-c", shell.join([*ssh[:-1], "-M", "-f", "-N", "-o", "ControlPersist=600", ssh[-1]])
                     + " </dev/null >/dev/null 2>&1; " + shell.join([*ssh, "true"])], check=False, timeout=30)
    except CommandError:
        r = None
    if r is not None and r.ok:
        link.direct = True
    else:
        why = tail(r.stderr, 2, 200) if r is not None else "timed out"
        log.info("%s cannot reach %s directly (%s); relaying through the controller", src.name, dst.name, why)
        remove_key(dst, operation)
        src.run(["rm", "-f", link._key_path, link._known_hosts], check=False)
        link._key_path = ""
    return link


def _target_host_key(dst: Host) -> str | None:
    """The target's host key line as the controller pinned it (never learnt on the fly)."""
    s = dst.spec
    keys = paramiko.HostKeys(str(s.known_hosts))
    name = s.address if s.port == 22 else f"[{s.address}]:{s.port}"
    entry = keys.lookup(name)
    if not entry:
        return None
    return "".join(f"{name} {k.get_name()} {k.get_base64()}\n" for k in entry.values())


def same_image(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two `docker image inspect`s are of one image: the same ID, or, across image stores
    (overlay2's IDs are config digests, the containerd store's manifest digests), the same
    layers (their uncompressed digests) and configuration."""
    if a.get("Id") and a.get("Id") == b.get("Id"):
        return True
    layers = (a.get("RootFS") or {}).get("Layers")
    return bool(layers) and layers == (b.get("RootFS") or {}).get("Layers") and a.get("Config") == b.get("Config")


def image_there(source_engine: Engine, target_engine: Engine, image_id: str, image_ref: str) -> bool:
    """The target has the container's image: by its ID, or as the same image under its name."""
    if target_engine.image_exists(image_id):
        return True
    tagged = target_engine.image_inspect(image_ref)
    return tagged is not None and same_image(source_engine.image_inspect(image_id) or {}, tagged)


def ship_image(link: Link, source_engine: Engine, target_engine: Engine, image_id: str, image_ref: str,
               progress: Progress | None = None) -> int:
    """Make the image exist on the target (by ID, under its name when the source's name
    points at it). Returns the bytes sent; 0 when the target already had it."""
    if image_there(source_engine, target_engine, image_id, image_ref):
        return 0
    tagged = source_engine.image_inspect(image_ref) or {}
    ref = image_ref if tagged.get("Id") == image_id else image_id
    tar = f"{workdir(link.operation)}/image-{image_id.rsplit(':', 1)[-1][:16]}.tar"  # loaded by us, not the key
    sent = link.pipe([["docker", "save", ref]], ["write", tar], f"image {ref}", progress)
    r = link.dst.run(["bash", "-c", 'docker load -q -i "$1"; rc=$?; rm -f "$1"; exit $rc', "_", tar],
                     check=False, timeout=None)
    link.check(f"image {ref}: docker load", r)
    return sent
