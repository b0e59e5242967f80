"""The lab: several real hosts on this machine, each a network + mount namespace with its
own dockerd (experimental, so checkpoints work) and sshd, on one bridge.

Everything it makes is recorded under the lab directory; `down` removes exactly that: the
processes by pid (and what runs in the hosts' namespaces and cgroups), the namespaces,
the bridge, the firewall rule and the directories.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import yaml

from ..controller import alive, atomic_write
from ..errors import LabError
from ..hosts import engine_major
from ..transport import wait_for
from . import image, network
from .image import IMAGE
from .processes import cgroup_pids, comm, in_mount_ns, read_pid, remove_cgroups, run, terminate

log = logging.getLogger(__name__)

LAB_DIR = Path(os.environ.get("MIGRATOR_LAB_DIR", "/var/lib/migrator-lab"))
BRIDGE = "mglab0"
SUBNET = "10.203.0"  # controller .1, hosts .11, .12, ...
# Mount points the hosts bind their own directories onto; made here if missing, and
# removed again by `down` when the lab made them.
MOUNT_POINTS = ["/var/lib/docker", "/var/lib/containers", "/etc/criu", "/var/lib/migrator", "/root/.ssh"]

Progress = Callable[[str], None]
# The engines a lab host can run: the system's (Debian 12's docker.io), or one that
# scripts/engines.sh unpacked (Debian's own packages of newer engines).
SYSTEM_ENGINE = "20.10"
ENGINES = {SYSTEM_ENGINE: None, "26": Path("/var/cache/migrator/engines/26/root"),
           "28": Path("/var/cache/migrator/engines/28/root")}
# overlay2: the classic graph driver; snapshotter: the containerd image store (the default
# of fresh Docker 29 installs), which Docker 20.10 does not have.
STORES = ("overlay2", "snapshotter")


def _engine_and_store(name: str, engine: str, store: str) -> tuple[str, str]:
    if engine not in ENGINES:
        raise LabError(f"{name}: engine {engine!r} is not one of {', '.join(ENGINES)}")
    if store not in STORES:
        raise LabError(f"{name}: store {store!r} is not one of {', '.join(STORES)}")
    if store == "snapshotter" and engine == SYSTEM_ENGINE:
        raise LabError(f"{name}: Docker {SYSTEM_ENGINE} has no containerd image store",
                       hint=f"--engine {name}=26 (or 28) with --store {name}=snapshotter")
    root = ENGINES[engine]
    if root is not None and not (root / "usr/sbin/dockerd").exists():
        raise LabError(f"engine {engine} is not unpacked in {root}", hint="run `make setup` (scripts/engines.sh)")
    return engine, store


@dataclass
class LabHost:
    name: str
    address: str
    netns: str
    dir: str
    anchor_pid: int = 0
    engine: str = SYSTEM_ENGINE  # the Docker engine it runs (ENGINES)
    store: str = "overlay2"  # its image store (STORES)


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (namespaces, bridges, dockerd)", hint="run it with sudo")


class Lab:
    """A lab is named by its directory, bridge, subnet and host-name prefix, so a second,
    small one (the tests' own lifecycle test) never touches the first."""

    def __init__(self, root: Path = LAB_DIR, progress: Progress | None = None, *,
                 bridge: str = BRIDGE, subnet: str = SUBNET, prefix: str = "lab") -> None:
        if any(root.is_relative_to(p) for p in ("/tmp", "/run", "/dev/shm")):  # noqa: S108
            raise LabError(f"lab directory {root} would be hidden by the hosts' own /tmp, /run, /dev/shm",
                           hint="set MIGRATOR_LAB_DIR to a path on disk, e.g. under /var/lib")
        self.root = root
        self.bridge, self.subnet, self.prefix = bridge, subnet, prefix
        self.say = progress or (lambda _m: None)
        self.state_file = root / "lab.json"
        self.key = root / "id_ed25519"
        self.known_hosts = root / "known_hosts"

    # --- state ------------------------------------------------------------------------
    def hosts(self) -> list[LabHost]:
        try:
            return [LabHost(**h) for h in json.loads(self.state_file.read_text())["hosts"]]
        except FileNotFoundError:
            return []

    def _save(self, hosts: list[LabHost]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write(self.state_file, json.dumps({"hosts": [asdict(h) for h in hosts]}, indent=1))

    def save_host(self, changed: LabHost) -> None:
        """Record what changed of one host (its engine, say)."""
        self._save([changed if h.name == changed.name else h for h in self.hosts()])

    def host(self, name: str) -> LabHost:
        for h in self.hosts():
            if h.name == name:
                return h
        raise LabError(f"no lab host {name!r}", hint="`migrator lab status` lists them")

    def healthy(self, h: LabHost) -> bool:
        d = Path(h.dir)
        return (
            alive(h.anchor_pid)
            and alive(read_pid(d / "dockerd.pid"))
            and alive(read_pid(d / "sshd.pid"))
            and Path(f"/run/netns/{h.netns}").exists()
        )

    # --- up ---------------------------------------------------------------------------
    def up(self, count: int = 3, inventory: Path | None = None, *, engines: dict[str, str] | None = None,
           stores: dict[str, str] | None = None, rebuild: set[str] | None = None) -> list[str]:
        """Make lab1..labN; returns what was done, one line each. A broken host is repaired
        keeping what it holds, as a real host's init would: what died of it is started
        again (dockerd, sshd; or, when its namespaces are gone, the whole host over its own
        directory: its containers, images and keys stay). Only the hosts in `rebuild` are
        wiped and made afresh. `engines` and `stores` give hosts by name another Docker
        engine or image store; a host that runs another is switched (its dockerd restarted
        with it, as an upgrade would: its running containers stop)."""
        require_root()
        if not 1 <= count <= 50:
            raise LabError("--hosts must be 1..50")
        names = {f"{self.prefix}{i}" for i in range(1, count + 1)}
        for name in {*(engines or {}), *(stores or {}), *(rebuild or set())} - names:
            raise LabError(f"no lab host {name!r} among {self.prefix}1..{self.prefix}{count}")
        done: list[str] = []
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._controller_key()
        self._bridge()
        hosts = {h.name: h for h in self.hosts()}
        for i in range(1, count + 1):
            name = f"{self.prefix}{i}"
            h = hosts.get(name)
            engine, store = _engine_and_store(
                name, (engines or {}).get(name, h.engine if h else SYSTEM_ENGINE),
                (stores or {}).get(name, h.store if h else "overlay2"))
            if h and name not in (rebuild or set()) and self.healthy(h):
                if (h.engine, h.store) != (engine, store):
                    self.say(f"{name}: switching to Docker {engine} ({store})")
                    self.switch_engine(h, engine, store)
                    done.append(f"{name}: now Docker {engine} ({store})")
                    self._save(sorted(hosts.values(), key=lambda x: int(x.name[len(self.prefix):])))
                continue
            if h and name not in (rebuild or set()) and Path(h.dir, "ssh_host_ed25519_key").exists():
                self.say(f"{name}: broken, repairing it")
                done.append(f"{name}: repaired ({self._repair(h)})")
                self._save(sorted(hosts.values(), key=lambda x: int(x.name[len(self.prefix):])))
                continue
            if h:
                self.say(f"{name}: rebuilding it (its containers, images and state go)")
                self._host_down(h)
                done.append(f"{name}: rebuilt")
            else:
                done.append(f"{name}: created")
            h = LabHost(name, f"{self.subnet}.{10 + i}", f"migrator-{name}", str(self.root / "hosts" / name),
                        engine=engine, store=store)
            self.say(f"{name}: starting at {h.address} (Docker {engine}, {store})")
            self._host_up(h)
            hosts[name] = h
            self._save(sorted(hosts.values(), key=lambda x: int(x.name[len(self.prefix):])))
        all_hosts = sorted(hosts.values(), key=lambda x: int(x.name[len(self.prefix):]))
        for h in all_hosts:
            self._wait_ready(h)
        self._write_known_hosts(all_hosts)
        self._check_links(all_hosts)
        for h in all_hosts:
            if self.ensure_image(h):
                done.append(f"{h.name}: loaded image {IMAGE}")
        self.write_inventory(inventory or Path("inventory/lab.yaml"))
        return done

    def _repair(self, h: LabHost) -> str:
        """A broken host whole again, keeping its state; says what was done."""
        d = Path(h.dir)
        if alive(h.anchor_pid) and Path(f"/run/netns/{h.netns}").exists():
            did = []
            if not alive(read_pid(d / "dockerd.pid")):
                self.start_dockerd(h)
                did.append("dockerd started again")
            if not alive(read_pid(d / "sshd.pid")):
                self.start_service(h, "sshd")
                did.append("sshd started again")
            return ", ".join(did) or "nothing was down"
        # Its namespaces are gone (the anchor died): the host made again over its directory.
        self._host_down(h, wipe=False)
        self._host_up(h)
        return "started again over its own directory"

    def _controller_key(self) -> None:
        if not self.key.exists():
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "migrator-lab-controller",
                  "-f", str(self.key)])

    def _bridge(self) -> None:
        network.bridge_up(self.bridge, self.subnet, self.say)
        # Record mount points the lab had to make, so `down` removes only those.
        made = self.root / "made-mountpoints"
        for mp in MOUNT_POINTS:
            if not Path(mp).exists():
                Path(mp).mkdir(parents=True, mode=0o700)
                with made.open("a") as f:
                    f.write(mp + "\n")

    def _host_up(self, h: LabHost) -> None:
        """Start the host: over its own directory when it has one (a repair), else afresh."""
        d = Path(h.dir)
        if not (d / "ssh_host_ed25519_key").exists():
            if d.exists():
                shutil.rmtree(d)
            for sub in ("docker", "containers", "criu", "migrator", "root-ssh"):
                (d / sub).mkdir(parents=True, mode=0o700)
            # Keys: the host's own host key, and the controller's public key for root.
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{h.name}-hostkey",
                  "-f", str(d / "ssh_host_ed25519_key")])
            shutil.copy(self.key.with_suffix(".pub"), d / "root-ssh" / "authorized_keys")
            os.chmod(d / "root-ssh" / "authorized_keys", 0o600)
        for stale in ("ready", "dockerd.pid", "sshd.pid"):
            (d / stale).unlink(missing_ok=True)
        self._engine_files(h)
        (d / "sshd_config").write_text(
            f"ListenAddress {h.address}\nPort 22\nHostKey {d}/ssh_host_ed25519_key\n"
            f"PidFile {d}/sshd.pid\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nUsePAM no\n"
            "AuthorizedKeysFile .ssh/authorized_keys\nMaxSessions 64\nMaxStartups 64:30:128\n"
            "Subsystem sftp internal-sftp\nPrintMotd no\n"
        )
        network.host_net_up(h.name, h.netns, h.address, self.bridge, self.subnet)
        script = resources.files("migrator.lab").joinpath("host-init.sh")
        log_f = open(d / "init.log", "wb")  # noqa: SIM115 - the child keeps it
        proc = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{h.netns}", "unshare", "--mount", "--propagation",
             "private", "bash", str(script), str(d)],
            stdin=subprocess.DEVNULL, stdout=log_f, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log_f.close()
        h.anchor_pid = proc.pid

    def _engine_files(self, h: LabHost) -> None:
        """What makes the host run its engine and store: the binaries engine.sh mounts, and
        dockerd's configuration."""
        d = Path(h.dir)
        (d / "engine-root").write_text(str(ENGINES[h.engine] or ""))
        # Docker 28+ restores through migrator's runc wrapper (host/runc-wrapper.sh)
        wrapper = resources.files("migrator.host").joinpath("runc-wrapper.sh")
        (d / "runc-wrapper").write_text(str(wrapper) if engine_major(h.engine) >= 28 else "")
        config: dict[str, object] = {"experimental": True, "cgroup-parent": f"/migrator-{h.name}",
                                     "shutdown-timeout": 3, "log-level": "warn"}
        if h.store == "snapshotter":
            config["features"] = {"containerd-snapshotter": True}
        else:
            config["storage-driver"] = "overlay2"
        (d / "daemon.json").write_text(json.dumps(config, indent=1))

    def switch_engine(self, h: LabHost, engine: str, store: str) -> None:
        """Run another Docker engine (or image store) on a host, as an upgrade does: dockerd
        stopped (its containers stop), the new binaries in place, dockerd started. Images
        and containers of one store are not seen by the other."""
        h.engine, h.store = _engine_and_store(h.name, engine, store)
        self.stop_service(h, "dockerd")
        self._engine_files(h)
        engine_sh = resources.files("migrator.lab").joinpath("engine.sh")
        self.ns_exec(h, ["bash", str(engine_sh), h.dir])
        self.start_dockerd(h)
        self.ensure_image(h)

    def _wait_ready(self, h: LabHost) -> None:
        d = Path(h.dir)
        if not wait_for(lambda: (d / "ready").exists() or not alive(h.anchor_pid), 30):
            raise LabError(f"{h.name}: did not start; see {d}/init.log")
        if not alive(h.anchor_pid):
            raise LabError(f"{h.name}: init failed: {(d / 'init.log').read_text()[-400:]}")
        if not wait_for(lambda: self._docker_ok(h), 60, 0.2):
            raise LabError(f"{h.name}: dockerd did not come up; see {d}/dockerd.log")

    def ns_exec(self, h: LabHost, argv: list[str], check: bool = True,
                **kw: object) -> subprocess.CompletedProcess[str]:
        """Run argv inside a lab host's namespaces (for the lab itself and fault tests)."""
        return run(["nsenter", "-t", str(h.anchor_pid), "-m", "-n", "--", *argv], check=check, **kw)

    def _write_known_hosts(self, hosts: list[LabHost]) -> None:
        lines = []
        for h in hosts:
            pub = (Path(h.dir) / "ssh_host_ed25519_key.pub").read_text().split()
            lines.append(f"{h.address} {pub[0]} {pub[1]}\n")
        atomic_write(self.known_hosts, "".join(lines), 0o644)

    def _check_links(self, hosts: list[LabHost]) -> None:
        """Controller-to-host and host-to-host reachability, both, over TCP to sshd."""
        by_name = {h.name: h for h in hosts}
        network.check_links([(h.name, h.address) for h in hosts],
                            lambda name, address: self._reaches(by_name[name], address))

    def _reaches(self, h: LabHost, address: str) -> bool:
        """From host h, a TCP connect to sshd at `address` succeeds."""
        return self.ns_exec(h, ["bash", "-c", f"exec 3<>/dev/tcp/{address}/22"], check=False,
                            timeout=5).returncode == 0

    def ensure_image(self, h: LabHost, name: str = IMAGE) -> bool:
        """The lab image `name` on host h (built once from this machine's binaries, then
        saved: every host loads the same image ID). Returns whether it was loaded now."""
        if self.ns_exec(h, ["docker", "image", "inspect", name], check=False).returncode == 0:
            return False
        tar = self.root / f"{name.replace('/', '-')}-image.tar"
        if not tar.exists():
            self.say(f"building {name} from this machine's binaries")
            self.ns_exec(h, image.import_argv(name), input=image.BUILDS[name][0](self.root / "rootfs"), text=False)
            with tar.open("wb") as out:
                subprocess.run(["nsenter", "-t", str(h.anchor_pid), "-m", "-n", "--", "docker", "save", name],
                               stdout=out, check=True)
        self.say(f"{h.name}: loading {name}")
        with tar.open("rb") as f:
            self.ns_exec(h, ["docker", "load", "-q"], stdin=f)
        return True

    def write_inventory(self, path: Path, count: int | None = None) -> None:
        """The inventory of the lab's hosts (with `count`, of the first `count` only)."""
        # `reboot: lab` tells playbooks to restart the host's dockerd and sshd (`lab restart`),
        # `lab_dir` of which lab.
        hosts = {h.name: {"address": h.address, "labels": {"reboot": "lab", "lab_dir": str(self.root)}}
                 for h in self.hosts()[:count]}
        doc = {
            "defaults": {"user": "root", "port": 22, "identity_file": str(self.key),
                         "known_hosts": str(self.known_hosts)},
            "hosts": hosts,
            "groups": {self.prefix: list(hosts)},
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("# Written by `migrator lab up`: the lab's hosts on this machine.\n"
                        + yaml.safe_dump(doc, sort_keys=False))

    # --- restart / down ---------------------------------------------------------------
    def start_dockerd(self, h: LabHost, tries: int = 3) -> None:
        """Start a host's dockerd and wait until it answers; start it again if it exits at
        first, as systemd's Restart= would: after a crash, the new dockerd's containerd can
        time out while a shim of the dead one still finishes a restore."""
        def up_or_dead(pid: int) -> bool:
            return not alive(pid) or self._docker_ok(h)

        for _ in range(tries):
            self.start_service(h, "dockerd")
            pid = read_pid(Path(h.dir) / "dockerd.pid")
            if wait_for(functools.partial(up_or_dead, pid), 90, 0.2) and alive(pid):
                return
        raise LabError(f"{h.name}: dockerd did not come up; see {h.dir}/dockerd.log")

    def _docker_ok(self, h: LabHost) -> bool:
        return self.ns_exec(h, ["docker", "version", "--format", "{{.Server.Version}}"], check=False).returncode == 0

    def restart(self, name: str) -> None:
        """What a reboot does to a host's services: stop dockerd (its containers die) and
        sshd, then start both again."""
        h = self.host(name)
        self.stop_service(h, "sshd")
        self.stop_service(h, "dockerd")
        self.start_dockerd(h)
        self.start_service(h, "sshd")

    def stop_service(self, h: LabHost, svc: str) -> None:
        pid = read_pid(Path(h.dir) / f"{svc}.pid")
        terminate([pid], 20 if svc == "dockerd" else 5)

    def start_service(self, h: LabHost, svc: str) -> None:
        d = Path(h.dir)
        if svc == "dockerd":
            # A dockerd that was killed leaves its pid file; its pid is gone (init reaped it).
            stale = read_pid(d / "dockerd.pid")
            if stale and not alive(stale):
                # and so do newer engines' containerd
                self.ns_exec(h, ["rm", "-f", "/var/run/docker.pid", "/run/docker/containerd/containerd.pid"],
                             check=False)
                # Its containerd can outlive it for a while, holding its socket and database (the
                # new dockerd's own containerd then times out), and so can its docker-proxy
                # processes, holding published ports no container has any more. The new dockerd
                # starts both afresh for what it finds running.
                terminate([p for p in in_mount_ns(h.anchor_pid) if comm(p) in ("containerd", "docker-proxy")], 10)
            script = (f"( dockerd --config-file {d}/daemon.json >>{d}/dockerd.log 2>&1 & "
                      f"echo $! >{d}/dockerd.pid )")
        else:
            script = f"/usr/sbin/sshd -f {d}/sshd_config -E {d}/sshd.log"
        subprocess.Popen(["nsenter", "-t", str(h.anchor_pid), "-m", "-n", "--", "bash", "-c", script],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True).wait()
        if svc == "sshd":  # it forks into the background before it listens: returns once it does
            wait_for(lambda: self._reaches(h, h.address), 10, 0.05)

    def down(self) -> list[str]:
        require_root()
        done = []
        for h in self.hosts():
            self._host_down(h)
            done.append(f"{h.name}: removed")
        if network.bridge_down(self.bridge):
            done.append(f"bridge {self.bridge}: removed")
        made = self.root / "made-mountpoints"
        if made.exists():
            for mp in made.read_text().split():
                try:
                    Path(mp).rmdir()
                except OSError:
                    pass
        if self.root.exists():
            shutil.rmtree(self.root)
            done.append(f"{self.root}: removed")
        return done

    def _host_down(self, h: LabHost, wipe: bool = True) -> None:
        """Everything of the host stopped and its network gone; with `wipe`, its directory."""
        d = Path(h.dir)
        # dockerd first, gracefully: it stops its containers.
        terminate([read_pid(d / "dockerd.pid")], 25)
        in_host = in_mount_ns(h.anchor_pid) if alive(h.anchor_pid) else []
        # Whatever still runs in this host's cgroups (containers) or mount namespace
        # (shims, sshd and its sessions, the anchor) was started by this host.
        pids = cgroup_pids(f"migrator-{h.name}") | set(in_host)
        pids |= {read_pid(d / "sshd.pid"), h.anchor_pid}
        terminate(sorted(p for p in pids if p > 0 and p != os.getpid()), 5)
        remove_cgroups(f"migrator-{h.name}")
        network.host_net_down(h.name, h.netns)
        if wipe and d.exists():
            shutil.rmtree(d, ignore_errors=True)
