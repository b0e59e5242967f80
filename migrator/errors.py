"""One error hierarchy. Every message names the host/container and the next thing to do.

The CLI turns a `MigratorError` into one line and its `exit_code`; anything else is a bug
and gets a traceback in the debug log.
"""

from __future__ import annotations

import logging
from enum import IntEnum


def tail(text: str, lines: int = 4, limit: int = 500) -> str:
    """The end of a command's output, for an error message: its last `lines` lines on one
    line, at most `limit` characters (dd's record counts are not errors, and are left out)."""
    kept = [ln for ln in text.strip().splitlines() if not ln.endswith(("records in", "records out"))]
    return " ".join(kept[-lines:])[-limit:] or "no output"


class ExitCode(IntEnum):
    OK = 0
    FAILED_ROLLED_BACK = 1  # the operation failed; everything is as it was (source running)
    BAD_INPUT = 2  # refused before anything changed: bad input, preflight, impossible plan
    FAILED_NOT_ROLLED_BACK = 3  # something is left over; the message says what and where


class MigratorError(Exception):
    exit_code: ExitCode = ExitCode.BAD_INPUT

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.report: object | None = None  # the operation's report, when it got that far

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class InventoryError(MigratorError):
    """The inventory file is missing, malformed or names something that does not exist."""


class LabError(MigratorError):
    """The lab could not be made, repaired or removed."""


class ConnectionError_(MigratorError):
    """SSH to a host failed: unreachable, auth, or a host key that does not match."""


class HostKeyError(ConnectionError_):
    pass


class CommandError(MigratorError):
    """A command on a host exited non-zero; carries its result."""

    def __init__(self, message: str, result: object | None = None, *, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.result = result


class CheckpointError(MigratorError):
    """A checkpoint could not be made, found, stored or restored."""


class TransferError(MigratorError):
    """Moving data between hosts failed."""


class PlanError(MigratorError):
    """A drain or evacuation plan is impossible: nothing was touched."""


class PlaybookError(MigratorError):
    """A playbook is malformed, or one of its steps failed."""


class DockerError(MigratorError):
    """The Docker daemon refused a request; its own explanation is in the message."""


class DaemonUnreachable(DockerError):
    """The Docker daemon did not answer at all (down, restarting, its socket gone): worth
    asking again later, unlike a refusal."""


class PreflightError(MigratorError):
    """A check before the freeze failed: nothing was changed."""

    def __init__(self, failures: list[str]) -> None:
        super().__init__("preflight failed:\n  " + "\n  ".join(failures))
        self.failures = failures


class LockedError(MigratorError):
    """Another operation holds the container's lock."""


class MigrationFailed(MigratorError):
    """The migration failed after it started changing things and was rolled back."""

    exit_code = ExitCode.FAILED_ROLLED_BACK


class RollbackFailed(MigratorError):
    """The migration failed and the rollback did not finish; the message lists what is where."""

    exit_code = ExitCode.FAILED_NOT_ROLLED_BACK


def internal(ex: Exception) -> MigratorError:
    """A bug of ours met while a container moves, as the error it rolls back on (the
    traceback in the debug log)."""
    logging.getLogger(__name__).error("internal error while moving", exc_info=ex)
    return MigratorError(f"internal error: {ex!r}", hint="the debug log has its traceback; please report it")
