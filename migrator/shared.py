"""Work done once for many migrations: what a drain's moves share.

Every container of a drain moves between the same few host pairs, and much of what one
migration asks is the same for all of them: each host's checks (Docker, CRIU, `criu
check`, tools), whether the target's CPU has what the source's may use, the speed of the
link between them. A `Shared` given to each `Migration` of a batch computes each of those
once, the first time one of them asks, and hands the others the answer (they wait for it
meanwhile). A single `migrate` has none and asks everything itself. (Their SSH
connections stay their own: sshd allows ten sessions per connection, and a move's Docker
API connections each hold one open.)

It also bounds how many of the batch's containers are frozen at once (`window`): moves
prepare in parallel, but a frozen container's dump, copy and restore compete with no more
than `frozen - 1` others, so its downtime stays near a single move's.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Hashable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


class Shared:
    def __init__(self, frozen: int = 1) -> None:
        self._frozen = threading.BoundedSemaphore(max(1, frozen))
        self._lock = threading.Lock()
        self._done: dict[Hashable, Any] = {}
        self._busy: dict[Hashable, threading.Lock] = {}

    def once(self, key: Hashable, compute: Callable[[], T]) -> T:
        """compute()'s value for `key`: computed by the first caller, kept for the others.
        A compute that raises is not kept (the next caller tries again)."""
        with self._lock:
            if key in self._done:
                return self._done[key]  # type: ignore[no-any-return]
            busy = self._busy.setdefault(key, threading.Lock())
        with busy:
            with self._lock:
                if key in self._done:
                    return self._done[key]  # type: ignore[no-any-return]
            value = compute()
            with self._lock:
                self._done[key] = value
            return value


    @contextlib.contextmanager
    def window(self) -> Iterator[None]:
        """Held from a move's freeze until its copy answers on the target."""
        with self._frozen:
            yield


def once(shared: Shared | None, key: Hashable, compute: Callable[[], T]) -> T:
    """compute() through `shared` when there is one, else compute()."""
    return shared.once(key, compute) if shared is not None else compute()
