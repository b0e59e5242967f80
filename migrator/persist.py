"""Rolling checkpoints: while a container runs, checkpoint it every interval (leaving it
running), keep the newest N, optionally copy each to a second host, so that its state
survives a stop or a crash. Transient SSH/docker errors are retried with backoff and
reported."""

from __future__ import annotations

import re
import shlex
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from tenacity import RetryCallState, retry, retry_if_exception_type, stop_after_delay, wait_exponential

from . import store
from .container import validate_name
from .engine import Engine
from .errors import ConnectionError_, DaemonUnreachable, MigratorError
from .transport import Host

T = TypeVar("T")
Say = Callable[[str], None]
# Only what may pass by itself: SSH to the host, or its Docker daemon, not answering. A
# command or a daemon that answered with a failure (CRIU's, tar's, a refusal) fails the same
# way again: it is reported at once, not retried for a minute.
TRANSIENT = (ConnectionError_, DaemonUnreachable)
DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")


def parse_duration(text: str) -> float:
    """'500ms', '5s', '2m', '1h' or plain seconds."""
    m = DURATION_RE.match(text.strip())
    if not m:
        raise MigratorError(f"{text!r} is not a duration", hint="e.g. 5s, 2m, 1h")
    value = float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]
    if value <= 0:
        raise MigratorError(f"{text!r}: the interval must be positive")
    return value


class Persist:
    def __init__(self, host: Host, container: str, every: float, keep: int, *,
                 replicate_to: Host | None = None, say: Say | None = None,
                 stop: threading.Event | None = None, retry_for: float = 60.0,
                 bind_mounts: str | None = None) -> None:
        if keep < 1:
            raise MigratorError("--keep must be at least 1")
        self.host, self.container = host, validate_name(container)
        self.every, self.keep, self.replica = every, keep, replicate_to
        self.say = say or (lambda _m: None)
        self.stop = stop or threading.Event()
        self.retry_for = retry_for
        self.taken = 0
        self.bind_mounts = bind_mounts

    def _retrying(self, what: str, fn: Callable[[], T]) -> T:
        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            wait = state.next_action.sleep if state.next_action else 0.0
            self.say(f"{what} failed ({exc}); retrying in {wait:.1f} s")

        wrapped = retry(retry=retry_if_exception_type(TRANSIENT), stop=stop_after_delay(self.retry_for),
                        wait=wait_exponential(multiplier=0.5, max=10), before_sleep=before_sleep,
                        reraise=True)(fn)
        return wrapped()

    def running(self) -> bool:
        info = Engine(self.host).inspect(self.container)
        return bool(info and info["State"].get("Running"))

    def once(self) -> store.Stored:
        t0 = time.monotonic()
        s = self._retrying("checkpoint", lambda: store.create(self.host, self.container, leave_running=True,
                                                               keep=self.keep, bind_mounts=self.bind_mounts))
        line = f"{s.name}: {s.size / 1048576:.1f} MiB in {time.monotonic() - t0:.2f} s"
        if self.replica is not None:
            rep = self.replica
            self._retrying(f"copy to {rep.name}", lambda: store.replicate(self.host, rep, s, keep=self.keep))
            line += f"; copied to {rep.name}"
        self.say(line)
        self.taken += 1
        return s

    def run(self) -> int:
        """Until the container stops or `stop` is set. Returns how many were taken."""
        while not self.stop.is_set():
            t0 = time.monotonic()
            if not self._retrying("inspect", self.running):
                self.say(f"{self.container} is not running on {self.host.name}; persist ends")
                break
            try:
                self.once()
            except MigratorError:
                if not self._retrying("inspect", self.running):  # it stopped during the dump
                    self.say(f"{self.container} stopped; persist ends")
                    break
                raise
            self.stop.wait(max(0.0, self.every - (time.monotonic() - t0)))
        return self.taken


def systemd_unit(inventory: Path, container: str, host: str, every: str, keep: int,
                 replicate_to: str | None, bind_mounts: str | None = None) -> str:
    """A unit that runs this persist as a service (restarted if it fails)."""
    argv = [sys.argv[0] if Path(sys.argv[0]).name == "migrator" else "migrator",
            "-i", str(inventory.resolve()), "persist", container, "--on", host, "--every", every,
            "--keep", str(keep)]
    if replicate_to:
        argv += ["--replicate-to", replicate_to]
    if bind_mounts:
        argv += ["--bind-mounts", bind_mounts]
    return (
        "[Unit]\n"
        f"Description=migrator: rolling checkpoints of {container} on {host}\n"
        "After=network-online.target\nWants=network-online.target\n\n"
        "[Service]\n"
        f"ExecStart={shlex.join(argv)}\n"
        "Restart=on-failure\nRestartSec=10\n\n"
        "[Install]\nWantedBy=multi-user.target\n"
    )


def unit_name(container: str, host: str) -> str:
    return f"migrator-persist-{container}-{host}.service"
