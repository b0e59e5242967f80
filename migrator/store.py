"""Stored checkpoints on a host, and what is built on them: restore and clone.

A stored checkpoint is a directory on the host: CRIU images (`criu/`), the container's
filesystem diff (`fs.tar.zst`), its configuration (`config.json`), `meta.json`, and a
MANIFEST of checksums. It is written under `.tmp-NAME` and renamed only when complete, so a
crash never leaves a half-checkpoint that looks usable. Files are 0600 in 0700 directories:
they hold process memory.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from . import binds, checkpoint
from .container import Spec, validate_name
from .engine import Engine
from .errors import CheckpointError, MigratorError
from .images import make_workdir, manifest, remove_workdir, verify_manifest
from .layout import STATE_DIR
from .locks import owner, release_lock, take_lock
from .probes import answers, runtime_root, upper_dir
from .transfer import Link, open_link
from .transport import Host

STORE = f"{STATE_DIR}/checkpoints"
CP_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass
class Stored:
    container: str
    name: str
    host: str  # where this copy is
    created: float
    size: int
    image: str
    image_id: str
    source_host: str  # where it was taken; differs from `host` for a replica
    path: str
    # its bind mounts: {"path", "mode": "sync" (a copy in binds/N.tar.zst) | "shared"}
    binds: list[dict[str, Any]] = field(default_factory=list)

    @property
    def replica(self) -> bool:
        return self.host != self.source_host

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "replica": self.replica}


def new_name() -> str:
    t = time.time()
    return time.strftime("cp-%Y%m%d-%H%M%S", time.gmtime(t)) + f"-{int(t * 1000) % 1000:03d}"


def validate_cp_name(name: str) -> str:
    if not CP_NAME_RE.match(name):
        raise CheckpointError(f"{name!r} is not a checkpoint name",
                              hint="letters, digits, '_', '.' and '-', starting with a letter or digit")
    return name


def container_dir(container: str) -> str:
    return f"{STORE}/{container}"


def create(host: Host, container: str, name: str | None = None, *, leave_running: bool = True,
           keep: int | None = None, bind_mounts: str | None = None) -> Stored:
    """Checkpoint `container` on `host` into the store. With `keep`, the oldest are removed
    once the new one is fully written and just before it is published, so there are never
    more than `keep` complete ones. Bind mounts as `bind_mounts` says (binds.py)."""
    container = validate_name(container)
    name = validate_cp_name(name or new_name())
    engine = Engine(host)
    info = engine.inspect(container)
    if info is None:
        raise CheckpointError(f"{host.name}: no container {container!r}")
    spec = Spec(info)
    if not spec.running:
        raise CheckpointError(f"{host.name}: {spec.name} is not running; nothing to checkpoint",
                              hint=f"`migrator restore {spec.name} --on {host.name}` starts it from one")
    refused = binds.refusals(host, None, spec.bind_mounts(), binds.check_mode(bind_mounts))
    if refused:
        raise CheckpointError(f"{host.name}: {spec.name}: " + "; ".join(refused))
    take_lock(host, spec.id, owner(op=f"checkpoint {name}", container=spec.name))
    base = container_dir(spec.name)
    tmp, final = f"{base}/.tmp-{name}", f"{base}/{name}"
    try:
        # Holding the container's lock, any .tmp-* of it is a crashed earlier attempt.
        host.run(["bash", "-c", 'umask 077; mkdir -p "$1" && chmod 0700 "$1" "$(dirname "$1")" && '
                  'rm -rf "$1"/.tmp-* && mkdir "$2"', "_", base, tmp])
        if host.ok(["test", "-e", final]):
            raise CheckpointError(f"{host.name}: checkpoint {name} of {spec.name} exists already")
        checkpoint.dump(host, spec.id, f"{tmp}/criu", root=runtime_root(host, spec.id), leave_running=leave_running)
        upper = upper_dir(host, spec.inspect)
        if upper:
            checkpoint.pack_fs(host, upper, f"{tmp}/fs.tar.zst")
        kept = []
        for i, m in enumerate(spec.bind_mounts()):  # as they are just after the dump
            if bind_mounts == "sync":
                host.run(["mkdir", "-p", "-m", "0700", f"{tmp}/binds"])
                binds.pack(host, m["Source"], f"{tmp}/binds/{i}.tar.zst")
            kept.append({"path": m["Source"], "mode": bind_mounts, "archive": f"binds/{i}.tar.zst"})
        host.put(json.dumps(spec.inspect).encode(), f"{tmp}/config.json")
        size = int(host.run(["du", "-sb", tmp]).stdout.split()[0])
        meta = {"container": spec.name, "name": name, "created": time.time(), "size": size,
                "image": spec.image_ref, "image_id": spec.image_id, "source_host": host.name, "binds": kept}
        host.put(json.dumps(meta).encode(), f"{tmp}/meta.json")
        manifest(host, tmp)
        _publish(host, spec.name, tmp, final, keep)
    except MigratorError:
        host.run(["rm", "-rf", tmp], check=False)
        raise
    finally:
        release_lock(host, spec.id)
    return Stored(host=host.name, path=final, **meta)  # type: ignore[arg-type]


def list_(host: Host, container: str | None = None) -> list[Stored]:
    """Complete checkpoints on `host`, oldest first. Half-written ones are never listed."""
    where = container_dir(validate_name(container)) if container else f"{STORE}/*"
    pattern = f"{where}/*/meta.json"
    r = host.run(["bash", "-c", 'shopt -s nullglob; for f in $1; do printf "%s\\t" "$(dirname "$f")"; '
                  'tr -d "\\n" < "$f"; echo; done', "_", pattern], check=False)
    out = []
    for line in r.stdout.splitlines():
        path, _, meta = line.partition("\t")
        try:
            m = json.loads(meta)
            out.append(Stored(host=host.name, path=path, binds=list(m.get("binds") or []), **{k: m[k] for k in (
                "container", "name", "created", "size", "image", "image_id", "source_host")}))
        except (ValueError, KeyError, TypeError):
            continue  # not ours, or damaged: never offered for restore
    return sorted(out, key=lambda s: s.created)


def find(host: Host, container: str, name: str = "latest") -> Stored:
    found = list_(host, container)
    if name == "latest":
        if not found:
            raise CheckpointError(f"{host.name}: no complete checkpoint of {container}",
                                  hint=f"`migrator checkpoint create {container} --on {host.name}` makes one")
        return found[-1]
    for s in found:
        if s.name == name:
            return s
    raise CheckpointError(f"{host.name}: no checkpoint {name!r} of {container}",
                          hint=f"`migrator checkpoint ls {container} --on {host.name}` lists them")


def remove(host: Host, container: str, name: str) -> None:
    s = find(host, container, validate_cp_name(name))
    host.run(["rm", "-rf", s.path])


def prune(host: Host, container: str, keep: int) -> list[str]:
    """Remove all but the newest `keep` checkpoints of container; returns removed names."""
    found = list_(host, container)
    gone = found[: max(0, len(found) - keep)]
    for s in gone:
        host.run(["rm", "-rf", s.path])
    return [s.name for s in gone]


def _publish(host: Host, container: str, tmp: str, final: str, keep: int | None) -> None:
    """Make the complete `tmp` the checkpoint `final` (a rename: never half there). With
    `keep`, the oldest go first, so there are never more than `keep` complete ones."""
    if keep is not None:
        prune(host, container, keep - 1)
    host.run(["bash", "-c", 'chmod -R go-rwx "$1" && rm -rf "$2" && mv -T "$1" "$2"', "_", tmp, final])


def replicate(src: Host, dst: Host, stored: Stored, relay: bool = False, keep: int | None = None) -> Stored:
    """Copy a complete checkpoint to another host's store (written under .tmp-, renamed)."""
    base = container_dir(stored.container)
    tmp, final = f"{base}/.tmp-{stored.name}", f"{base}/{stored.name}"
    operation = f"replicate-{stored.name}"
    workdir = make_workdir(src, operation)
    link: Link | None = None
    try:
        dst.run(["bash", "-c", 'umask 077; mkdir -p "$1" && chmod 0700 "$1" "$(dirname "$1")" && '
                 'rm -rf "$2" && mkdir "$2"', "_", base, tmp])
        link = open_link(src, dst, operation, workdir, relay_only=relay)
        link.copy_dir(stored.path, tmp, verify=True)
        _publish(dst, stored.container, tmp, final, keep)
    except MigratorError:
        dst.run(["rm", "-rf", tmp], check=False)
        raise
    finally:
        if link is not None:
            link.close()
        remove_workdir(src, operation)
    return Stored(**{**asdict(stored), "host": dst.name, "path": final})


def start_from(host: Host, directory: str, name: str, body: dict[str, Any],
               on_created: Callable[[str], None] | None = None) -> str:
    """Create a container `name` from `body` and start it from the checkpoint in
    `directory` (criu/, fs.tar.zst) on the same host. Returns its id; on failure the new
    container is removed again."""
    from .preflight import restore_refusal

    engine = Engine(host)
    refusal = restore_refusal(host, engine.server_version,
                              Spec({"Id": "", "Config": body, "HostConfig": body.get("HostConfig")}))
    if refusal:
        raise CheckpointError(f"{host.name}: {refusal}")
    verify_manifest(host, directory)
    container_id = engine.create(name, body)
    if on_created:
        on_created(container_id)
    try:
        if host.ok(["test", "-f", f"{directory}/fs.tar.zst"]):
            upper = upper_dir(host, engine.inspect(container_id) or {"Id": container_id})
            if not upper:  # never a restore without its files
                raise CheckpointError(f"{host.name}: cannot find the writable layer of the new container {name}",
                                      hint=f"`docker inspect {name}` there shows its GraphDriver")
            checkpoint.unpack_fs(host, f"{directory}/fs.tar.zst", upper)
        checkpoint.start_from_images(host, engine, container_id, f"{directory}/criu", f"restore-{int(time.time())}")
        if not answers(host, engine, container_id, [], timeout=20):
            raise CheckpointError(f"{host.name}: {name} did not stay up after the restore",
                                  hint=f"`docker logs {name}` on {host.name}")
    except MigratorError:
        engine.remove_container(container_id)
        raise
    return container_id


def restore(host: Host, container: str, name: str = "latest", from_host: Host | None = None) -> Stored:
    """Bring `container` back on `host` from a stored checkpoint (its own, or one on
    `from_host`, copied here first). A stopped or dead container of that name is replaced
    (kept under another name until the restore has worked, and given its name back if not)."""
    container = validate_name(container)
    engine = Engine(host)
    if from_host is not None:
        stored = replicate(from_host, host, find(from_host, container, name))
    else:
        stored = find(host, container, name)
    existing = engine.inspect(container)
    if existing is not None and existing["State"].get("Running"):
        raise CheckpointError(f"{host.name}: {container} is running; restoring would make two",
                              hint=f"stop it first, or `migrator clone {container}` for a copy")
    if not engine.image_exists(stored.image_id):
        raise CheckpointError(f"{host.name}: image {stored.image} ({stored.image_id[:19]}) is missing",
                              hint="load it there (docker save | docker load), then restore again")
    spec = Spec(json.loads(host.get(f"{stored.path}/config.json")))
    put = _bind_sources(host, stored, spec)
    if existing is not None:  # out of the way, kept until the restore has worked
        engine.rename(existing["Id"], f"{container}-replaced-{secrets.token_hex(3)}")
    try:
        start_from(host, stored.path, container, spec.create_body())
    except MigratorError:
        for path in put:
            binds.unmake(host, path, check=False)
        if existing is not None:
            engine.rename(existing["Id"], container)
        raise
    if existing is not None:
        engine.remove_container(existing["Id"])
    return stored


def _bind_sources(host: Host, stored: Stored, spec: Spec) -> list[str]:
    """Each bind source of the checkpointed container on `host`: put back from the
    checkpoint's copy where it is missing or an empty directory, else left as it is (never
    overwritten); refused, before anything changes, when it is missing and the checkpoint
    has no copy. Returns what it made (the topmost paths), for a failed restore to remove."""
    kept = {b["path"]: b for b in stored.binds if b.get("mode") == "sync"}
    todo, without = [], []
    for m in spec.bind_mounts():
        path = m["Source"]
        if path in kept and binds.sync_blocker(host, path) is None:  # missing or empty: the copy goes there
            todo.append(path)
        elif not host.ok(["test", "-e", path]):
            without.append(path)
    if without:
        raise CheckpointError(f"{host.name}: bind-mounted {', '.join(without)} missing here, and checkpoint "
                              f"{stored.name} holds no copy", hint="make them there (shared storage), or take "
                              "checkpoints with --bind-mounts sync")
    made = []
    for path in todo:
        top = binds.first_missing(host, path)
        binds.unpack(host, f"{stored.path}/{kept[path]['archive']}", path)
        made += [top] if top else []
    return made
