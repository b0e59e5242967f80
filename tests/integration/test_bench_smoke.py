"""The benchmark's smoke run: tiny size, every method, files written. Not a timed test:
it asserts that the benchmark works and the data survives every method, not any speed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from conftest import ROOT, LabHost

sys.path.insert(0, str(ROOT / "bench"))
import run as bench  # noqa: E402


def test_bench_smoke(hosts: dict[str, LabHost], tmp_path: Path) -> None:
    res = bench.run([8], ["seed", "migrator", "floor", "podman"], tmp_path)
    runs = {r["method"]: r for r in res["runs"]}
    assert set(runs) == {"seed", "migrator", "floor", "podman"}
    for r in runs.values():
        assert r["data_ok"], r
        assert r["downtime_s"] > 0 and r["total_s"] > 0
    assert runs["floor"]["dump_s"] > 0 and runs["floor"]["restore_s"] > 0
    busy = runs["migrator"]["cpu_busy"]  # the share of CPUs busy in each phase
    assert {"freeze", "restore"} <= set(busy) and all(0 <= b <= 1 for b in busy.values()), busy
    assert busy["freeze"] > 0 and busy["restore"] > 0, busy
    files = {p.suffix for p in tmp_path.iterdir() if not p.name.startswith("latest")}
    assert files == {".json", ".md", ".png"}
    assert json.loads(next(tmp_path.glob("2*.json")).read_text())["runs"]
    md = next(tmp_path.glob("2*.md")).read_text()
    assert "| 8 MiB | migrator |" in md
    assert f"| 8 MiB | {runs['migrator']['phases']['freeze']:.2f} s ({busy['freeze']:.0%} CPU) |" in md
