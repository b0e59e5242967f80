"""Placement (`fleet.place`): a pure function of host facts, checked without any host."""

from __future__ import annotations

import random

from migrator.fleet import Candidate, Move, Plan, Want, place
from migrator.preflight import DISK_MARGIN, MEM_MARGIN

MiB = 1 << 20


def want(name: str, memory: int, ports: set[tuple[int, str]] | None = None, constraint: str = "") -> Want:
    return Want(Move(name, "src", None, memory=memory), ports or set(), constraint)


def host(name: str, mem: int, disk: int, **labels: str) -> Candidate:
    return Candidate(name, dict(labels), True, mem_available=mem, disk_free=disk)


def test_two_moves_to_one_host_are_each_checked_against_what_the_first_booked() -> None:
    # room for one 100 MiB container's memory twice over, but its checkpoint's disk once
    only = host("t1", mem=300 * MiB, disk=int(160 * MiB))
    a, b = want("a", 100 * MiB), want("b", 100 * MiB)
    place([a, b], [only])
    assert a.move.target == "t1" and b.move.target is None
    assert b.move.reason == "no target: t1: not enough disk (after the moves planned there)"
    assert only.planned_disk == int(100 * MiB * DISK_MARGIN) and only.planned_mem == 100 * MiB

    roomy = host("t1", mem=int(250 * MiB), disk=10_000 * MiB)  # memory for two: 2 x 100 x 1.25
    a, b, c = want("a", 100 * MiB), want("b", 100 * MiB), want("c", 100 * MiB)
    place([a, b, c], [roomy])
    assert [w.move.target for w in (a, b, c)] == ["t1", "t1", None]
    assert "not enough memory (after the moves planned there)" in c.move.reason


def test_the_largest_goes_first_and_moves_spread_over_the_targets() -> None:
    t1, t2 = host("t1", 10_000 * MiB, 10_000 * MiB), host("t2", 10_000 * MiB, 10_000 * MiB)
    small, big, mid = want("small", 10 * MiB), want("big", 900 * MiB), want("mid", 100 * MiB)
    place([small, big, mid], [t1, t2])
    assert big.move.target == "t1"  # first placed: equal hosts, by name
    assert mid.move.target == "t2" and small.move.target == "t2"  # t2 has more memory left after big
    assert (t1.planned, t2.planned) == (1, 2)


def test_ports_labels_and_unusable_hosts_each_give_their_reason() -> None:
    cordoned = Candidate("c", {}, False, why="cordoned")
    web = host("w", 1000 * MiB, 1000 * MiB, zone="a")
    web.ports = {(80, "tcp")}
    other = host("o", 1000 * MiB, 1000 * MiB, zone="b")
    a = want("a", MiB, {(80, "tcp")}, "zone==a")
    place([a], [cordoned, web, other])
    assert a.move.target is None
    assert a.move.reason == "no target: c: cordoned; w: port 80/tcp taken; o: labels do not match zone==a"
    b, c = want("b", MiB, {(8080, "tcp")}), want("c", MiB, {(8080, "tcp")})
    place([b, c], [web])
    assert b.move.target == "w" and "port 8080/tcp taken" in c.move.reason  # the first one booked the port
    bad = want("bad", MiB, constraint="zone=a")
    place([bad], [web])
    assert bad.move.target is None and bad.move.reason.startswith("label migrator.constraint: bad constraint")


def test_a_thousand_hosts_every_move_fits_where_it_was_put() -> None:
    rng = random.Random(7)  # noqa: S311 - generated facts, not secrets
    cands = [host(f"h{i:04d}", rng.randrange(1, 64) * 256 * MiB, rng.randrange(1, 64) * 512 * MiB,
                  zone=rng.choice("abc")) for i in range(1000)]
    for c in rng.sample(cands, 50):
        c.usable, c.why = False, "unreachable: timed out"
    wants = [want(f"c{i}", rng.randrange(1, 4096) * MiB, {(rng.randrange(8000, 8050), "tcp")},
                  rng.choice(["", "zone==a", "zone!=c"])) for i in range(500)]
    place(wants, cands)
    by_name = {c.name: c for c in cands}
    booked: dict[str, list[Want]] = {}
    for w in wants:
        assert w.move.target, w.move.reason
        booked.setdefault(w.move.target, []).append(w)
    for name, ws in booked.items():
        c = by_name[name]
        assert c.usable
        # each was checked against what those before it booked: the last (smallest) had its
        # own memory with the margin beside the others' memory
        smallest = min(w.move.memory for w in ws)
        assert sum(w.move.memory for w in ws) + smallest * (MEM_MARGIN - 1) <= c.mem_available
        assert sum(int(w.move.memory * DISK_MARGIN) for w in ws) <= c.disk_free
        ports = [p for w in ws for p in w.ports]
        assert len(ports) == len(set(ports))  # no two moves to one host on one port
        assert c.planned == len(ws)


def test_a_plans_summary_counts_outcomes_and_the_longest_downtime() -> None:
    moves = [Move("a", "s", "t", outcome="migrated", report={"downtime_s": 0.8}),
             Move("b", "s", "t", outcome="migrated", report={"downtime_s": 1.2}),
             Move("c", "s", "t", outcome="rolled_back", report={"downtime_s": 3.0}),
             Move("d", "s", None, outcome="stays")]
    s = Plan("s", moves, [], seconds=12.5).summary()
    assert s == {"outcomes": {"migrated": 2, "rolled_back": 1, "stays": 1}, "seconds": 12.5, "max_downtime_s": 1.2}


def test_a_compose_project_is_placed_whole_on_one_host_booked_as_one() -> None:
    """Its containers go together: to a host with room for all of them, booked as their sum."""
    small = host("small", mem=int(150 * MiB), disk=10_000 * MiB)  # room for any one, not for the three
    big = host("big", mem=int(400 * MiB), disk=10_000 * MiB)
    members = [Move(n, "src", None, memory=100 * MiB, project="shop") for n in ("db", "app", "front")]
    unit = Want(members[0], {(7380, "tcp")}, "", members[1:])
    lone = want("lone", 100 * MiB)
    place([lone, unit], [small, big])
    assert [m.target for m in members] == ["big"] * 3 and lone.move.target == "small"
    assert big.planned == 3 and big.planned_mem == 300 * MiB and big.ports == {(7380, "tcp")}
    members = [Move(n, "src", None, memory=200 * MiB, project="shop") for n in ("db", "app")]
    unit = Want(members[0], set(), "", members[1:])
    place([unit], [host("t", mem=int(450 * MiB), disk=10_000 * MiB)])  # 400 MiB x 1.25 does not fit
    assert [m.target for m in members] == [None, None]
    assert all(m.reason == "no target: t: not enough memory" for m in members)


def test_a_plan_read_back_from_its_json_is_checked_against_the_facts_of_now() -> None:
    """`drain --plan`: the plan `--dry-run --json` printed, read back, is carried out as it
    is while every move still fits its target (booked in turn); otherwise each reason."""
    from migrator.fleet import Plan, still_fits

    old = Plan("lab1", [Move("a", "lab1", "t1", memory=100 * MiB), Move("b", "lab1", "t2", memory=100 * MiB),
                        Move("p", "lab1", None, pinned=True, outcome="stays", reason="pinned")], [], select="x=1")
    back = Plan.from_dict(old.to_dict())
    assert back.moves == old.moves and back.select == "x=1"

    def now(t1_mem: int, t2_usable: bool = True, extra: bool = False) -> list[str]:
        wants = [want("a", 100 * MiB), want("b", 100 * MiB)] + ([want("new", MiB)] if extra else [])
        moves = [w.move for w in wants] + [Move("p", "lab1", None, pinned=True)]
        cands = [host("t1", t1_mem, 10_000 * MiB), host("t2", 10_000 * MiB, 10_000 * MiB)]
        cands[1].usable, cands[1].why = t2_usable, "" if t2_usable else "cordoned"
        return still_fits(back, moves, wants, cands)

    assert now(10_000 * MiB) == []  # t2 would suit a as well: the plan is carried out as it is
    assert now(100 * MiB) == ["a cannot go to t1 now: not enough memory"]
    assert now(10_000 * MiB, t2_usable=False) == ["b cannot go to t2 now: cordoned"]
    assert now(10_000 * MiB, extra=True) == ["new was not in the plan"]
    gone = still_fits(back, [Move("a", "lab1", None, memory=100 * MiB)], [want("a", 100 * MiB)],
                      [host("t1", 10_000 * MiB, 10_000 * MiB)])
    assert gone == ["b no longer runs on lab1", "p no longer runs on lab1"]
