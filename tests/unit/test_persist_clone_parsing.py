from pathlib import Path

import pytest

from migrator.clone import parse_publish
from migrator.errors import MigratorError
from migrator.persist import parse_duration, systemd_unit
from migrator.store import validate_cp_name


@pytest.mark.parametrize("text, seconds", [("5s", 5), ("500ms", 0.5), ("2m", 120), ("1h", 3600), ("3", 3),
                                           ("1.5s", 1.5)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5x", "-1s", "0s", "s", "5 s; rm"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(MigratorError):
        parse_duration(text)


def test_publish() -> None:
    assert parse_publish(["6380:6379", "127.0.0.1:5353:53/udp"]) == {
        "6379/tcp": [{"HostIp": "", "HostPort": "6380"}],
        "53/udp": [{"HostIp": "127.0.0.1", "HostPort": "5353"}],
    }
    with pytest.raises(MigratorError):
        parse_publish(["6380"])


def test_unit_quotes_arguments(tmp_path: Path) -> None:
    unit = systemd_unit(tmp_path / "my inv.yaml", "r1", "lab1", "5s", 3, None)
    line = next(x for x in unit.splitlines() if x.startswith("ExecStart="))
    assert f"-i '{tmp_path}/my inv.yaml' persist r1 --on lab1 --every 5s --keep 3" in line
    assert "--replicate-to" not in line and "--bind-mounts" not in line
    unit = systemd_unit(tmp_path / "i.yaml", "r1", "lab1", "5s", 3, "lab2", "sync")
    assert next(x for x in unit.splitlines() if x.startswith("ExecStart=")).endswith(
        "--replicate-to lab2 --bind-mounts sync")


@pytest.mark.parametrize("name", ["$(x)", ".tmp-a", "a/b", ""])
def test_checkpoint_names(name: str) -> None:
    with pytest.raises(MigratorError):
        validate_cp_name(name)
