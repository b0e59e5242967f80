"""The command line: parses, calls the core, renders. No logic of its own.

One module per command family (migrate, fleet, checkpoints, lab); `render` draws.
"""

from __future__ import annotations

import os
import sys
import traceback

from ..controller import state_dir
from ..errors import ExitCode
from . import checkpoints, fleet, lab, migrate  # noqa: F401 - they register their commands
from .base import app
from .render import Renderer, err, fail, styled

__all__ = ["Renderer", "app", "fail", "main"]


def _write_debug_log(text: str) -> str:
    """The traceback of an unexpected error, appended to a 0600 file of the controller's
    state dir (never a predictable path in /tmp)."""
    directory = state_dir()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / "debug.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as f:
        f.write(text)
    return str(path)


def main() -> None:
    try:
        app()
    except SystemExit:
        raise
    except BaseException as ex:  # noqa: BLE001 - the last net: a bug, not an expected error
        if isinstance(ex, KeyboardInterrupt):
            err.print("interrupted")
            sys.exit(130)
        path = _write_debug_log(traceback.format_exc())
        err.print(styled("red", "internal error:", f" {ex!r}; traceback in {path}"))
        sys.exit(int(ExitCode.FAILED_NOT_ROLLED_BACK))
