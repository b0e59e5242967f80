"""The one place a shell command line is built. Every argument goes through `shlex.quote`."""

from __future__ import annotations

import shlex
from collections.abc import Sequence

# tar that keeps numeric owners, modes and xattrs (overlay2's whiteouts and opaque dirs).
TAR = ["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*"]
# Compression on the wire and in stored checkpoints; zstd's frames carry a checksum that
# `zstd -d` verifies.
ZSTD = ["zstd", "-1", "-T0", "-q", "-c"]
UNZSTD = ["zstd", "-d", "-q", "-c"]


def quote(arg: str | int) -> str:
    return shlex.quote(str(arg))


def join(argv: Sequence[str | int]) -> str:
    """Quote every argument: names, paths and labels from users never reach a shell raw."""
    return " ".join(quote(a) for a in argv)


def pipeline(*commands: Sequence[str | int]) -> list[str]:
    """argv for `a | b | c` under bash with pipefail, so a failing producer fails the whole."""
    return ["bash", "-c", "set -o pipefail; " + " | ".join(join(c) for c in commands)]


def _encode(word: str) -> str:
    return "".join(c if " " < c < "\x7f" and c not in "%\\" else "".join(f"%{b:02X}" for b in c.encode())
                   for c in word)


def request(words: Sequence[str | int]) -> str:
    """A request for receive.sh behind a forced command (SSH_ORIGINAL_COMMAND): words
    separated by spaces, each with '%', '\\', whitespace and what is not printable ASCII as
    %XX, which receive.sh decodes. No shell reads it."""
    return " ".join(_encode(str(w)) for w in words)
