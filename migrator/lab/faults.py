"""Faults the benchmark, the tests and the soak inject into a lab's migrations, and what a
host must not keep after one (`leftovers`)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..inventory import Inventory
from ..layout import lock_path, workdir
from ..transfer import remove_key
from ..transport import Host

if TYPE_CHECKING:
    from . import Lab


def cut_link(inv: Inventory, source: str, container: str) -> str:
    """Cut the direct link of the running migration of `container` off `source`, and only
    that one: its single-use key out of the target's authorized_keys, its SSH master
    killed (the operation is named by the container's lock). Returns the operation."""
    with Host(inv.host(source)) as h:
        cid = h.run(["docker", "inspect", "-f", "{{.Id}}", container]).stdout.strip()
        who = json.loads(h.run(["cat", f"{lock_path(cid)}/owner"]).stdout)
        operation = str(who["op"]).split()[-1]
        with Host(inv.host(who["target"])) as t:
            remove_key(t, operation)
        h.run(["pkill", "-f", f"ControlPath={workdir(operation)}/ctl"], check=False)
    return operation


def criu_killer(lab: Lab, host: str, after: float = 0.05, within: float = 20) -> tuple[threading.Thread, list[int]]:
    """A thread (not started) that SIGKILLs the first criu seen in `host`'s mount namespace,
    `after` seconds after it appears (looking for `within` s); the list gets its pid."""
    mnt = os.readlink(f"/proc/{lab.host(host).anchor_pid}/ns/mnt")
    killed: list[int] = []

    def run() -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for pid in os.listdir("/proc"):
                try:
                    if (pid.isdigit() and Path(f"/proc/{pid}/comm").read_text().strip() == "criu"
                            and os.readlink(f"/proc/{pid}/ns/mnt") == mnt):
                        time.sleep(after)
                        # only a kill of a criu still at work counts (not one exited, unreaped)
                        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX":
                            return
                        os.kill(int(pid), signal.SIGKILL)
                        killed.append(int(pid))
                        return
                except OSError:
                    continue
            time.sleep(0.002)

    return threading.Thread(target=run, daemon=True), killed


# Wrappers around the programs that write a checkpoint on the target, bind-mounted over them
# in one lab host's mount namespace: `tar`, which unpacks the small image files, flips a
# byte of core-1.img after it; `dd`, which writes the memory pages streamed from CRIU, drops
# their last 8 KiB (a copy broken in transit or on the target's disk, and one cut short).
CORRUPTING = {
    "tar": r"""#!/bin/bash
/tmp/real-tool "$@"; rc=$?
dir=$PWD; prev=
for a in "$@"; do [ "$prev" = -C ] && dir=$a; prev=$a; done
case $dir in
  /dev/shm/migrator/*/img)
    f=$dir/core-1.img
    b=$(/tmp/real-dd if="$f" bs=1 skip=16 count=1 status=none | od -An -tu1)
    printf "\\$(printf %o $(( 255 - b )))" | /tmp/real-dd of="$f" bs=1 seek=16 conv=notrunc status=none ;;
esac
exit $rc
""",
    "dd": r"""#!/bin/bash
for a in "$@"; do
  case $a in if=*) exec /tmp/real-tool "$@" ;; esac
done
case " $* " in
  *" of=/dev/shm/migrator/"*"/img/pages-"*) head -c -8192 | /tmp/real-tool "$@" ;;
  *) exec /tmp/real-tool "$@" ;;
esac
""",
}


@contextlib.contextmanager
def corrupting(lab: Lab, host: str, tool: str) -> Iterator[None]:
    """While inside, `tool` (tar or dd) on `host` corrupts what it writes of a checkpoint."""
    h = lab.host(host)
    lab.ns_exec(h, ["bash", "-c", f'cp /usr/bin/{tool} /tmp/real-tool && cp /usr/bin/dd /tmp/real-dd && '
                    f'cat > /tmp/corrupting-tool && chmod 755 /tmp/corrupting-tool && '
                    f'mount --bind /tmp/corrupting-tool /usr/bin/{tool}'], input=CORRUPTING[tool])
    try:
        yield
    finally:
        lab.ns_exec(h, ["umount", f"/usr/bin/{tool}"], check=False)


# What a migration may leave on a host, each as a command whose output must be empty.
LEFTOVERS = {
    "work": "ls -A /var/lib/migrator/work 2>/dev/null",
    "locks": "ls -A /var/lib/migrator/locks 2>/dev/null",
    "checkpoints": "ls -A /var/lib/docker/containers/*/checkpoints/ 2>/dev/null | grep -v '^/' | grep .",
    "keys": "grep migrator-transfer ~/.ssh/authorized_keys",
    "transfer places": "ls -A /var/lib/migrator/transfer 2>/dev/null",
    "runc.conf": "cat /etc/criu/runc.conf 2>/dev/null",
    # containerd's copy of a restored checkpoint (it links to our pages)
    "containerd copies": "ls -d /tmp/ctrd-checkpoint* 2>/dev/null",
    # a restore's guard of the published ports (refusing connections while Docker sets up)
    "guards": "iptables -S DOCKER-USER 2>/dev/null | grep REJECT",
}


def wipe(host: Host) -> None:
    """Remove what migrations left on a lab host (work dirs, locks, transfer keys and their
    places, containerd's checkpoint copies), so the next test or soak round starts clean.
    Stored checkpoints, containers and volumes are the caller's to keep or remove."""
    host.run(["bash", "-c", "rm -rf /var/lib/migrator/work /var/lib/migrator/locks /var/lib/migrator/transfer "
              "/dev/shm/migrator/* /tmp/ctrd-checkpoint*; sed -i '/migrator-transfer-/d' ~/.ssh/authorized_keys"],
             check=False)


def leftovers(host: Host) -> dict[str, str]:
    """Everything a migration may leave behind on a host (one command); all should be empty."""
    script = "; ".join(f"echo '@{k}'; {{ {c}; }} || true" for k, c in LEFTOVERS.items())
    found: dict[str, list[str]] = {k: [] for k in LEFTOVERS}
    key = ""
    for line in host.run(["bash", "-c", script]).stdout.splitlines():
        if line.startswith("@") and line[1:] in found:
            key = line[1:]
        elif line.strip():
            found[key].append(line)
    return {k: "\n".join(v) for k, v in found.items()}
