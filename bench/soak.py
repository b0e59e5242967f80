"""`make soak`: a randomized fault soak on the lab (not part of `make test`).

Round after round, one operation on a Redis (`migrator-soak`, 2,000 keys) under a client
INCRing a counter every few ms wherever it answers: a migrate, a drain of its host, a clone,
or a checkpoint (what persist takes) then a crash and a restore from it on another host;
with one fault from the matrix injected at a random moment of it (or none): the link cut,
dockerd or sshd killed on either side, criu killed, the controller SIGKILLed (then
`migrator recover`), the target's checkpoint area full, a byte corrupted or the pages cut
short on arrival. After each round, with the faults undone and `recover` run, the
invariant: exactly one running copy, every key on it, every acknowledged INCR on it (for a
restore: every one acknowledged before its checkpoint), nothing left on any host. A round
that breaks it is printed with what it found, and the soak exits 1.

    python bench/soak.py [--minutes 20] [--rounds N] [--seed S]

Writes bench/results/soak-<time>.json and .md (rounds, faults by kind, outcomes, writes
lost, leftovers). Only touches what it made: its containers (label migrator.soak), their
checkpoints, the cordon of a host it drained.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from migrator import journal  # noqa: E402
from migrator.inventory import load  # noqa: E402
from migrator.lab import Lab  # noqa: E402
from migrator.lab.faults import corrupting, criu_killer, cut_link, leftovers, wipe  # noqa: E402
from migrator.transport import Host, wait_for  # noqa: E402

NAME, CLONE, LABEL = "migrator-soak", "migrator-soak-clone", "migrator.soak=1"
KEYS = 2000
INV = ROOT / "inventory" / "lab.yaml"
CLI = [sys.executable, "-m", "migrator.cli", "-i", str(INV)]
OPS = ["migrate", "drain", "clone", "checkpoint+restore"]
FAULTS = ["none", "link cut", "source dockerd killed", "target dockerd killed", "source sshd killed",
          "target sshd killed", "criu killed", "controller killed", "target disk full", "corrupt byte",
          "pages cut short"]


class Writer:
    """INCR a counter every 3 ms at whichever host answers; the highest acknowledged value."""

    def __init__(self, addresses: list[str]) -> None:
        self.addresses, self.acked, self.stop = addresses, 0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        clients = [redis.Redis(a, 6379, socket_timeout=0.3, socket_connect_timeout=0.3,
                               retry=Retry(NoBackoff(), 0)) for a in self.addresses]
        while not self.stop.is_set():
            for c in clients:
                try:
                    self.acked = max(self.acked, int(c.incr("n")))
                    break
                except (redis.RedisError, OSError):
                    continue
            time.sleep(0.003)


class Round:
    """One operation, one fault, and what came of them."""

    def __init__(self, lab: Lab, rng: random.Random, home: str, names: list[str]) -> None:
        self.lab, self.rng, self.home = lab, rng, home
        self.target = rng.choice([n for n in names if n != home])
        self.op, self.fault = rng.choice(OPS), rng.choice(FAULTS)
        self.delay = round(rng.uniform(0.0, 2.5), 2)
        self.step = rng.choice([0, 1]) if self.op == "checkpoint+restore" else 0  # the command it hits
        self.phase = "-"  # the CLI's phase now
        self.fired_in = "-"  # and when the fault fired
        self.hit = self.fault == "none"
        self.undo: list[Any] = []

    def sides(self) -> tuple[str, str]:
        """The hosts the faulted command works on: a checkpoint only on the container's."""
        local = self.op == "checkpoint+restore" and self.step == 0
        return (self.home, self.home) if local else (self.home, self.target)

    def argv(self) -> list[list[str]]:
        if self.op == "migrate":
            return [["migrate", NAME, "--from", self.home, "--to", self.target]]
        if self.op == "drain":
            return [["drain", self.home, "--to", self.target, "--select", LABEL]]
        if self.op == "clone":
            return [["clone", NAME, "--from", self.home, "--to", self.target, "--name", CLONE, "-p", "6390:6379"]]
        return [["checkpoint", "create", NAME, "--on", self.home, "--leave-running", "--name", "soak"],
                ["restore", NAME, "--on", self.target, "--from", self.home, "--checkpoint", "soak"]]

    def fire(self, proc: subprocess.Popen[str], inv: Any) -> None:
        """The fault, now."""
        lab, f = self.lab, self.fault
        src, dst = (lab.host(n) for n in self.sides())
        self.hit, self.fired_in = True, self.phase
        if f == "link cut":
            try:
                cut_link(inv, self.home, NAME)
            except Exception:  # noqa: BLE001 - no migration holds a link now: cut the wire
                veth = f"mgv-{dst.name}"
                subprocess.run(["ip", "link", "set", veth, "down"], check=True)
                self.undo.append(lambda: subprocess.run(["ip", "link", "set", veth, "up"], check=True))
        elif f.endswith("dockerd killed"):
            h = src if f.startswith("source") else dst
            os.kill(int((Path(h.dir) / "dockerd.pid").read_text()), signal.SIGKILL)
            self.undo.append(lambda: lab.start_dockerd(h))
        elif f.endswith("sshd killed"):
            h = src if f.startswith("source") else dst
            lab.stop_service(h, "sshd")
            self.undo.append(lambda: lab.start_service(h, "sshd"))
        elif f == "controller killed":
            proc.send_signal(signal.SIGKILL)
        elif f == "target disk full":
            lab.ns_exec(dst, ["bash", "-c", "rm -f /dev/shm/migrator/*/img/pages-1.img /dev/shm/migrator/*/reserve; "
                              "u=$(df --output=used -k /dev/shm | tail -1); "
                              "mount -o remount,size=$((u + 4))k /dev/shm"])
            self.undo.append(lambda: lab.ns_exec(dst, ["mount", "-o", "remount,size=50%", "/dev/shm"]))

    def run(self, inv: Any) -> list[int]:
        """Each command of the operation, the fault fired inside the first; their exit codes
        (-9: the controller was killed)."""
        codes: list[int] = []
        for i, argv in enumerate(self.argv()):
            if i == 1:  # the restore: the container crashed after its checkpoint
                if codes[0] != 0:
                    break
                self.lab.ns_exec(self.lab.host(self.home), ["docker", "kill", NAME], check=False)
            codes.append(self._one(argv, inv, i == self.step and self.fault != "none"))
        return codes

    def _one(self, argv: list[str], inv: Any, inject: bool) -> int:
        tool = {"corrupt byte": "tar", "pages cut short": "dd"}.get(self.fault) if inject else None
        src, dst = self.sides()
        killer = None
        if inject and self.fault == "criu killed":
            killer, killed = criu_killer(self.lab, dst if argv[0] == "restore" else src,
                                         after=self.rng.uniform(0, 0.2), within=15)
            killer.start()
        with corrupting(self.lab, dst, tool) if tool else _nothing():
            p = subprocess.Popen([*CLI, *argv], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 text=True)
            timer = None
            if inject and self.fault not in ("criu killed", "corrupt byte", "pages cut short"):
                timer = threading.Timer(self.delay, self._fire_safely, (p, inv))
                timer.start()
            assert p.stderr is not None
            for line in p.stderr:
                if line.endswith(" ...\n") and not line.startswith(" "):
                    self.phase = line.split()[0]
            p.wait()
            if timer:
                timer.cancel()
                timer.join()
        if killer:
            killer.join()
            self.hit = bool(killed)
        elif tool:
            self.hit = True
        return p.returncode

    def _fire_safely(self, proc: subprocess.Popen[str], inv: Any) -> None:
        if proc.poll() is None:
            self.fire(proc, inv)

    def heal(self) -> None:
        for fn in reversed(self.undo):
            fn()
        self.undo.clear()


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *_: object) -> None:
        return None


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def ours(h: Host) -> list[tuple[str, str]]:
    """(name, state) of the soak's containers on a host."""
    out = h.run(["docker", "ps", "-a", "--filter", f"label={LABEL}", "--format", "{{.Names}} {{.State}}"]).stdout
    return [tuple(x.split(" ", 1)) for x in out.splitlines() if x.strip()]  # type: ignore[misc]


def check(hosts: dict[str, Host], floor: int) -> tuple[str | None, list[str], int]:
    """(its host, what breaks the invariant, writes lost)."""
    running = [n for n, h in hosts.items() if (NAME, "running") in ours(h)]
    if len(running) != 1:
        return None, [f"{NAME} runs on {running or 'no host'}"], 0
    where = running[0]
    r = redis.Redis(hosts[where].spec.address, 6379, socket_timeout=5)
    if not wait_for(lambda: _pings(r), 20):
        return where, [f"{NAME} on {where} does not answer"], 0
    problems: list[str] = []
    n = int(r.get("n") or 0)
    lost = max(0, floor - n)
    if lost:
        problems.append(f"counter {n} < {floor} acknowledged")
    vals = r.mget([f"k{i}" for i in range(KEYS)])
    missing = sum(v != f"v{i}".encode() for i, v in enumerate(vals))
    if missing:
        problems.append(f"{missing} keys missing")
    return where, problems + left_behind(hosts, where), lost


def left_behind(hosts: dict[str, Host], where: str) -> list[str]:
    """Migration leftovers on any host, and soak containers other than the one on `where`."""
    problems = []
    for name, h in hosts.items():
        left = {k: v for k, v in leftovers(h).items() if v}
        extra = [c for c in ours(h) if c[0] != NAME or name != where]
        if left or extra:
            problems.append(f"{name} keeps {left or ''} {extra or ''}".strip())
    return problems


def stopped_by_its_dockerd(rd: Round, codes: list[int], hosts: dict[str, Host]) -> str | None:
    """The host whose dockerd, killed after the operation succeeded, stopped the one copy as
    it restarted (dockerd without live-restore stops every container of its host: the host's
    behaviour, the same for a container that never moved), or None."""
    if not (rd.hit and rd.fault.endswith("dockerd killed") and codes and codes[-1] == 0):
        return None
    killed = rd.sides()[0 if rd.fault.startswith("source") else 1]
    copies = {n: ours(h) for n, h in hosts.items()}
    alone = all(not c for n, c in copies.items() if n != killed)
    return killed if alone and copies[killed] == [(NAME, "exited")] else None


def _pings(r: redis.Redis) -> bool:
    try:
        return bool(r.ping())
    except (redis.RedisError, OSError):
        return False


def tidy(lab: Lab, hosts: dict[str, Host], keep_on: str | None) -> None:
    """Back to one running copy on `keep_on` (after a round that broke the invariant, so the
    next starts clean): the soak's other containers, its checkpoints, every migration
    leftover and the journal removed."""
    for name, h in hosts.items():
        for c, state in ours(h):
            if c != NAME or name != keep_on or state != "running":
                h.run(["docker", "rm", "-f", c], check=False)
        h.run(["rm", "-rf", f"/var/lib/migrator/checkpoints/{NAME}"], check=False)
        wipe(h)  # what the broken round left: the next round's findings are its own
    for entry in journal.load_all():
        entry.remove()


def start(h: Host) -> None:
    h.run(["docker", "run", "-d", "--name", NAME, "--label", LABEL, "-p", "6379:6379", "lab/redis"])
    r = redis.Redis(h.spec.address, 6379)
    wait_for(lambda: _pings(r), 20)
    p = r.pipeline(transaction=False)
    for i in range(KEYS):
        p.set(f"k{i}", f"v{i}")
    p.execute()


def soak(minutes: float, rounds: int | None, seed: int, out_dir: Path) -> int:
    os.environ["MIGRATOR_STATE_DIR"] = str(ROOT / ".soak-state")
    rng = random.Random(seed)  # noqa: S311 - a fault schedule, not a secret
    lab = Lab()
    was_up = bool(lab.hosts()) and all(lab.healthy(h) for h in lab.hosts())
    lab.up(3, INV)
    inv = load(INV)
    names = [h.name for h in lab.hosts()[:3]]
    hosts = {n: Host(inv.host(n)) for n in names}
    results: list[dict[str, Any]] = []
    try:
        for h in hosts.values():
            if ours(h):
                raise SystemExit(f"{h.spec.name} has containers labelled {LABEL} already: remove them first")
        home = names[0]
        start(hosts[home])
        deadline = time.monotonic() + minutes * 60
        i = 0
        while time.monotonic() < deadline and (rounds is None or i < rounds):
            i += 1
            rd = Round(lab, rng, home, names)
            w = Writer([hosts[n].spec.address for n in [home, *[x for x in names if x != home]]])
            w.thread.start()
            time.sleep(0.3)
            floor = w.acked
            t0 = time.monotonic()
            try:
                codes = rd.run(inv)
            finally:
                rd.heal()
            for h in hosts.values():  # a connection cut by the fault
                h.close()
            rec = cli("recover", "--json")
            if rd.op == "checkpoint+restore" and codes[-1] != 0:
                # a failed restore keeps the crashed container: the operator restores again
                cli("restore", NAME, "--on", rd.target, "--from", rd.home, "--checkpoint", "soak")
            if rd.op == "drain":
                cli("uncordon", rd.home)
            w.stop.set()
            w.thread.join()
            # what the operation made on purpose goes, as an operator would remove it: the
            # clone, and the crashed original a restore elsewhere replaced
            hosts[rd.target].run(["docker", "rm", "-f", CLONE], check=False)
            if rd.op == "checkpoint+restore" and (NAME, "running") in ours(hosts[rd.target]):
                hosts[rd.home].run(["docker", "rm", "-f", NAME], check=False)
            where, problems, lost = check(hosts, w.acked if rd.op != "checkpoint+restore" else floor)
            stopped_on = stopped_by_its_dockerd(rd, codes, hosts) if where is None else None
            if stopped_on:  # nothing to measure of its writes: what the round left is all to check
                problems = left_behind(hosts, stopped_on)
                hosts[stopped_on].run(["docker", "rm", "-f", NAME])
                start(hosts[stopped_on])
                where = stopped_on
            res = {"round": i, "op": rd.op, "fault": rd.fault, "hit": rd.hit, "phase": rd.fired_in,
                   "delay_s": rd.delay, "exit": codes, "recovered": len(json.loads(rec.stdout or "[]")),
                   "on": where, "writes_acked": w.acked, "writes_lost": lost, "problems": problems,
                   "stopped_by_its_dockerd": bool(stopped_on),
                   "seconds": round(time.monotonic() - t0, 1)}
            results.append(res)
            print(f"{i:3d} {rd.op:18s} {rd.fault:22s} {'hit' if rd.hit else 'missed':6s} at {res['phase']:10s} "
                  f"exit {codes} recovered {res['recovered']} on {where} "
                  f"{'(its dockerd stopped it) ' if stopped_on else ''}"
                  f"{'OK' if not problems else 'BROKEN: ' + '; '.join(problems)}", flush=True)
            if problems:
                tidy(lab, hosts, where)
                if where is None:
                    start(hosts[home])
                    where = home
            for h in hosts.values():
                h.run(["rm", "-rf", f"/var/lib/migrator/checkpoints/{NAME}"], check=False)
            home = where or home
    finally:
        tidy(lab, hosts, None)
        for h in hosts.values():
            h.close()
        if not was_up:
            lab.down()
    write(results, out_dir, seed)
    return 1 if any(r["problems"] for r in results) else 0


def write(results: list[dict[str, Any]], out_dir: Path, seed: int) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%dT%H%M%SZ", time.gmtime())
    (out_dir / f"soak-{stamp}.json").write_text(json.dumps({"seed": seed, "rounds": results}, indent=1))
    faults = collections.Counter(r["fault"] for r in results)
    hit = collections.Counter(r["fault"] for r in results if r["hit"])
    outcome = collections.Counter("ok" if r["exit"][-1] == 0 else f"exit {r['exit'][-1]}" for r in results)
    ops = collections.Counter(r["op"] for r in results)
    lines = [f"# Soak {stamp} (seed {seed})", "",
             f"{len(results)} rounds; writes lost: {sum(r['writes_lost'] for r in results)}; rounds leaving "
             f"something behind or breaking the invariant: {sum(bool(r['problems']) for r in results)}", "",
             f"rounds whose one copy its own dockerd stopped as it restarted, after the operation succeeded "
             f"(dockerd without live-restore stops every container of its host; not counted as lost writes): "
             f"{sum(bool(r.get('stopped_by_its_dockerd')) for r in results)}", "",
             "| fault | rounds | hit |", "|---|---|---|",
             *(f"| {f} | {faults[f]} | {hit[f]} |" for f in FAULTS if faults[f]), "",
             "operations: " + ", ".join(f"{k} {v}" for k, v in ops.most_common()),
             "last exit codes: " + ", ".join(f"{k} {v}" for k, v in outcome.most_common()), ""]
    lines += [f"- round {r['round']}: {r['op']}, {r['fault']}: {'; '.join(r['problems'])}"
              for r in results if r["problems"]]
    (out_dir / f"soak-{stamp}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=20, help="stop starting rounds after this long")
    ap.add_argument("--rounds", type=int, default=None, help="stop after this many rounds")
    ap.add_argument("--seed", type=int, default=None, help="the random choices' seed (printed)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)  # noqa: S311
    print(f"soak: seed {seed}", flush=True)
    sys.exit(soak(args.minutes, args.rounds, seed, Path(args.out)))


if __name__ == "__main__":
    main()
