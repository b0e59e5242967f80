"""Playbooks: YAML lists of steps over inventory hosts, `serial` hosts at a time.

    name: rolling patch
    hosts: [web]            # hosts or groups from the inventory
    serial: 1
    vars: {upgrade: "apt-get update && apt-get -y upgrade"}
    steps:
      - drain: {parallel: 2}
      - run: "{{ upgrade }}"
      - reboot: {}
      - wait_for_ssh: {timeout: 600}
      - uncordon: {}

Every step runs on the batch's hosts in turn; `{{ host }}` and `vars` (overridden by
`-e k=v`) are substituted in strings. In a `run` or `reboot` command each is substituted
quoted, one shell word whatever it holds (`run: "bash -c {{ upgrade }}"` runs a variable
that holds a command). Parameters are checked at load, with the file and line of their
step. A failed step stops the play and says how to resume.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import binds, fleet, hooks, hosts, shell, store
from .errors import MigratorError, PlaybookError
from .inventory import Inventory
from .migrate import Migration
from .project import ProjectMove
from .transport import Host, wait_for

MOVE_PARAMS = {"bind_mounts", "connections", "hooks"}  # what a step that moves containers passes on (_moving)
ACTIONS = {"cordon", "uncordon", "drain", "run", "reboot", "wait_for_ssh", "migrate", "checkpoint", "confirm",
           "move_back"}
PARAMS: dict[str, set[str]] = {
    "cordon": {"reason"}, "uncordon": set(), "drain": {"to", "select", "parallel", *MOVE_PARAMS},
    "run": {"command", "timeout"}, "reboot": {"command", "engine"}, "wait_for_ssh": {"timeout"},
    "move_back": {"parallel", *MOVE_PARAMS},
    "migrate": {"container", "project", "to", *MOVE_PARAMS}, "checkpoint": {"container", "keep", "bind_mounts"},
    "confirm": {"message"},
}
VAR_RE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
REQUIRED: dict[str, set[str]] = {"run": {"command"}, "migrate": {"to"}, "checkpoint": {"container"}}
SHELL_PARAMS = {"command", "hooks"}  # what reaches a shell (run, reboot, hooks): variables go in quoted


def _number(v: Any, kind: type) -> float | None:
    """v as a number of `kind` (a value from a variable is a string: "900"), or None."""
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        return None
    try:
        return float(kind(v))
    except ValueError:
        return None


def _seconds(v: Any) -> bool:
    n = _number(v, float)
    return n is not None and n > 0


def _count(v: Any) -> bool:
    n = _number(v, int)
    return n is not None and n >= 1


def _text(v: Any) -> bool:
    return isinstance(v, str) and v != ""


def _hosts(v: Any) -> bool:
    return _text(v) or (isinstance(v, list) and bool(v) and all(_text(x) for x in v))


def _select(v: Any) -> bool:
    return _text(v) and "=" in v


def _bind_mode(v: Any) -> bool:
    return v in binds.MODES


def _hooks(v: Any) -> bool:
    try:
        return isinstance(v, dict) and bool(hooks.check(v))
    except MigratorError:
        return False


def _moving(p: dict[str, Any]) -> dict[str, Any]:
    """A moving step's options for its migrations (MOVE_PARAMS)."""
    return {"bind_mounts": p.get("bind_mounts"), "connections": p.get("connections"),
            "hooks": hooks.check(p.get("hooks"))}


# Each parameter's type: a check and what the message says it must be (text if not here).
TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "timeout": (_seconds, "a number of seconds"), "parallel": (_count, "a whole number >= 1"),
    "keep": (_count, "a whole number >= 1"), "to": (_hosts, "a host, a list of hosts or h1,h2"),
    "select": (_select, "LABEL=VALUE"), "bind_mounts": (_bind_mode, "one of " + ", ".join(binds.MODES)),
    "engine": (lambda v: _text(v) or _seconds(v), "an engine version (26, 28)"),
    "connections": (lambda v: v in ("keep", "close"), "keep or close"),
    "hooks": (_hooks, f"a mapping of stage ({', '.join(hooks.STAGES)}) to a command"),
}
Say = Callable[[str], None]


@dataclass
class Step:
    index: int  # 1-based
    action: str
    params: dict[str, Any]
    name: str

    def label(self) -> str:
        return f"step {self.index} ({self.name})"


@dataclass
class Playbook:
    path: Path
    name: str
    hosts: list[str]
    serial: int
    vars: dict[str, str]
    steps: list[Step]


@dataclass
class StepResult:
    step: int
    name: str
    host: str
    ok: bool
    detail: str = ""
    seconds: float = 0.0


@dataclass
class PlayReport:
    playbook: str
    dry_run: bool
    results: list[StepResult] = field(default_factory=list)
    plans: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


def check_params(action: str, params: dict[str, Any], where: str) -> None:
    """Each parameter of a step has its type (TYPES; text otherwise); `where` names the
    step in the message. Values with a variable in them are checked once substituted."""
    for key, value in params.items():
        if isinstance(value, str) and VAR_RE.search(value):
            continue
        check, must = TYPES.get(key, (_text, "text"))
        if not check(value):
            raise PlaybookError(f"{where} ({action}): {key} must be {must}, not {value!r}")


def _step_lines(text: str) -> list[int]:
    """The line (1-based) where each step starts, from the YAML's own node marks."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return []
    if not isinstance(root, yaml.MappingNode):
        return []
    for k, v in root.value:
        if k.value == "steps" and isinstance(v, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in v.value]
    return []


def load(path: Path, extra_vars: dict[str, str] | None = None) -> Playbook:
    try:
        text = path.read_text()
        doc = yaml.safe_load(text)
    except FileNotFoundError:
        raise PlaybookError(f"playbook {path} not found") from None
    except yaml.YAMLError as ex:
        raise PlaybookError(f"{path}: not valid YAML: {ex}") from None
    if not isinstance(doc, dict):
        raise PlaybookError(f"{path}: a playbook is a mapping with 'hosts' and 'steps'")
    unknown = set(doc) - {"name", "hosts", "serial", "vars", "steps"}
    if unknown:
        raise PlaybookError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}")
    variables = {str(k): str(v) for k, v in (doc.get("vars") or {}).items()}
    variables.update(extra_vars or {})
    h = _subst(doc.get("hosts"), variables, path)
    host_list = [x.strip() for x in h.split(",")] if isinstance(h, str) else h
    if not isinstance(host_list, list) or not host_list:
        raise PlaybookError(f"{path}: 'hosts' must name hosts or groups")
    serial = doc.get("serial", 1)
    if not isinstance(serial, int) or serial < 1:
        raise PlaybookError(f"{path}: 'serial' must be a whole number >= 1")
    steps = []
    lines = _step_lines(text)
    for i, raw in enumerate(doc.get("steps") or [], start=1):
        where = f"{path}:{lines[i - 1]}: step {i}" if i <= len(lines) else f"{path}: step {i}"
        if not isinstance(raw, dict):
            raise PlaybookError(f"{path}: step {i} must be a mapping like '- drain: {{}}'")
        acts = [k for k in raw if k != "name"]
        if len(acts) != 1 or acts[0] not in ACTIONS:
            raise PlaybookError(f"{path}: step {i}: one action of {', '.join(sorted(ACTIONS))} "
                                f"(found {', '.join(map(str, acts)) or 'none'})")
        action = acts[0]
        params = raw[action]
        if action == "run" and isinstance(params, str):
            params = {"command": params}
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise PlaybookError(f"{path}: step {i} ({action}): parameters must be a mapping")
        bad = set(params) - PARAMS[action]
        if bad:
            raise PlaybookError(f"{path}: step {i} ({action}): unknown parameter(s) {', '.join(sorted(bad))}"
                                f" (known: {', '.join(sorted(PARAMS[action])) or 'none'})")
        missing = REQUIRED.get(action, set()) - set(params)
        if missing:
            raise PlaybookError(f"{path}: step {i} ({action}): missing {', '.join(sorted(missing))}")
        if action == "migrate" and ("container" in params) == ("project" in params):
            raise PlaybookError(f"{path}: step {i} (migrate): name a container or a project (one of them)")
        check_params(action, params, where)
        steps.append(Step(i, action, params, str(raw.get("name") or action)))
    if not steps:
        raise PlaybookError(f"{path}: no steps")
    return Playbook(path, str(doc.get("name") or path.stem), [str(x) for x in host_list], serial, variables,
                    steps)


def _subst(value: Any, variables: dict[str, str], path: Path, quote: bool = False) -> Any:
    """`{{ name }}` replaced by its value; with `quote`, by its value as one shell word."""
    if isinstance(value, str):
        def one(m: re.Match[str]) -> str:
            if m[1] not in variables:
                raise PlaybookError(f"{path}: undefined variable {m[1]!r}", hint=f"pass -e {m[1]}=VALUE")
            return shell.quote(variables[m[1]]) if quote else variables[m[1]]
        return VAR_RE.sub(one, value)
    if isinstance(value, list):
        return [_subst(v, variables, path, quote) for v in value]
    if isinstance(value, dict):
        return {k: _subst(v, variables, path, quote or k in SHELL_PARAMS) for k, v in value.items()}
    return value


def _host_list(v: Any) -> list[str] | None:
    if v is None:
        return None
    return [x.strip() for x in v.split(",")] if isinstance(v, str) else [str(x) for x in v]


class Play:
    def __init__(self, inv: Inventory, pb: Playbook, *, limit: list[str] | None = None,
                 say: Say | None = None, confirm: Callable[[str], bool] | None = None,
                 reboot_lab: Callable[[str, str | None], None] | None = None) -> None:
        self.inv, self.pb = inv, pb
        self.hosts = [h.name for h in inv.resolve(pb.hosts)]
        if limit:
            for n in limit:
                inv.host(n)
            self.hosts = [h for h in self.hosts if h in limit]
        self.say = say or (lambda _m: None)
        self.confirm = confirm
        self.reboot_lab = reboot_lab

    def batches(self) -> list[list[str]]:
        return [self.hosts[i:i + self.pb.serial] for i in range(0, len(self.hosts), self.pb.serial)]

    def _start_index(self, start_at: str | None) -> int:
        if start_at is None:
            return 1
        for s in self.pb.steps:
            if start_at in (str(s.index), s.name):
                return s.index
        raise PlaybookError(f"--start-at {start_at!r}: no such step (1..{len(self.pb.steps)} or a name)")

    def run(self, *, dry_run: bool = False, start_at: str | None = None) -> PlayReport:
        rep = PlayReport(self.pb.name, dry_run)
        first = self._start_index(start_at)
        for bi, batch in enumerate(self.batches()):
            for step in self.pb.steps:
                if bi == 0 and step.index < first:
                    continue
                for host in batch:
                    params = _subst(step.params, {**self.pb.vars, "host": host}, self.pb.path)
                    check_params(step.action, params, f"{self.pb.path}: step {step.index}")
                    t0 = time.monotonic()
                    self.say(f"[{host}] {step.label()}" + (" (dry run)" if dry_run else ""))
                    try:
                        detail = self._do(step.action, host, params, dry_run, rep)
                        rep.results.append(StepResult(step.index, step.name, host, True, detail,
                                                      round(time.monotonic() - t0, 2)))
                    except MigratorError as ex:
                        rep.results.append(StepResult(step.index, step.name, host, False, str(ex),
                                                      round(time.monotonic() - t0, 2)))
                        remaining = [h for b in self.batches()[bi:] for h in b]
                        rep.error = (f"{step.label()} failed on {host}: {ex}. Fix it, then resume with: "
                                     f"migrator play {self.pb.path} --limit {','.join(remaining)} "
                                     f"--start-at {step.index}")
                        err = PlaybookError(rep.error)
                        err.report = rep
                        raise err from None
        return rep

    def _move_back(self, host: str, rep: PlayReport, parallel: int, options: dict[str, Any]) -> str:
        """The containers this play's drain of `host` moved away go back to it."""
        moved = [(m["container"], m["target"], m.get("project") or "") for plan in rep.plans
                 if plan["source"] == host for m in plan["moves"] if m["outcome"] == "migrated" and m["target"]]
        if not moved:
            return "nothing to move back"
        back = fleet.Plan(host, [fleet.Move(container, target, host, project=project)
                                 for container, target, project in moved], [])
        fleet.execute(self.inv, back, parallel, **options)
        failed = [f"{m.container}: {m.error}" for m in back.moves if m.outcome != "migrated"]
        if failed:
            raise PlaybookError(f"moving back to {host} failed: {'; '.join(failed)}")
        return ", ".join(f"{c}<-{t}" for c, t, _ in moved)

    def _do(self, action: str, host: str, p: dict[str, Any], dry_run: bool, rep: PlayReport) -> str:
        spec = self.inv.host(host)
        if action == "drain":
            plan = fleet.drain(self.inv, host, to=_host_list(p.get("to")), select=p.get("select"),
                               parallel=int(p.get("parallel", 1)), dry_run=dry_run, reason="playbook",
                               **_moving(p))
            rep.plans.append(plan.to_dict())
            moved = ", ".join(f"{m.container}->{m.target or 'stays'}" for m in plan.moves)
            moved = moved or "nothing to move"
            if not dry_run and not fleet.drain_ok(plan):
                bad = [f"{m.container}: {m.error or m.reason}" for m in plan.moves
                       if m.outcome not in ("migrated", "stays") or (not m.target and not m.pinned)]
                raise PlaybookError(f"drain of {host} incomplete: {'; '.join(bad)}")
            return moved
        if action == "confirm":
            msg = p.get("message") or f"continue with {host}?"
            if dry_run:
                return f"would ask: {msg}"
            if self.confirm is None or not self.confirm(msg):
                raise PlaybookError(f"not confirmed: {msg}", hint="answer yes, or pass --yes")
            return "confirmed"
        if dry_run:
            return f"would {action} {p}" if p else f"would {action}"
        if action == "wait_for_ssh":
            timeout = float(p.get("timeout", 300))
            if not wait_for(lambda: hosts.probe(spec, timeout=5).reachable, timeout, 1.0):
                raise PlaybookError(f"{host}: not reachable over SSH + docker after {timeout:.0f} s")
            return "reachable"
        if action == "reboot" and spec.labels.get("reboot") == "lab" and "command" not in p:
            if self.reboot_lab is None:
                raise PlaybookError(f"{host} is a lab host; reboot it with `migrator lab restart {host}`")
            engine = str(p["engine"]) if p.get("engine") else None
            self.reboot_lab(host, engine)
            return f"lab host restarted with Docker {engine}" if engine else "lab host restarted (dockerd and sshd)"
        if action == "reboot" and p.get("engine"):
            raise PlaybookError(f"{host}: reboot's engine is for lab hosts; upgrade a real host's Docker with a "
                                "`run` step before the reboot")
        if action == "move_back":
            return self._move_back(host, rep, int(p.get("parallel", 1)), _moving(p))
        with Host(spec) as h:
            if action == "cordon":
                hosts.cordon(h, p.get("reason", "playbook"))
                return "cordoned"
            if action == "uncordon":
                hosts.uncordon(h)
                return "uncordoned"
            if action == "run":
                r = h.run(["bash", "-c", str(p["command"])], check=False,
                          timeout=float(p.get("timeout", 3600)))
                if not r.ok:
                    raise PlaybookError(f"{host}: `{p['command']}` exited {r.rc}: {r.stderr.strip()[-300:]}")
                return (r.stdout.strip().splitlines() or [""])[-1][:200]
            if action == "reboot":
                h.run(["bash", "-c", str(p.get("command", "systemctl reboot || reboot"))], check=False,
                      timeout=30)
                return "reboot requested"
            if action == "checkpoint":
                s = store.create(h, str(p["container"]), leave_running=True,
                                 keep=int(p["keep"]) if "keep" in p else None, bind_mounts=p.get("bind_mounts"))
                return f"checkpoint {s.name}"
        if action == "migrate" and "project" in p:
            r3 = ProjectMove(self.inv, str(p["project"]), host, str(p["to"]), **_moving(p)).run()
            return f"project {r3.project} ({len(r3.moves)} containers) migrated in {r3.total_s:.1f} s"
        if action == "migrate":
            r2 = Migration(self.inv, str(p["container"]), host, str(p["to"]), **_moving(p)).run()
            return f"migrated in {r2.total_s:.1f} s (downtime {r2.downtime_s:.2f} s)"
        raise PlaybookError(f"unknown action {action}")
