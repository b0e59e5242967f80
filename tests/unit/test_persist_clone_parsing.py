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


def test_persist_retries_only_what_may_pass_by_itself() -> None:
    """SSH or the Docker daemon not answering is retried (with backoff, for retry_for); a
    command or daemon that answered with a failure (CRIU's dump, tar, a refusal) is not."""
    from migrator.errors import CheckpointError, CommandError, ConnectionError_, DaemonUnreachable, DockerError
    from migrator.persist import Persist

    said: list[str] = []
    p = Persist(object(), "r1", 1.0, 3, retry_for=5, say=said.append)  # type: ignore[arg-type]
    for deterministic in (CommandError("lab1: `tar` exited 2: No space left"), DockerError("lab1: conflict"),
                          CheckpointError("lab1: checkpoint of abc failed: Error (criu/...)")):
        calls: list[int] = []

        def fails(ex: Exception = deterministic, calls: list[int] = calls) -> None:
            calls.append(1)
            raise ex

        with pytest.raises(type(deterministic)):
            p._retrying("checkpoint", fails)
        assert len(calls) == 1, deterministic
    assert said == []
    for passing in (ConnectionError_("lab1: SSH failed: reset"), DaemonUnreachable("lab1: Docker daemon unreachable")):
        calls = []

        def once_then_ok(ex: Exception = passing, calls: list[int] = calls) -> str:
            calls.append(1)
            if len(calls) == 1:
                raise ex
            return "ok"

        assert p._retrying("checkpoint", once_then_ok) == "ok" and len(calls) == 2
    assert len(said) == 2 and all("retrying in" in s for s in said)
