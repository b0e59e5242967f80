"""A running copy of a running container, the original untouched: to debug a hung service
on a copy while the original is restarted, or to dry-run an update on a copy."""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass, field

from . import binds, checkpoint, journal, store
from .container import Spec, validate_name
from .engine import Engine
from .errors import MigrationFailed, MigratorError, RollbackFailed, internal
from .hosts import port_user
from .images import make_workdir, manifest
from .probes import runtime_root, upper_dir
from .rollback import Sides
from .transfer import open_link, ship_image
from .transport import Host

PUBLISH_RE = re.compile(r"^(?:(?P<ip>[0-9.]+):)?(?P<host>\d{1,5}):(?P<ctr>\d{1,5})(?:/(?P<proto>tcp|udp))?$")


@dataclass
class CloneReport:
    container: str
    clone: str
    source: str
    target: str
    clone_id: str = ""
    seconds: float = 0.0
    bytes_sent: int = 0
    notes: list[str] = field(default_factory=list)


def parse_publish(values: list[str]) -> dict[str, list[dict[str, str]]]:
    """`[IP:]HOSTPORT:CONTAINERPORT[/PROTO]` as docker's PortBindings."""
    out: dict[str, list[dict[str, str]]] = {}
    for v in values:
        m = PUBLISH_RE.match(v)
        if not m:
            raise MigratorError(f"--publish {v!r}: expected [IP:]HOSTPORT:CONTAINERPORT[/tcp|udp]")
        key = f"{int(m['ctr'])}/{m['proto'] or 'tcp'}"
        out.setdefault(key, []).append({"HostIp": m["ip"] or "", "HostPort": str(int(m["host"]))})
    return out


def clone(src: Host, dst: Host, container: str, new_name: str, publish: list[str] | None = None,
          relay: bool = False, bind_mounts: str | None = None) -> CloneReport:
    t0 = time.monotonic()
    container, new_name = validate_name(container), validate_name(new_name)
    rep = CloneReport(container, new_name, src.name, dst.name)
    source_engine, target_engine = Engine(src), Engine(dst)
    info = source_engine.inspect(container)
    if info is None or not info["State"].get("Running"):
        raise MigratorError(f"{src.name}: no running container {container!r} to clone")
    spec = Spec(info)
    if spec.named_volumes():
        raise MigratorError(f"{src.name}: {container} uses named volumes; a clone would share or "
                            "need a copy of them, which clone does not do yet",
                            hint="`migrator checkpoint create` + `restore` on another host instead")
    if target_engine.inspect(new_name) is not None:
        raise MigratorError(f"{dst.name}: a container named {new_name} exists", hint="pick another --name")
    body = spec.create_body()
    hc = dict(body["HostConfig"])
    same_host = src.spec == dst.spec
    mounts = spec.bind_mounts()
    if mounts and same_host and binds.check_mode(bind_mounts) == "sync":
        raise MigratorError(f"{src.name}: a clone on the same host mounts the same host paths as {container}; "
                            "pass --bind-mounts shared to share them knowingly, or clone to another host")
    refused = binds.refusals(src, None if same_host else dst, mounts, bind_mounts)
    if refused:
        raise MigratorError(f"{container}: " + "; ".join(refused))
    if publish is not None:
        hc["PortBindings"] = parse_publish(publish)
        body["ExposedPorts"] = {**(body.get("ExposedPorts") or {}), **{k: {} for k in hc["PortBindings"]}}
    elif same_host and hc.get("PortBindings"):
        hc["PortBindings"] = {}
        rep.notes.append("published ports dropped (same host); use --publish HOST:CONTAINER for the clone")
    for key, bound in (hc.get("PortBindings") or {}).items():
        for b in bound:
            user = port_user(dst, target_engine, int(b["HostPort"]), key.split("/")[1])
            if user:
                raise MigratorError(f"{dst.name}: port {b['HostPort']} is in use ({user})",
                                    hint="pick others with --publish")
    body["HostConfig"] = hc
    body["Labels"] = {**(body.get("Labels") or {}), "migrator.clone-of": spec.name}
    operation = f"clone-{secrets.token_hex(4)}"
    # Journaled, so that what a killed controller or an unreachable host leaves is found and
    # removed by `migrator recover` (the copy itself stays if it was started).
    entry = journal.Entry(operation, new_name, "", src.name, dst.name, "", phase=journal.CLONE)
    entry.save()
    sides = Sides(entry, src, dst)
    try:
        source_workdir = make_workdir(src, operation)
        payload = f"{source_workdir}/cp"
        src.run(["mkdir", "-m", "0700", payload])
        checkpoint.dump(src, spec.id, f"{payload}/criu", root=runtime_root(src, spec.id), leave_running=True)
        upper = upper_dir(src, spec.inspect)
        if upper:
            checkpoint.pack_fs(src, upper, f"{payload}/fs.tar.zst")
        manifest(src, payload)
        where = payload
        if not same_host:
            target_workdir = make_workdir(dst, operation)
            link = open_link(src, dst, operation, source_workdir, relay_only=relay)
            rep.bytes_sent += ship_image(link, source_engine, target_engine, spec.image_id, spec.image_ref)
            dst.run(["mkdir", "-m", "0700", f"{target_workdir}/cp"])
            rep.bytes_sent += link.copy_dir(payload, f"{target_workdir}/cp", verify=True)
            where = f"{target_workdir}/cp"
            for m in mounts if bind_mounts == "sync" else []:  # as they are now, just after the dump
                made = binds.first_missing(dst, m["Source"])
                if made:  # removed again if the clone fails
                    entry.undo.append({"kind": "path", "path": made})
                    entry.save()
                rep.bytes_sent += binds.send(link, m["Source"])[1]
        rep.clone_id = store.start_from(dst, where, new_name, body)
    except Exception as ex:  # a bug of ours too: what it made is removed
        cause = ex if isinstance(ex, MigratorError) else internal(ex)
        left = _end(entry, sides)
        raise (RollbackFailed if left else MigrationFailed)(cause.message + left, hint=cause.hint) from ex
    entry.undo.clear()  # the paths it made are the copy's now
    left = _end(entry, sides)
    if left:
        rep.notes.append(left.lstrip("; "))
    rep.seconds = round(time.monotonic() - t0, 3)
    return rep


def _end(entry: journal.Entry, sides: Sides) -> str:
    """Remove what the clone made and no longer needs; what could not be removed stays in
    the journal for `recover`, and is returned as words for its message."""
    left = sides.undo_and_clean()
    if not left:
        entry.remove()
        return ""
    entry.phase = journal.PENDING_CLEANUP
    entry.save()
    return (f"; left over: {'; '.join(left)}; `migrator recover {entry.migration_id}` removes them once "
            "the hosts answer")
