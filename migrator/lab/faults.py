"""Faults the benchmark and the tests inject into one migration among many."""

from __future__ import annotations

import json

from ..inventory import Inventory
from ..layout import lock_path, workdir
from ..transfer import remove_key
from ..transport import Host


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
