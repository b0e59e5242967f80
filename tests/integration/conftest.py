"""The lab, once per test session: real dockerd, CRIU and sshd in namespaces on this box."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from migrator.engine import Engine
from migrator.inventory import Inventory, load
from migrator.lab import Lab
from migrator.lab.faults import leftovers, wipe
from migrator.transport import Host, wait_for

ROOT = Path(__file__).resolve().parents[2]
MIGRATOR = [sys.executable, "-m", "migrator.cli"]
LAB_INVENTORY = ROOT / "inventory" / "lab.yaml"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test here needs the lab (root, real dockerd, CRIU and sshd): `-m "not lab"` runs
    only the unit tests."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.lab)


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (the lab makes namespaces); run `make test` as root")
    os.environ["MIGRATOR_STATE_DIR"] = str(ROOT / ".test-state")  # the CLIs we start inherit it
    lab = Lab()
    was_up = bool(lab.hosts()) and all(lab.healthy(h) for h in lab.hosts())
    lab.up(3, LAB_INVENTORY)
    yield lab
    if len(lab.hosts()) > 3:
        lab.write_inventory(LAB_INVENTORY)  # the bigger lab's own again
    if not was_up and not os.environ.get("MIGRATOR_KEEP_LAB"):
        lab.down()


@pytest.fixture(scope="session")
def inv(lab: Lab) -> Inventory:
    if len(lab.hosts()) > 3:
        lab.write_inventory(LAB_INVENTORY, count=3)
    return load(LAB_INVENTORY)


class LabHost:
    """A lab host as the tests see it: docker over our own transport, redis by address."""

    def __init__(self, inv: Inventory, name: str) -> None:
        self.name = name
        self.spec = inv.host(name)
        self.address = self.spec.address
        self.host = Host(self.spec)
        self.engine = Engine(self.host)

    def sh(self, *argv: str, check: bool = True) -> str:
        return self.host.run(list(argv), check=check).stdout

    def redis(self, port: int = 6379) -> redis.Redis:
        return redis.Redis(self.address, port, socket_timeout=5, socket_connect_timeout=5)

    def wait_redis(self, port: int = 6379) -> redis.Redis:
        r = self.redis(port)
        assert wait_for(lambda: r.ping(), 20), f"redis on {self.name}:{port} did not answer"
        return r

    def running(self) -> list[str]:
        return sorted(c["Names"][0].lstrip("/") for c in self.engine.containers())

    def leftovers(self) -> dict[str, str]:
        """Everything a migration may leave behind on a host; all should be empty."""
        return leftovers(self.host)

    def close(self) -> None:
        self.host.close()


def reset(h: LabHost) -> None:
    """An empty host: no containers, volumes, migrator state, CRIU config or transfer keys."""
    for c in h.engine.containers(all=True):
        h.engine.remove_container(c["Id"])
    wipe(h.host)
    h.sh("bash", "-c", "docker volume prune -f >/dev/null; docker network prune -f >/dev/null; "
         "rm -rf /var/lib/migrator/* /etc/criu/runc.conf", check=False)


@pytest.fixture
def hosts(inv: Inventory, lab: Lab) -> Iterator[dict[str, LabHost]]:
    # A bigger lab the user made: the tests use (and reset) lab1..lab3 only, so the inventory
    # lists those three while they run (written before each test: `lab.up`, as the
    # benchmark's smoke test calls it, writes every host's).
    if len(lab.hosts()) > 3:
        lab.write_inventory(LAB_INVENTORY, count=3)
    hs = {n: LabHost(inv, n) for n in ("lab1", "lab2", "lab3")}
    for h in hs.values():
        reset(h)
    shutil.rmtree(ROOT / ".test-state", ignore_errors=True)
    yield hs
    for h in hs.values():
        reset(h)
        h.close()


def run_cli(*args: str, inventory: Path | None = ROOT / "inventory" / "lab.yaml",
            timeout: float = 600) -> subprocess.CompletedProcess[str]:
    argv = [*MIGRATOR] + (["-i", str(inventory)] if inventory else []) + list(args)
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def kill_cli_at(line_start: str, *args: str) -> None:
    """Run the CLI with `args` and SIGKILL it as it prints a line starting with
    `line_start` (a phase starting: "freeze ..."), as a controller that dies there."""
    p = subprocess.Popen([*MIGRATOR, "-i", str(ROOT / "inventory" / "lab.yaml"), *args], cwd=ROOT,
                         stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    assert p.stderr is not None
    for line in p.stderr:
        if line.startswith(line_start):
            p.send_signal(signal.SIGKILL)
            break
    p.wait()
    assert p.returncode == -signal.SIGKILL, f"never reached {line_start!r}"


def fill(r: redis.Redis, n: int, prefix: str = "k") -> None:
    p = r.pipeline(transaction=False)
    for i in range(n):
        p.set(f"{prefix}{i}", f"v{i}")
        if i % 10000 == 9999:
            p.execute()
    p.execute()


def check_all(r: redis.Redis, n: int, prefix: str = "k") -> None:
    p = r.pipeline(transaction=False)
    for i in range(n):
        p.get(f"{prefix}{i}")
    vals = p.execute()
    missing = [i for i, v in enumerate(vals) if v != f"v{i}".encode()]
    assert not missing, f"{len(missing)} keys missing or wrong, first {missing[:5]}"


# The fault tests' outcomes, written as the README's fault table at the end of the session.
FAULT_ROWS: list[tuple[str, str, str, str]] = []


def record(fault: str, phase: str, outcome: str, hosts: dict[str, LabHost],
           data: str = "none (every key checked)") -> None:
    """Call after the test's invariant held: the row says what was checked."""
    FAULT_ROWS.append((fault, phase, outcome, data))


# The support matrix (engine x store x network mode), from the tests that moved or refused
# each pair; written as the README's table at the end of the session.
SUPPORT_ROWS: list[tuple[str, str, str, str]] = []


def record_support(source: str, target: str, container: str, outcome: str) -> None:
    """Call after the test's checks held: the row says what works where."""
    SUPPORT_ROWS.append((source, target, container, outcome))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if FAULT_ROWS:
        lines = ["| fault | phase | outcome | data lost |", "|---|---|---|---|"]
        lines += [f"| {f} | {p} | {o} | {d} |" for f, p, o, d in FAULT_ROWS]
        (ROOT / "tests" / "faults.md").write_text("\n".join(lines) + "\n")
    if SUPPORT_ROWS:
        lines = ["| source | target | container | outcome |", "|---|---|---|---|"]
        lines += [f"| {s} | {t} | {c} | {o} |" for s, t, c, o in SUPPORT_ROWS]
        (ROOT / "tests" / "support.md").write_text("\n".join(lines) + "\n")
