"""Operators' own commands at a migration's turning points (`--hook STAGE=COMMAND`): run on
the controller with the move's facts in MIGRATOR_* environment variables, never in the
command's text, so that nothing of a container's or host's name is ever parsed by a shell.

- pre-freeze: before the source is frozen (its target copy made, nothing frozen yet); one
  that fails stops the move: what the presync made is removed, exit 2.
- post-restore: the target copy runs and answers (e.g. repoint DNS or a load balancer);
  one that fails is a warning: the move stands.
- post-rollback: the move failed and the source runs again (MIGRATOR_ERROR says why).
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import asdict, dataclass
from typing import Any

from .errors import MigratorError

STAGES = ("pre-freeze", "post-restore", "post-rollback")
TIMEOUT_S = 300


class HookFailed(MigratorError):
    """A pre-freeze hook failed: the move did not start (exit 2)."""


@dataclass
class HookRun:
    stage: str
    command: str
    rc: int
    output: str  # its stdout and stderr, the end of them
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse(specs: list[str] | None) -> dict[str, list[str]]:
    """`STAGE=COMMAND` options into {stage: [command, ...]}, in the order given."""
    hooks: dict[str, list[str]] = {}
    for spec in specs or []:
        stage, eq, command = spec.partition("=")
        stage = stage.strip()
        if not eq or stage not in STAGES or not command.strip():
            raise MigratorError(f"--hook {spec!r}: give STAGE=COMMAND", hint=f"stages: {', '.join(STAGES)}")
        hooks.setdefault(stage, []).append(command)
    return hooks


def check(hooks: dict[str, list[str]] | None) -> dict[str, list[str]]:
    """Hooks given as data (a playbook's): {stage: command or [commands]}, checked."""
    out: dict[str, list[str]] = {}
    for stage, commands in (hooks or {}).items():
        if stage not in STAGES:
            raise MigratorError(f"hook stage {stage!r} is unknown", hint=f"stages: {', '.join(STAGES)}")
        listed = [commands] if isinstance(commands, str) else commands
        if not isinstance(listed, list) or not all(isinstance(c, str) and c.strip() for c in listed):
            raise MigratorError(f"hook {stage}: give a command, or a list of them")
        out[stage] = list(listed)
    return out


def run(hooks: dict[str, list[str]], stage: str, facts: dict[str, str]) -> list[HookRun]:
    """Run the commands of `stage` in turn, each with `facts` as MIGRATOR_* variables (and
    MIGRATOR_STAGE); the first that fails ends the stage's run. Returns what ran."""
    env = {**os.environ, **{f"MIGRATOR_{k.upper()}": v for k, v in facts.items()}, "MIGRATOR_STAGE": stage}
    ran = []
    for command in hooks.get(stage, []):
        t0 = time.monotonic()
        try:
            p = subprocess.run(["/bin/sh", "-c", command], env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=TIMEOUT_S)
            rc, output = p.returncode, p.stdout
        except subprocess.TimeoutExpired as ex:
            rc, output = 124, (ex.stdout or b"") + f"\ntimed out after {TIMEOUT_S} s".encode()
        ran.append(HookRun(stage, command, rc, output.decode(errors="replace").strip()[-2000:],
                           round(time.monotonic() - t0, 3)))
        if rc != 0:
            break
    return ran
