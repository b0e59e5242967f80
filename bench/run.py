"""`make bench`: downtime and total time of moving a Redis lab1 -> lab2, by method, measured
in one run on the lab. Writes bench/results/<date>.json, a markdown table and a PNG plot.

Methods:
- seed:     the seed article's flow: `docker checkpoint create` to a directory, `docker
            commit`, `docker save | docker load` of the whole image and the checkpoint
            through the controller, create, place the checkpoint, `docker start --checkpoint`
            (with tcp-close/skip-in-flight in runc.conf: without them a dump with clients fails);
- migrator: `migrator migrate`;
- floor:    CRIU's own time for that container: the dump (runc into tmpfs, from CRIU's
            dump.log) plus the restore (from CRIU's restore.log), on one host, no transfer;
- podman:   what a user would pick instead: the same Redis under Podman, `podman container
            checkpoint --export` (uncompressed, into tmpfs), the archive copied host to host
            over SSH, `podman container restore --import` (runc, with the same CRIU options
            in runc.conf as migrator's; containers get --ulimit nofile/nproc=1024, which
            Podman needs on this machine kind).

- services: PostgreSQL 15 of its own user under a client writing every few ms (its downtime
            against CRIU's floor for it), and the freeze window's cost of a 1 GiB volume.
- connections: the same Redis on a macvlan network (its address moves with it) moved with
            its clients' connections kept and closed, alternately: the downtime a client sees
            on its connection (kept) or across its reconnect (closed), and its errors.
- fleet:    drain throughput: 20 small Redis containers (20,000 keys each) drained off
            lab1 at --parallel 1 and 4, against the median single migrate of the same
            containers in the same run (the ideal drain at P lanes: single x 20 / P), and each
            container's downtime inside the drain against a single move's; then the same drain
            with one move's link cut (its SSH master killed as it freezes).

Downtime is what a client sees: a probe GETs a key every 5 ms wherever the service is (old
or new address); downtime is the longest gap between two correct answers. Every measured
run starts after a `sync`, so that no method pays for the page cache another left dirty.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
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

from migrator import checkpoint, images, layout, locks, probes  # noqa: E402
from migrator.container import Spec  # noqa: E402
from migrator.engine import Engine  # noqa: E402
from migrator.inventory import Inventory, load  # noqa: E402
from migrator.lab import Lab  # noqa: E402
from migrator.lab.faults import cut_link  # noqa: E402
from migrator.migrate import Event, Migration  # noqa: E402
from migrator.transfer import Job, open_link  # noqa: E402
from migrator.transport import Host, relay, wait_for  # noqa: E402

NAME = "bench-redis"
PORT = 6379
VALUE = 1024
BENCH_DIR = "/var/lib/migrator/bench"
TS_RE = re.compile(r"^\((\d+\.\d+)\)", re.M)


class Probe:
    """GET a key every 5 ms at the first address that answers; record answer times."""

    def __init__(self, addrs: list[str]) -> None:
        self.addrs = addrs
        self.ok_times: list[float] = []
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.loop, daemon=True)

    def loop(self) -> None:
        # No client-side retries or backoff: the probe measures the service, not redis-py's policy.
        conns = [redis.Redis(a, PORT, socket_timeout=0.2, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
                 for a in self.addrs]
        while not self.stop.is_set():
            for c in conns:
                try:
                    if c.get("probe") == b"ok":
                        self.ok_times.append(time.monotonic())
                        break
                except redis.RedisError:
                    c.connection_pool.disconnect()
            time.sleep(0.005)

    def __enter__(self) -> Probe:
        self.t.start()
        assert wait_for(lambda: len(self.ok_times) > 3, 10), "probe never got an answer"
        return self

    def __exit__(self, *exc: object) -> None:
        # Until the service answers again (a gap that never closes would not count), and a little more.
        end = time.monotonic()
        wait_for(lambda: bool(self.ok_times) and self.ok_times[-1] > end, 30, 0.01)
        time.sleep(0.3)
        self.stop.set()
        self.t.join(5)

    def downtime(self) -> float:
        ts = self.ok_times
        return max((b - a for a, b in zip(ts, ts[1:], strict=False)), default=0.0)


def fill(addr: str, mib: int) -> None:
    r = redis.Redis(addr, PORT)
    assert wait_for(lambda: r.ping(), 20)
    n = mib * 1024 * 1024 // VALUE
    p = r.pipeline(transaction=False)
    for i in range(n):
        p.set(f"k{i}", os.urandom(VALUE))
        if i % 5000 == 4999:
            p.execute()
    p.set("probe", "ok")
    p.execute()


def start_redis(h: Host, mib: int, engine: str = "docker") -> None:
    h.run([engine, "rm", "-f", NAME], check=False)
    limits = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"] if engine == "podman" else []
    h.run([engine, "run", "-d", "--name", NAME, *limits, "-p", f"{PORT}:6379", PODMAN_IMAGE if limits else "lab/redis"])
    fill(h.spec.address, mib)


PODMAN_IMAGE = "localhost/lab/redis"
# Podman's port forwarding accepts new connections only where the FORWARD policy does, and
# Docker sets it to DROP: this rule, made and removed by the benchmark, lets them through.
PODMAN_FORWARD = ["FORWARD", "-o", "podman0", "-j", "ACCEPT"]


def podman_setup(hosts: list[Host]) -> None:
    for h in hosts:
        if not h.ok(["podman", "image", "exists", PODMAN_IMAGE]):
            h.run(["bash", "-c", "set -o pipefail; docker save lab/redis | podman load -q"])
        if not h.ok(["iptables", "-C", *PODMAN_FORWARD]):
            h.run(["iptables", "-I", *PODMAN_FORWARD])


def podman_teardown(hosts: list[Host]) -> None:
    for h in hosts:
        h.run(["podman", "rm", "-f", NAME], check=False)
        h.run(["rm", "-rf", f"{BENCH_DIR}/podman"], check=False)
        while h.ok(["iptables", "-C", *PODMAN_FORWARD]):
            h.run(["iptables", "-D", *PODMAN_FORWARD])


def podman_flow(src: Host, dst: Host) -> dict[str, Any]:
    """Podman's own live migration: checkpoint --export, copy the archive host to host (one
    SSH stream, uncompressed), restore --import."""
    op = "bench-podman"
    tar = f"{layout.workdir(op)}/{NAME}.tar"  # the work dir on both hosts: the link's key writes there
    for h in (src, dst):
        images.remove_workdir(h, op)
        images.make_workdir(h, op)
    link = open_link(src, dst, op, layout.workdir(op))
    try:
        t0 = time.monotonic()
        locks.criu_run(src, "podman checkpoint", ["podman", "container", "checkpoint", "--export", tar,
                                               "--compress", "none", NAME])
        t_ck = time.monotonic()
        sent = link.pipes([Job([["cat", tar]], ["write", tar], compress=False)], "podman archive")
        t_cp = time.monotonic()
        locks.criu_run(dst, "podman restore", ["podman", "container", "restore", "--import", tar])
        t_end = time.monotonic()
    finally:
        link.close()
        for h in (src, dst):
            images.remove_workdir(h, op)
    src.run(["podman", "rm", "-f", NAME])
    return {"bytes_sent": sent, "phases": {"checkpoint": t_ck - t0, "copy": t_cp - t_ck, "restore": t_end - t_cp},
            "total_s": t_end - t0}


def used_memory(addr: str) -> int:
    return int(redis.Redis(addr, PORT).info("memory")["used_memory"])


def crui_seconds(log: str) -> float:
    """The latest timestamp in a CRIU log: the restored tasks write their own lines into it,
    so the last line is not always the last event."""
    return max((float(t) for t in TS_RE.findall(log)), default=0.0)


def seed_flow(src: Host, dst: Host) -> dict[str, Any]:
    """The article's stop-and-copy, through the controller, uncompressed."""
    source_engine, target_engine = Engine(src), Engine(dst)
    spec = Spec(source_engine.inspect(NAME) or {})
    img = f"bench/{NAME}:seed"
    for h in (src, dst):
        h.run(["bash", "-c", f"rm -rf {BENCH_DIR}/seed && mkdir -p -m 0700 {BENCH_DIR}/seed"])
    t0 = time.monotonic()
    locks.criu_run(src, "seed checkpoint", ["docker", "checkpoint", "create", "--checkpoint-dir", f"{BENCH_DIR}/seed",
                                         NAME, "cp1"])
    t_ck = time.monotonic()
    src.run(["docker", "commit", NAME, img])
    t_commit = time.monotonic()
    n_img, *_ = relay(src.open(["docker", "save", img]), dst.open(["docker", "load", "-q"]))
    t_img = time.monotonic()
    n_cp, *_ = relay(src.open(["tar", "-C", f"{BENCH_DIR}/seed", "-cf", "-", "cp1"]),
                     dst.open(["tar", "-C", f"{BENCH_DIR}/seed", "-xf", "-"]))
    t_cp = time.monotonic()
    body = spec.create_body()
    body["Image"] = img
    target_id = target_engine.create(NAME, body)
    cpdir = images.checkpoint_dir(target_engine.docker_root, target_id, "cp1")
    dst.run(["bash", "-c", 'mkdir -p "$(dirname "$2")" && cp -a "$1" "$2"', "_", f"{BENCH_DIR}/seed/cp1", cpdir])
    locks.criu_run(dst, "seed restore", ["docker", "start", "--checkpoint", "cp1", NAME])
    t_start = time.monotonic()
    source_engine.remove_container(spec.id)
    for h in (src, dst):
        # containerd leaves its copy of every checkpoint it restored in /tmp (1.4 GB at 1 GiB):
        # without this, three rounds at each size fill a lab host's /tmp
        h.run(["bash", "-c", f"rm -rf {BENCH_DIR}/seed /tmp/ctrd-checkpoint*"])
    src.run(["docker", "rmi", img], check=False)
    return {"bytes_sent": n_img + n_cp, "phases": {
        "checkpoint": t_ck - t0, "commit": t_commit - t_ck, "save_load": t_img - t_commit,
        "copy_checkpoint": t_cp - t_img, "create_start": t_start - t_cp}, "total_s": t_start - t0}


def cpu_times() -> tuple[int, int]:
    """(busy, all) CPU time of this machine so far, every CPU (the lab's hosts share them)."""
    v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(v) - v[3] - v[4], sum(v)  # not idle, not waiting for I/O


def migrator_flow(inv: Inventory, src: str, dst: str) -> dict[str, Any]:
    """`migrator migrate`, with each phase's share of the machine's CPUs that were busy
    (from its start to its end): a phase near 1.0 is bound by CPU, one well below by waits."""
    started: dict[str, tuple[int, int]] = {}
    busy: dict[str, float] = {}

    def hook(ev: Event) -> None:
        if ev.kind == "phase":
            started[ev.phase] = cpu_times()
        elif ev.kind == "done" and ev.phase in started:
            (b0, a0), (b1, a1) = started.pop(ev.phase), cpu_times()
            if a1 > a0:  # not for a phase shorter than the kernel's tick
                busy[ev.phase] = round((b1 - b0) / (a1 - a0), 2)

    rep = Migration(inv, NAME, src, dst, events=hook).run()
    return {"bytes_sent": rep.bytes_sent, "phases": {p.name: p.seconds for p in rep.phases}, "cpu_busy": busy,
            "total_s": rep.total_s, "reported_downtime_s": rep.downtime_s}


def floor(h: Host, name: str = NAME) -> dict[str, Any]:
    """CRIU's own dump + restore time, on one host, pages in tmpfs, no transfer."""
    engine = Engine(h)
    spec = Spec(engine.inspect(name) or {})
    op = "bench-floor"
    images.remove_workdir(h, op)
    images.make_workdir(h, op)
    img = f"{layout.shm_dir(op)}/img"
    checkpoint.dump(h, spec.id, img, root=probes.runtime_root(h, spec.id))
    dump_s = crui_seconds(h.run(["cat", f"{layout.shm_dir(op)}/criu-work/dump.log"]).stdout)
    log = f"{layout.workdir(op)}/restore.log"
    checkpoint.start_from_images(h, engine, spec.id, img, op, options=[*locks.MIGRATE_CRIU_OPTS, f"log-file {log}"],
                                 action=False)
    # CRIU may still be writing its log when `docker start` returns: read it once complete.
    assert wait_for(lambda: "Restore finished successfully" in h.run(["cat", log]).stdout, 30), "restore log"
    restore_s = crui_seconds(h.run(["cat", log]).stdout)
    images.remove_workdir(h, op)
    return {"dump_s": dump_s, "restore_s": restore_s, "total_s": dump_s + restore_s}


def run(sizes: list[int], methods: list[str], out_dir: Path, repeat: int = 1) -> dict[str, Any]:
    cross, fleet_bench, services = "cross" in methods, "fleet" in methods, "services" in methods
    connections = "connections" in methods
    methods = [m for m in methods if m not in ("cross", "fleet", "services", "connections")]
    lab = Lab()
    lab.up(3, ROOT / "inventory" / "lab.yaml")
    inv = load(ROOT / "inventory" / "lab.yaml")
    a, b = Host(inv.host("lab1")), Host(inv.host("lab2"))
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "host": os.uname().nodename,
                               "cpus": os.cpu_count(), "runs": []}
    try:
        for mib in sizes if methods else []:
            for h in (a, b):
                h.run(["docker", "rm", "-f", NAME], check=False)
            if any(m != "podman" for m in methods):
                start_redis(a, mib)
            where = a
            # `repeat` rounds of the Docker methods on one container, then of Podman's on another
            order = [m for _ in range(repeat) for m in methods if m != "podman"]
            order += ["podman"] * repeat if "podman" in methods else []
            for i, method in enumerate(order):
                if method == "podman" and (i == 0 or order[i - 1] != "podman"):
                    where.run(["docker", "rm", "-f", NAME], check=False)
                    podman_setup([a, b])
                    start_redis(a, mib, "podman")
                    where = a
                # Each method starts on a quiet machine: the seed flow leaves ~350 MB (256 MiB)
                # of dirty page cache that the kernel writes back 30 s later, i.e. in the middle
                # of whichever method came next.
                subprocess.run(["sync"], check=True)
                mem = used_memory(where.spec.address)
                other = b if where is a else a
                print(f"[{mib} MiB] {method} {where.name} -> {other.name if method != 'floor' else where.name}",
                      flush=True)
                with Probe([where.spec.address, other.spec.address]) as probe:
                    if method == "seed":
                        res = seed_flow(where, other)
                    elif method == "migrator":
                        res = migrator_flow(inv, where.name, other.name)
                    elif method == "podman":
                        res = podman_flow(where, other)
                    else:
                        res = floor(where)
                if method != "floor":
                    res["downtime_s"] = probe.downtime()
                    where = other
                else:
                    res["downtime_s"] = res["total_s"]
                ok = redis.Redis(where.spec.address, PORT).dbsize() >= mib * 1024 * 1024 // VALUE
                results["runs"].append({"size_mib": mib, "used_memory": mem, "method": method, "data_ok": ok, **res})
                print(f"    downtime {res['downtime_s']:.2f} s, total {res['total_s']:.2f} s, data ok: {ok}",
                      flush=True)
            for h in (a, b):
                for engine in ["docker", "podman"] if "podman" in methods else ["docker"]:
                    h.run([engine, "rm", "-f", NAME], check=False)
    finally:
        if "podman" in methods:
            podman_teardown([a, b])
    a.close()
    b.close()
    if fleet_bench:
        results["fleet"] = fleet_section(inv)
    if services:
        results["services"] = services_section(inv, lab)
    if connections:
        results["connections"] = connections_section(inv, lab)
    if cross:
        cross_version(results, repeat)
    write(results, out_dir)
    return results


FLEET_N, FLEET_KEYS, FLEET_SINGLES = 20, 20_000, 6


def _fleet_start(h: Host, n: int) -> None:
    for i in range(n):
        h.run(["docker", "run", "-d", "--name", f"fleet{i}", "lab/redis"])
        pid = h.run(["docker", "inspect", "-f", "{{.State.Pid}}", f"fleet{i}"]).stdout.strip()
        h.run(["bash", "-c", 'until nsenter -t "$1" -n redis-cli ping >/dev/null 2>&1; do sleep 0.05; done; '
               'nsenter -t "$1" -n redis-cli DEBUG POPULATE "$2" key 64 >/dev/null', "_", pid, FLEET_KEYS])


def _fleet_clean(hs: list[Host]) -> None:
    for h in hs:
        h.run(["bash", "-c", 'ids=$(docker ps -aq --filter name=^fleet); [ -z "$ids" ] || docker rm -f $ids'],
              check=False)


def _drain_figures(plan: Any, seconds: float) -> dict[str, Any]:
    downs = [float((m.report or {}).get("downtime_s") or 0) for m in plan.moves if m.outcome == "migrated"]
    return {"seconds": round(seconds, 2), "outcomes": plan.summary()["outcomes"],
            "downtime_median_s": statistics.median(downs) if downs else None,
            "downtime_max_s": max(downs) if downs else None,
            "moves": [{"container": m.container, "target": m.target, "outcome": m.outcome,
                       "downtime_s": (m.report or {}).get("downtime_s"), "error": m.error} for m in plan.moves]}


def fleet_section(inv: Inventory) -> dict[str, Any]:
    """Drain throughput (see the module's docstring)."""
    from migrator import fleet
    from migrator import hosts as hosts_mod

    hs = [Host(inv.host(n)) for n in ("lab1", "lab2", "lab3")]
    out: dict[str, Any] = {"containers": FLEET_N, "keys": FLEET_KEYS, "placement_1000_hosts_s": placement_seconds()}

    def fresh() -> None:
        _fleet_clean(hs)
        for h in hs:
            hosts_mod.uncordon(h)
        _fleet_start(hs[0], FLEET_N)
        subprocess.run(["sync"], check=True)

    try:
        fresh()
        singles = []
        for i in range(FLEET_SINGLES):  # there and back: lab1 -> lab2 -> lab1
            src, dst = ("lab1", "lab2") if i % 2 == 0 else ("lab2", "lab1")
            rep = Migration(inv, f"fleet{i // 2}", src, dst).run()
            singles.append({"total_s": rep.total_s, "downtime_s": rep.downtime_s})
        out["single"] = {"total_s": statistics.median(r["total_s"] for r in singles),
                         "downtime_s": statistics.median(r["downtime_s"] for r in singles), "runs": singles}
        print(f"[fleet] single migrate: {out['single']['total_s']:.2f} s, downtime {out['single']['downtime_s']:.2f} s",
              flush=True)
        for parallel in (1, 4):
            fresh()
            t0 = time.monotonic()
            plan = fleet.drain(inv, "lab1", parallel=parallel)
            out[f"parallel{parallel}"] = fig = _drain_figures(plan, time.monotonic() - t0)
            ideal = out["single"]["total_s"] * FLEET_N / parallel
            fig["vs_ideal"] = round(fig["seconds"] / ideal, 2)
            print(f"[fleet] drain --parallel {parallel}: {fig['seconds']:.1f} s ({fig['vs_ideal']:.2f}x single x "
                  f"{FLEET_N} / {parallel}), downtime median {fig['downtime_median_s']:.2f} s, {fig['outcomes']}",
                  flush=True)
        fresh()
        cut: dict[str, str] = {}

        def cut_one(container: str, ev: Event) -> None:
            if ev.kind == "phase" and ev.phase == "freeze" and not cut:
                cut[container] = "cut"
                cut_link(inv, "lab1", container)

        t0 = time.monotonic()
        plan = fleet.plan_drain(inv, "lab1")
        fleet.execute(inv, plan, 4, cut_one)
        out["fault"] = fig = _drain_figures(plan, time.monotonic() - t0)
        fig["cut"] = next(iter(cut), None)
        print(f"[fleet] drain --parallel 4 with {fig['cut']}'s link cut: {fig['outcomes']}", flush=True)
    finally:
        _fleet_clean(hs)
        for h in hs:
            hosts_mod.uncordon(h)
            h.close()
    return out


def placement_seconds(hosts_n: int = 1000, containers: int = 200, rounds: int = 5) -> float:
    """`fleet.place` over generated facts: 1,000 hosts, 200 containers (median of rounds)."""
    import random

    from migrator import fleet

    times = []
    for seed in range(rounds):
        rng = random.Random(seed)  # noqa: S311 - generated facts, not secrets
        cands = [fleet.Candidate(f"h{i}", {"zone": rng.choice("abc")}, rng.random() > 0.05,
                                 mem_available=rng.randrange(1, 256) << 28, disk_free=rng.randrange(1, 256) << 29)
                 for i in range(hosts_n)]
        wants = [fleet.Want(fleet.Move(f"c{i}", "src", None, memory=rng.randrange(1, 8192) << 20),
                            {(rng.randrange(8000, 8100), "tcp")}, rng.choice(["", "zone==a", "zone!=b"]))
                 for i in range(containers)]
        t0 = time.perf_counter()
        fleet.place(wants, cands)
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times), 4)


def fleet_lines(results: dict[str, Any]) -> str:
    f = results.get("fleet")
    if not f or "parallel4" not in f:
        return ""
    s, p1, p4 = f["single"], f["parallel1"], f["parallel4"]
    rows = ["| run | seconds | vs single x N / P | downtime median (s) | vs single's | outcomes |",
            "|---|---|---|---|---|---|",
            f"| single migrate (median of {len(s['runs'])}) | {s['total_s']:.2f} | - | {s['downtime_s']:.2f} "
            "| 1.00x | - |"]
    for name, fig in (("drain --parallel 1", p1), ("drain --parallel 4", p4)):
        rows.append(f"| {name} | {fig['seconds']:.1f} | {fig['vs_ideal']:.2f}x | {fig['downtime_median_s']:.2f} | "
                    f"{fig['downtime_median_s'] / s['downtime_s']:.2f}x | {fig['outcomes']} |")
    fault = f.get("fault")
    if fault:
        rows.append(f"| drain --parallel 4, {fault['cut']}'s link cut | {fault['seconds']:.1f} | - | "
                    f"{fault['downtime_median_s'] or 0:.2f} | - | {fault['outcomes']} |")
    rows.append(f"\nPlacement of 200 containers over 1,000 generated hosts (`fleet.place`): "
                f"{f['placement_1000_hosts_s']:.3f} s (target < 1 s).")
    return (f"\nDrain of {f['containers']} Redis containers ({f['keys']} keys each) off lab1 (targets "
            "<= 1.5x of single x N / 4 at --parallel 4, downtime within 1.3x of a single move's):\n\n"
            + "\n".join(rows) + "\n")


PG_BIN = "/usr/lib/postgresql/15/bin"
PG_NAME, VOL_NAME, SERVICE_ROUNDS = "bench-pg", "bench-vol", 3


class PgProbe(Probe):
    """A client of PostgreSQL wherever it is (old or new address): a new connection and one
    INSERT every few ms (psql), each acknowledged one counted; downtime is the longest gap
    between two acknowledged writes."""

    def loop(self) -> None:
        env = {**os.environ, "PGCONNECT_TIMEOUT": "1"}
        while not self.stop.is_set():
            for a in self.addrs:
                r = subprocess.run([f"{PG_BIN}/psql", "-h", a, "-U", "postgres", "-Atc",
                                    "insert into probe values (clock_timestamp()) returning 1", "postgres"],
                                   capture_output=True, text=True, env=env, timeout=10)
                if r.returncode == 0 and r.stdout.split("\n", 1)[0] == "1":  # then the tag, INSERT 0 1
                    self.ok_times.append(time.monotonic())
                    break
            time.sleep(0.005)


def _psql(h: Host, sql: str) -> str:
    r = subprocess.run([f"{PG_BIN}/psql", "-h", h.spec.address, "-U", "postgres", "-Atc", sql, "postgres"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def services_section(inv: Inventory, lab: Lab) -> dict[str, Any]:
    """A database of its own user (PostgreSQL 15, lab/postgres, pgbench's tables at scale 5)
    moved under a client writing every few ms: the client's downtime against CRIU's own
    floor for it in the same run (target <= 2x). Then the freeze window's cost of a 1 GiB
    volume (1,024 files of 1 MiB): a move with nothing changed since the presync and one
    with a file rewritten in place (same size) during it, against the same container
    without the volume."""
    from migrator.lab.image import POSTGRES

    hs = [Host(inv.host(n)) for n in ("lab1", "lab2")]
    out: dict[str, Any] = {}

    def clean() -> None:
        for h in hs:
            h.run(["bash", "-c", f"docker rm -f {PG_NAME} {VOL_NAME} {VOL_NAME}0 >/dev/null 2>&1; "
                   "docker volume rm -f bench-pgdata bench-data >/dev/null 2>&1; true"], check=False)

    try:
        clean()
        for h in hs:
            lab.ensure_image(lab.host(h.name), POSTGRES)
        a = hs[0]
        a.run(["docker", "run", "-d", "--name", PG_NAME, "-p", "5432:5432",
               "-v", "bench-pgdata:/var/lib/postgresql/data", POSTGRES])
        assert wait_for(lambda: _psql(a, "select 1") == "1", 60), "postgres did not start"
        subprocess.run([f"{PG_BIN}/pgbench", "-h", a.spec.address, "-U", "postgres", "-i", "-q", "-s", "5",
                        "postgres"], capture_output=True, check=True, timeout=300)
        _psql(a, "create table probe (t timestamptz)")
        runs, floors = [], []
        where = 0
        for _ in range(SERVICE_ROUNDS):
            subprocess.run(["sync"], check=True)
            floors.append(floor(hs[where], PG_NAME)["total_s"])
            subprocess.run(["sync"], check=True)
            src, dst = hs[where], hs[1 - where]
            with PgProbe([src.spec.address, dst.spec.address]) as probe:
                rep = Migration(inv, PG_NAME, src.name, dst.name).run()
            acked = len(probe.ok_times)
            rows = int(_psql(dst, "select count(*) from probe"))
            _psql(dst, "truncate probe")
            runs.append({"downtime_s": round(probe.downtime(), 3), "reported_downtime_s": rep.downtime_s,
                         "total_s": rep.total_s, "acked": acked, "rows": rows})
            where = 1 - where
            print(f"[services] postgres {src.name} -> {dst.name}: client downtime {runs[-1]['downtime_s']:.2f} s, "
                  f"floor {floors[-1]:.2f} s, {acked} writes acknowledged, {rows} there", flush=True)
        pg = out["postgres"] = {"runs": runs, "floors_s": floors,
                                "downtime_s": statistics.median(r["downtime_s"] for r in runs),
                                "floor_s": statistics.median(floors)}
        pg["vs_floor"] = round(pg["downtime_s"] / pg["floor_s"], 2)
        pg["writes_lost"] = sum(max(0, r["acked"] - r["rows"]) for r in runs)
        clean()

        # the 1 GiB volume, and the same container without it
        a.run(["docker", "run", "-d", "--name", VOL_NAME, "-v", "bench-data:/data", "lab/redis"])
        a.run(["docker", "run", "-d", "--name", f"{VOL_NAME}0", "lab/redis"])
        mp = a.run(["docker", "volume", "inspect", "-f", "{{.Mountpoint}}", "bench-data"]).stdout.strip()
        a.run(["bash", "-c", 'for i in $(seq 1024); do head -c 1048576 /dev/urandom > "$1/f$i"; done', "_", mp])
        Migration(inv, VOL_NAME, "lab1", "lab2").run()  # the first copy of the volume (not measured)
        vol: dict[str, list[dict[str, float]]] = {"unchanged": [], "rewritten": [], "none": []}
        where = 1
        for kind in ("unchanged", "rewritten", "unchanged", "rewritten"):
            src, dst = hs[where], hs[1 - where]

            def rewrite(ev: Event, src: Host = src, kind: str = kind) -> None:  # same size, in place, after the presync
                if kind == "rewritten" and ev.kind == "done" and ev.phase == "presync":
                    src.run(["bash", "-c", 'mp=$(docker volume inspect -f "{{.Mountpoint}}" bench-data) && '
                             'head -c 1048576 /dev/urandom | dd of="$mp/f7" conv=notrunc status=none'])

            subprocess.run(["sync"], check=True)
            rep = Migration(inv, VOL_NAME, src.name, dst.name, events=rewrite).run()
            phases = {p.name: p.seconds for p in rep.phases}
            vol[kind].append({"filesystem_s": phases["filesystem"], "downtime_s": rep.downtime_s})
            where = 1 - where
        for i in range(2):
            src, dst = hs[i % 2], hs[1 - i % 2]
            rep = Migration(inv, f"{VOL_NAME}0", src.name, dst.name).run()
            vol["none"].append({"filesystem_s": {p.name: p.seconds for p in rep.phases}["filesystem"],
                                "downtime_s": rep.downtime_s})
        out["volume_1gib"] = {k: {"filesystem_s": statistics.median(r["filesystem_s"] for r in v),
                                  "downtime_s": statistics.median(r["downtime_s"] for r in v), "runs": v}
                              for k, v in vol.items()}
        for k, v in out["volume_1gib"].items():
            print(f"[services] 1 GiB volume, {k}: filesystem phase {v['filesystem_s']:.2f} s, downtime "
                  f"{v['downtime_s']:.2f} s", flush=True)
    finally:
        clean()
        for h in hs:
            h.close()
    return out


def services_lines(results: dict[str, Any]) -> str:
    s = results.get("services")
    if not s:
        return ""
    pg, v = s["postgres"], s["volume_1gib"]
    base = v["none"]["downtime_s"]
    rows = [f"| PostgreSQL 15 (uid 999, pgbench scale 5) | {pg['downtime_s']:.2f} | {pg['floor_s']:.2f} "
            f"| {pg['vs_floor']:.2f}x (target <= 2x) | {pg['writes_lost']} |"]
    lines = [f"| {k} | {v[k]['filesystem_s']:.2f} | {v[k]['downtime_s']:.2f} | {v[k]['downtime_s'] / base:.2f}x |"
             for k in ("none", "unchanged", "rewritten")]
    return ("\nA database under a client writing every few ms (median of "
            f"{len(pg['runs'])} moves; its downtime as the client sees it, CRIU's floor for it in the same run):\n\n"
            "| service | client downtime (s) | CRIU floor (s) | vs floor | acknowledged writes lost |\n"
            "|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
            "The freeze window's cost of a 1 GiB volume (1,024 files of 1 MiB; none: the same container without "
            "it; rewritten: one file rewritten in place, same size, during the presync):\n\n"
            "| volume | filesystem phase (s) | downtime (s) | vs none |\n|---|---|---|---|\n" + "\n".join(lines) + "\n")


CONN_ROUNDS = 3  # moves with connections kept, and as many closed, alternately
CONN_NAME, CONN_NET, CONN_KEYS = "bench-kv", "bench-l2", 200_000


def connections_section(inv: Inventory, lab: Lab) -> dict[str, Any]:
    """The same Redis (200,000 keys) on a macvlan network over the lab bridge, moved
    lab1 <-> lab2 with its connections kept and closed in turn, a client writing every 5 ms
    on one connection during each: kept, it waits on that connection (its TCP
    retransmitting) and must see no error; closed, its connection is reset and it
    reconnects at once. Downtime: the longest wait between two acknowledged writes. Target
    for kept: no client error, downtime within 1.2x of the closed moves'."""
    from migrator.lab.network import macvlan_create
    from migrator.lab.watch import HeldClient

    hs = [Host(inv.host(n)) for n in ("lab1", "lab2")]

    def clean() -> None:
        for h in hs:
            h.run(["bash", "-c", f"docker rm -f {CONN_NAME} >/dev/null 2>&1; docker network rm {CONN_NET} "
                   ">/dev/null 2>&1; true"], check=False)

    runs: dict[str, list[dict[str, Any]]] = {"kept": [], "closed": []}
    try:
        clean()
        for h in hs:
            h.run(macvlan_create(lab.subnet, CONN_NET, first=224))
        hs[0].run(["docker", "run", "-d", "--name", CONN_NAME, "--network", CONN_NET, "lab/redis"])
        address = hs[0].run(["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                             CONN_NAME]).stdout.strip()
        assert wait_for(lambda: _pings(address), 30), "redis on the macvlan network did not answer"
        r = redis.Redis(address, PORT)
        p = r.pipeline(transaction=False)
        for i in range(CONN_KEYS):
            p.set(f"k{i}", "v" * 64)
        p.execute()
        where = 0
        # each way in both directions: kept, closed, closed, kept, ...
        for how in [k for r in range(CONN_ROUNDS) for k in (("kept", "closed") if r % 2 == 0 else ("closed", "kept"))]:
            src, dst = hs[where], hs[1 - where]
            subprocess.run(["sync"], check=True)
            client = HeldClient(address, reconnect=how == "closed")
            client.start()
            time.sleep(0.5)
            rep = Migration(inv, CONN_NAME, src.name, dst.name, connections="keep" if how == "kept" else "close").run()
            n = len(client.acked)
            wait_for(lambda n=n, c=client: len(c.acked) > n + 20, 10)  # type: ignore[misc]
            client.finish()
            errors = client.errors if how == "closed" else int(client.error is not None)
            runs[how].append({"downtime_s": round(client.longest_gap_s, 3), "reported_downtime_s": rep.downtime_s,
                              "errors": errors, "sockets_restored": rep.sockets_restored, "acked": len(client.acked)})
            print(f"[connections] {how} {src.name} -> {dst.name}: client downtime {client.longest_gap_s:.2f} s "
                  f"(reported {rep.downtime_s:.2f} s), client errors {errors}", flush=True)
            where = 1 - where
    finally:
        clean()
        for h in hs:
            h.close()
    out: dict[str, Any] = {k: {"downtime_s": statistics.median(r["downtime_s"] for r in v),
                               "reported_downtime_s": statistics.median(r["reported_downtime_s"] for r in v),
                               "errors": sum(r["errors"] for r in v), "runs": v} for k, v in runs.items()}
    out["kept_vs_closed"] = round(out["kept"]["downtime_s"] / out["closed"]["downtime_s"], 2)
    return out


def _pings(address: str) -> bool:
    try:
        return bool(redis.Redis(address, PORT, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def connections_lines(results: dict[str, Any]) -> str:
    c = results.get("connections")
    if not c:
        return ""
    rows = [f"| {k} | {c[k]['downtime_s']:.2f} | {c[k]['reported_downtime_s']:.2f} | {c[k]['errors']} |"
            for k in ("kept", "closed")]
    return (f"\nA Redis on a macvlan network (its address moves with it), a client writing every 5 ms on one "
            f"connection; median of {len(c['kept']['runs'])} moves each way, in both directions; kept vs closed: "
            f"{c['kept_vs_closed']:.2f}x (target <= 1.2x, and no client error when kept):\n\n"
            "| connections | client downtime (s) | migrator's downtime (s) | client errors |\n|---|---|---|---|\n"
            + "\n".join(rows) + "\n")


CROSS_MIB = 256
CROSS_LAB = {"root": Path("/var/lib/migrator-blab"), "bridge": "mgbench0", "subnet": "10.207.0", "prefix": "blab"}


def cross_version(results: dict[str, Any], repeat: int) -> None:
    """The same Redis moved between two Docker 20.10 hosts and from 20.10 to 26, in the same
    rounds, on a lab of its own (blab1, blab2: 20.10; blab3: 26): what moving across engine
    versions costs, as a ratio of the same-version move."""
    lab = Lab(progress=None, **CROSS_LAB)  # type: ignore[arg-type]
    inventory = ROOT / "inventory" / "blab.yaml"
    try:
        lab.up(3, inventory, engines={"blab3": "26"})
        inv = load(inventory)
        hosts = {n: Host(inv.host(n)) for n in ("blab1", "blab2", "blab3")}
        for _ in range(repeat):
            for h in hosts.values():
                h.run(["docker", "rm", "-f", NAME], check=False)
            start_redis(hosts["blab1"], CROSS_MIB)
            for method, src, dst in (("20.10->20.10", "blab1", "blab2"), ("20.10->26", "blab2", "blab3")):
                subprocess.run(["sync"], check=True)
                print(f"[{CROSS_MIB} MiB] {method} {src} -> {dst}", flush=True)
                with Probe([hosts[src].spec.address, hosts[dst].spec.address]) as probe:
                    res = migrator_flow(inv, src, dst)
                res["downtime_s"] = probe.downtime()
                ok = redis.Redis(hosts[dst].spec.address, PORT).dbsize() >= CROSS_MIB * 1024 * 1024 // VALUE
                results["runs"].append({"size_mib": CROSS_MIB, "method": method, "data_ok": ok, **res})
                print(f"    downtime {res['downtime_s']:.2f} s, total {res['total_s']:.2f} s, data ok: {ok}",
                      flush=True)
        for h in hosts.values():
            h.run(["docker", "rm", "-f", NAME], check=False)
            h.close()
    finally:
        lab.down()


def cross_line(results: dict[str, Any]) -> str:
    by = {(r["size_mib"], r["method"]): r for r in summary(results)}
    same, cross = by.get((CROSS_MIB, "20.10->20.10")), by.get((CROSS_MIB, "20.10->26"))
    if not (same and cross and same["downtime_s"]):
        return ""
    return (f"\nAcross engine versions ({CROSS_MIB} MiB, same rounds): 20.10 -> 26 downtime "
            f"{cross['downtime_s']:.2f} s against {same['downtime_s']:.2f} s for 20.10 -> 20.10: "
            f"{cross['downtime_s'] / same['downtime_s']:.2f}x (target <= 1.2x).\n")


def summary(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (size, method): the median of its runs (and the range), in run order."""
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for r in results["runs"]:
        groups.setdefault((r["size_mib"], r["method"]), []).append(r)
    rows = []
    for (size, method), rs in groups.items():
        down = sorted(r["downtime_s"] for r in rs)
        rows.append({"size_mib": size, "method": method, "runs": len(rs),
                     "downtime_s": statistics.median(down), "downtime_min": down[0], "downtime_max": down[-1],
                     "total_s": statistics.median(r["total_s"] for r in rs),
                     "bytes_sent": statistics.median(r["bytes_sent"] for r in rs) if "bytes_sent" in rs[0] else None})
    return rows


def table(results: dict[str, Any]) -> str:
    rows = ["| size | method | downtime (s) | range (s) | total (s) | bytes sent | vs seed downtime | vs floor |",
            "|---|---|---|---|---|---|---|---|"]
    summ = summary(results)
    by = {(r["size_mib"], r["method"]): r for r in summ}
    for r in summ:
        seed = by.get((r["size_mib"], "seed"))
        fl = by.get((r["size_mib"], "floor"))
        vs_seed = f"{r['downtime_s'] / seed['downtime_s']:.2f}x" if seed and seed["downtime_s"] else "-"
        vs_floor = f"{r['downtime_s'] / fl['downtime_s']:.2f}x" if fl and fl["downtime_s"] else "-"
        sent = f"{r['bytes_sent'] / 1048576:.1f} MiB" if r["bytes_sent"] is not None else "-"
        rows.append(f"| {r['size_mib']} MiB | {r['method']} | {r['downtime_s']:.2f} | "
                    f"{r['downtime_min']:.2f}-{r['downtime_max']:.2f} | {r['total_s']:.2f} | {sent} "
                    f"| {vs_seed} | {vs_floor} |")
    return "\n".join(rows) + "\n"


DOWNTIME_PHASES = ["freeze", "transfer", "filesystem", "restore", "verify"]


def phase_table(results: dict[str, Any]) -> str:
    """Where migrator's downtime goes, per size: each phase's median time and the median
    share of the machine's CPUs busy during it."""
    rows = ["| size | " + " | ".join(DOWNTIME_PHASES) + " |", "|---|" + "---|" * len(DOWNTIME_PHASES)]
    for size in sorted({r["size_mib"] for r in results["runs"]}):
        rs = [r for r in results["runs"] if r["size_mib"] == size and r["method"] == "migrator"]
        if not rs:
            continue
        cells = []
        for ph in DOWNTIME_PHASES:
            secs = [r["phases"][ph] for r in rs if ph in r["phases"]]
            busy = [r["cpu_busy"][ph] for r in rs if ph in r.get("cpu_busy", {})]
            cells.append(f"{statistics.median(secs):.2f} s" + (f" ({statistics.median(busy):.0%} CPU)" if busy else "")
                         if secs else "-")
        rows.append(f"| {size} MiB | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def write(results: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / results["date"].replace(":", "")
    stem.with_suffix(".json").write_text(json.dumps(results, indent=1))
    rounds = max((r["runs"] for r in summary(results)), default=0)
    sizes = (table(results) + "\nmigrator's phases inside the downtime (median time; median share of the "
             "machine's CPUs busy meanwhile, both lab hosts sharing them):\n\n" + phase_table(results)
             ) if results["runs"] else ""
    each = f"; median of {rounds} run(s) per method and size" if results["runs"] else ""
    stem.with_suffix(".md").write_text(f"Benchmark {results['date']} ({results['cpus']} CPUs{each})\n\n"
                                       + sizes + cross_line(results)
                                       + fleet_lines(results) + services_lines(results) + connections_lines(results))
    if not results["runs"]:  # only cross, fleet or services rows: no plot; `latest` stays the last size table
        return
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plot", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    summ = summary(results)
    for method in sorted({r["method"] for r in summ}):
        pts = sorted((r["size_mib"], r["downtime_s"]) for r in summ if r["method"] == method)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=method)
    ax.set_xlabel("Redis data (MiB)")
    ax.set_ylabel("downtime seen by a client (s)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ax.set_title("Moving Redis lab1 -> lab2")
    fig.tight_layout()
    fig.savefig(stem.with_suffix(".png"), dpi=110)
    for ext in (".json", ".md", ".png"):
        latest = out_dir / f"latest{ext}"
        latest.unlink(missing_ok=True)
        latest.symlink_to(stem.with_suffix(ext).name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="64,256,1024", help="MiB of Redis data, comma-separated")
    ap.add_argument("--methods", default="seed,migrator,floor,podman,cross,fleet,services,connections",
                    help="cross: the same-version and the cross-version move, on a lab of its own; "
                         "fleet: drain throughput; services: PostgreSQL under a client, a 1 GiB volume's delta; "
                         "connections: a macvlan Redis moved with its connections kept vs closed")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--repeat", type=int, default=3, help="rounds of every method per size; the median is reported")
    args = ap.parse_args()
    res = run([int(x) for x in args.sizes.split(",")], args.methods.split(","), Path(args.out), args.repeat)
    print(table(res))


if __name__ == "__main__":
    main()
