"""What a client and a neighbour see of a move, on the lab (tests and the benchmark): one
Redis connection held through it, and who answers ARP for the container's address."""

from __future__ import annotations

import socket
import struct
import threading
import time
from pathlib import Path


class HeldClient(threading.Thread):
    """One TCP connection to a Redis, kept for the whole run: a session of its own first
    (SELECT `db`, CLIENT SETNAME), then a SET every `interval` s, each waited for. An error
    ends it (`error`), or with `reconnect` (a client of a move that closes connections) is
    counted (`errors`) and a new connection tried every few ms. `acked`: the SETs Redis
    acknowledged; `longest_gap_s`: the longest wait between two acknowledgements (the
    downtime it saw)."""

    def __init__(self, address: str, port: int = 6379, *, db: int = 3, name: str = "held",
                 interval: float = 0.005, timeout: float = 30, reconnect: bool = False) -> None:
        super().__init__(daemon=True)
        self.where, self.timeout, self.name, self.reconnect = (address, port), timeout, name, reconnect
        self.interval, self.db = interval, db
        self.acked: list[int] = []
        self.error: str | None = None
        self.errors = 0
        self.longest_gap_s = 0.0
        self.stop = threading.Event()
        self.connect(timeout)
        self.client_id = self.call("CLIENT", "ID")

    def connect(self, timeout: float) -> None:
        self.sock = socket.create_connection(self.where, timeout=timeout)
        self.sock.settimeout(self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        assert self.call("SELECT", str(self.db)) == b"+OK" and self.call("CLIENT", "SETNAME", self.name) == b"+OK"

    def call(self, *words: str) -> bytes:
        """One command on the held connection; its reply's first line."""
        self.sock.sendall(b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w.encode()) for w in words))
        while b"\r\n" not in self.buf:
            got = self.sock.recv(4096)
            if not got:
                raise ConnectionError("connection closed by the server")
            self.buf += got
        line, self.buf = self.buf.split(b"\r\n", 1)
        if line.startswith(b"$") and line != b"$-1":  # a bulk reply: its body
            n = int(line[1:])
            while len(self.buf) < n + 2:
                self.buf += self.sock.recv(4096)
            line, self.buf = self.buf[:n], self.buf[n + 2:]
        return line

    def run(self) -> None:
        i, last = 0, time.monotonic()
        while not self.stop.is_set():
            try:
                if self.call("SET", f"held{i}", str(i)) != b"+OK":
                    self.error = "SET not acknowledged"
                    return
            except OSError as ex:
                self.error = repr(ex)
                if not self.reconnect:
                    return
                self.errors += 1
                self.sock.close()
                while not self.stop.is_set():
                    try:
                        self.connect(0.1)
                        break
                    except OSError:
                        time.sleep(0.005)
                continue
            now = time.monotonic()
            self.acked.append(i)
            self.longest_gap_s, last, i = max(self.longest_gap_s, now - last), now, i + 1
            time.sleep(self.interval)

    def finish(self) -> None:
        self.stop.set()
        self.join(60)


class ArpWatch(threading.Thread):
    """Asks the lab's L2 (from this machine, on the lab bridge: a third host) who has
    `address`, every `interval` s, and counts the replies to each request: more than one is
    two hosts answering for it at once."""

    def __init__(self, bridge: str, address: str, own_address: str, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
        self.sock.bind((bridge, 0))
        self.sock.settimeout(interval)
        self.mac = bytes.fromhex(Path(f"/sys/class/net/{bridge}/address").read_text().strip().replace(":", ""))
        self.ip, self.own = socket.inet_aton(address), socket.inet_aton(own_address)
        self.interval = interval
        self.replies: list[int] = []  # per request
        self.macs: set[str] = set()
        self.stop = threading.Event()

    def run(self) -> None:
        request = (b"\xff" * 6 + self.mac + b"\x08\x06" + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1)
                   + self.mac + self.own + b"\x00" * 6 + self.ip)
        while not self.stop.is_set():
            self.sock.send(request)
            end, n = time.monotonic() + self.interval, 0
            while (left := end - time.monotonic()) > 0:
                self.sock.settimeout(left)
                try:
                    frame = self.sock.recv(128)
                except TimeoutError:
                    break
                if len(frame) >= 42 and frame[12:14] == b"\x08\x06" and frame[20:22] == b"\x00\x02" \
                        and frame[28:32] == self.ip:
                    n += 1
                    self.macs.add(frame[22:28].hex(":"))
            self.replies.append(n)

    def finish(self) -> None:
        self.stop.set()
        self.join(10)
        self.sock.close()

    @property
    def most(self) -> int:
        return max(self.replies, default=0)
