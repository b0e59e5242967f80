"""The `lab` marker: every integration test carries it, no unit test does (so `-m "not lab"`
is the fast, rootless tier), and `make test-integration` leaves the fault matrix out."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _collected(*args: str) -> set[str]:
    r = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q", *args],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode in (0, 5), r.stdout + r.stderr
    return {line.split("::")[0] for line in r.stdout.splitlines() if "::" in line}


def test_the_lab_marker_is_every_integration_test_and_no_unit_test() -> None:
    lab = _collected("-m", "lab", "tests")
    assert lab and all(f.startswith("tests/integration/") for f in lab)
    assert lab == {f for f in _collected("tests/integration")}
    assert not any(f.startswith("tests/integration/") for f in _collected("-m", "not lab", "tests"))


def test_make_test_integration_leaves_the_faults_out() -> None:
    rule = re.search(r"^test-integration:.*\n\t(.*)$", (ROOT / "Makefile").read_text(), re.M)
    assert rule and "--ignore=tests/integration/test_faults.py" in rule[1] and "-m lab" in rule[1]
