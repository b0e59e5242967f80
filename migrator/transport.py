"""The one transport: a `Host` is an SSH connection (paramiko) used by everything.

Commands are argv lists, quoted by `shell.join`. Host keys come only from the inventory's
known_hosts file; an unknown or changed key is refused. Docker's Engine API is reached over
the same SSH connection (`docker system dial-stdio`), so there is one set of credentials.
"""

from __future__ import annotations

import io
import logging
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import paramiko

from . import shell
from .errors import CommandError, ConnectionError_, HostKeyError, tail
from .inventory import HostSpec

log = logging.getLogger(__name__)
CHUNK = 1 << 20
CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True)
class CommandResult:
    host: str
    command: str
    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def check(self) -> CommandResult:
        if self.rc != 0:
            raise CommandError(
                f"{self.host}: `{self.command}` exited {self.rc}: {tail(self.stderr.strip() or self.stdout, 3, 1000)}",
                self,
            )
        return self


class Host:
    """A host from the inventory. Connects lazily; use in a `with` or call `close()`."""

    def __init__(self, spec: HostSpec, *, connect_timeout: float = CONNECT_TIMEOUT) -> None:
        self.spec = spec
        self.name = spec.name
        self.connect_timeout = connect_timeout
        self._client: paramiko.SSHClient | None = None
        self._docker: Any = None
        self._lock = threading.Lock()
        # What was learnt about the host over this connection and need not be asked again
        # (where the host-side scripts are, for one).
        self.facts: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"Host({self.name}@{self.spec.address})"

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- connection -------------------------------------------------------------------
    @property
    def client(self) -> paramiko.SSHClient:
        with self._lock:
            t = self._client.get_transport() if self._client else None
            if self._client is None or t is None or not t.is_active():
                self._client = self._connect()
            return self._client

    def _connect(self) -> paramiko.SSHClient:
        s = self.spec
        where = f"{s.name} ({s.user}@{s.address}:{s.port})"
        c = paramiko.SSHClient()
        c.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            c.load_host_keys(str(s.known_hosts))
        except FileNotFoundError:
            raise HostKeyError(
                f"{where}: known_hosts file {s.known_hosts} does not exist",
                hint=f"add the host's key: ssh-keyscan -p {s.port} {s.address} >> {s.known_hosts}"
                " (check its fingerprint first)",
            ) from None
        try:
            c.connect(
                s.address,
                port=s.port,
                sock=_socket(s.address, s.port, self.connect_timeout),
                username=s.user,
                key_filename=str(s.identity_file),
                timeout=self.connect_timeout,
                banner_timeout=self.connect_timeout,
                auth_timeout=self.connect_timeout,
                allow_agent=False,
                look_for_keys=False,
            )
        except paramiko.BadHostKeyException:
            raise HostKeyError(
                f"{where}: host key does not match {s.known_hosts}; refusing to connect",
                hint=f"if the host was reinstalled: ssh-keygen -f {s.known_hosts} -R "
                f"{_known_hosts_name(s)} and add the new key after checking it",
            ) from None
        except paramiko.AuthenticationException:
            raise ConnectionError_(
                f"{where}: authentication failed with key {s.identity_file}",
                hint="is the public key in the host's authorized_keys for that user?",
            ) from None
        except paramiko.SSHException as ex:
            if "not found in known_hosts" in str(ex):
                raise HostKeyError(
                    f"{where}: host key unknown (not in {s.known_hosts}); refusing to connect",
                    hint=f"add it after checking its fingerprint: ssh-keyscan -p {s.port} "
                    f"{s.address} >> {s.known_hosts}",
                ) from None
            raise ConnectionError_(f"{where}: SSH failed: {ex}") from None
        except FileNotFoundError:
            raise ConnectionError_(f"{where}: identity file {s.identity_file} not found") from None
        except (TimeoutError, OSError) as ex:
            raise ConnectionError_(
                f"{where}: unreachable: {ex.strerror or ex}",
                hint="is the host up and sshd listening? (`migrator hosts` checks them all)",
            ) from None
        t = c.get_transport()
        if t is not None:
            t.set_keepalive(15)
        return c

    def reset(self) -> None:
        """Drop the SSH connection; the next use connects again."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def close(self) -> None:
        with self._lock:
            if self._docker is not None:
                self._docker.close()
                self._docker = None
            if self._client is not None:
                self._client.close()
                self._client = None

    # --- commands ---------------------------------------------------------------------
    def _exec(self, command: str, timeout: float | None) -> paramiko.Channel:
        log.debug("%s$ %s", self.name, command)
        t = self.client.get_transport()
        assert t is not None
        ch = t.open_session(timeout=self.connect_timeout)
        ch.settimeout(timeout)
        ch.exec_command(command)
        return ch

    def run(
        self,
        argv: Sequence[str | int],
        *,
        check: bool = True,
        timeout: float | None = 600,
        stdin: bytes | None = None,
    ) -> CommandResult:
        """Run argv (quoted here) and wait. `check` raises CommandError on a non-zero exit."""
        cmd = shell.join(argv)
        ch = self._exec(cmd, timeout)
        try:
            if stdin is not None:
                try:
                    ch.sendall(stdin)
                except OSError:  # the command ended, or closed its stdin, before reading it all:
                    pass  # its exit status says how it went
            ch.shutdown_write()
            out, err = _drain(ch, timeout)
            rc = ch.recv_exit_status()
        except TimeoutError:
            raise CommandError(f"{self.name}: `{cmd}` timed out after {timeout} s") from None
        finally:
            ch.close()
        res = CommandResult(self.name, cmd, rc, out.decode(errors="replace"), err.decode(errors="replace"))
        if rc != 0:
            log.debug("%s: rc=%d stderr=%s", self.name, rc, res.stderr.strip()[-500:])
        return res.check() if check else res

    def stream(self, argv: Sequence[str | int], on_line: Callable[[str], None]) -> CommandResult:
        """Run argv to the end, handing each stderr line (ended by \\n or \\r) to on_line as
        it arrives: for progress reports of long commands."""
        cmd = shell.join(argv)
        ch = self._exec(cmd, None)
        try:
            ch.shutdown_write()
            out, err = _drain(ch, on_line=on_line)
            rc = ch.recv_exit_status()
        finally:
            ch.close()
        return CommandResult(self.name, cmd, rc, out.decode(errors="replace"), err.decode(errors="replace"))

    def ok(self, argv: Sequence[str | int], timeout: float | None = 60) -> bool:
        return self.run(argv, check=False, timeout=timeout).ok

    def open(self, argv: Sequence[str | int], timeout: float | None = None) -> Stream:
        """Start argv and return its channel for streaming stdin/stdout."""
        cmd = shell.join(argv)
        return Stream(self, cmd, self._exec(cmd, timeout))

    def put(self, data: bytes, path: str, mode: int = 0o600) -> None:
        """Write a file atomically (temp + rename) with `mode`, over SFTP."""
        with self.client.open_sftp() as sftp:
            tmp = f"{path}.tmp-migrator"
            with sftp.open(tmp, "wb") as f:
                f.set_pipelined(True)
                sftp.chmod(tmp, mode)
                f.write(data)
            sftp.posix_rename(tmp, path)

    def get(self, path: str) -> bytes:
        with self.client.open_sftp() as sftp, sftp.open(path, "rb") as f:
            f.prefetch()
            return bytes(f.read())

    # --- docker -----------------------------------------------------------------------
    @property
    def docker(self) -> Any:
        """A docker-py APIClient whose HTTP runs over this SSH connection."""
        if self._docker is None:
            from .engine import api_client

            self._docker = api_client(self)
        return self._docker


class Stream:
    """A running command whose stdin/stdout are streamed by the caller."""

    def __init__(self, host: Host, command: str, channel: paramiko.Channel) -> None:
        self.host = host
        self.command = command
        self.channel = channel

    def chunks(self) -> Iterator[bytes]:
        while True:
            data = self.channel.recv(CHUNK)
            if not data:
                return
            yield data

    def write(self, data: bytes) -> None:
        self.channel.sendall(data)

    def finish(self) -> CommandResult:
        """Close stdin, collect what is left and the exit status."""
        ch = self.channel
        ch.shutdown_write()
        out, err = _drain(ch)
        rc = ch.recv_exit_status()
        ch.close()
        return CommandResult(self.host.name, self.command, rc, out.decode(errors="replace"),
                             err.decode(errors="replace"))


EOF_GRACE_S = 10.0


def _drain(ch: paramiko.Channel, timeout: float | None = None,
           on_line: Callable[[str], None] | None = None) -> tuple[bytes, bytes]:
    """Read stdout and stderr to the end without letting either window fill and block;
    each complete stderr line (ended by \\n or \\r) also goes to on_line as it arrives.
    The end is the exit status *and* the end of the output: sshd sends the status when the
    command exits, and output still on its way can come after it (returning at the status
    cut outputs of 40 KB and more short, now and then). A command that exits while
    something it started keeps its output open ends EOF_GRACE_S after its status."""
    out, err, partial = io.BytesIO(), io.BytesIO(), b""
    deadline = None if timeout is None else time.monotonic() + timeout
    eof_by: float | None = None
    while True:
        while ch.recv_ready():
            out.write(ch.recv(CHUNK))
        while ch.recv_stderr_ready():
            data = ch.recv_stderr(CHUNK)
            err.write(data)
            if on_line:
                *lines, partial = (partial + data).replace(b"\r", b"\n").split(b"\n")
                for line in lines:
                    on_line(line.decode(errors="replace"))
        if ch.exit_status_ready() and not ch.recv_ready() and not ch.recv_stderr_ready():
            if ch.eof_received or ch.closed:
                return out.getvalue(), err.getvalue()
            eof_by = eof_by or time.monotonic() + EOF_GRACE_S
            if time.monotonic() >= eof_by:
                log.warning("command exited, its output still open after %.0f s; not waiting for it", EOF_GRACE_S)
                return out.getvalue(), err.getvalue()
        wait = 1.0 if deadline is None else deadline - time.monotonic()
        if wait <= 0:
            raise TimeoutError()
        select.select([ch], [], [], min(wait, 1.0))


def relay(
    src: Stream,
    dst: Stream,
    progress: Callable[[int], None] | None = None,
) -> tuple[int, CommandResult, CommandResult]:
    """Pipe src's stdout into dst's stdin through the controller; returns bytes, results."""
    sent = 0
    for chunk in src.chunks():
        dst.write(chunk)
        sent += len(chunk)
        if progress:
            progress(len(chunk))
    return sent, src.finish(), dst.finish()


DEAD_PEER_S = 20


def _socket(address: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection that notices a dead peer (a cut link) in about DEAD_PEER_S seconds,
    not after minutes of retransmissions: everything waiting on it then fails, and the
    caller can roll back instead of hanging."""
    sock = socket.create_connection((address, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle wait on each small request
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for opt, value in (("TCP_KEEPIDLE", 5), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3),
                       ("TCP_USER_TIMEOUT", DEAD_PEER_S * 1000)):
        if hasattr(socket, opt):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), value)
    return sock


def _known_hosts_name(s: HostSpec) -> str:
    return s.address if s.port == 22 else f"[{s.address}]:{s.port}"


def wait_for(pred: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Poll `pred` until true or timeout (readiness polling, never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if pred():
                return True
        except Exception:  # noqa: BLE001 - the predicate probes something not ready yet
            log.debug("wait_for: predicate raised", exc_info=True)
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


