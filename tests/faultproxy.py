"""A TCP proxy in front of a real HTTP server that misbehaves on a schedule, as networks and
object stores do: connection ``n`` gets ``schedule[n % len(schedule)]``. Every connection
carries one request (the proxy asks the server to close it after its answer), so request ``n``,
a retry included, meets ``schedule[n % len(schedule)]`` whatever a client's connection pool.

* ``pass``: the request and its answer flow untouched.
* ``reset``: the connection is accepted and reset at once (TCP RST), as a dropped link does.
* ``throttle``: the request is read and answered ``503 SlowDown``, as S3 throttles.
* ``delay``: the answer is held back ``delay_s`` seconds, then passed on, as a slow store does.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections import Counter

SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


def _reset(conn: socket.socket) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def _read_head(conn: socket.socket) -> tuple[bytes, bytes] | None:
    """One request head and what followed it in the same reads; None if the client left."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _read_request(conn: socket.socket) -> None:
    """Read one request head, and its body unless the client waits for 100-continue."""
    request = _read_head(conn)
    if request is None:
        return
    head, body = request
    headers = {
        k.strip().lower(): v.strip()
        for k, _, v in (line.partition(b":") for line in head.split(b"\r\n")[1:])
    }
    if headers.get(b"expect", b"").lower() == b"100-continue":
        return
    remaining = int(headers.get(b"content-length", b"0")) - len(body)
    while remaining > 0:
        chunk = conn.recv(min(remaining, 65536))
        if not chunk:
            return
        remaining -= len(chunk)


def _throttle(conn: socket.socket) -> None:
    try:
        _read_request(conn)
        conn.sendall(
            b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n"
            + f"Content-Length: {len(SLOW_DOWN)}\r\nConnection: close\r\n\r\n".encode()
            + SLOW_DOWN
        )
    except OSError:
        pass
    finally:
        conn.close()


def _closing(head: bytes) -> bytes:
    """A request head that asks the server to close the connection after its answer."""
    lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"connection:")]
    return b"\r\n".join([*lines, b"Connection: close"]) + b"\r\n\r\n"


def _forward(conn: socket.socket, upstream: tuple[str, int], delay_s: float) -> None:
    """Pass one request to the server and its answer back, the answer ``delay_s`` late."""
    try:
        request = _read_head(conn)
        if request is None:
            conn.close()
            return
        server = socket.create_connection(upstream)
        server.sendall(_closing(request[0]) + request[1])
    except OSError:
        conn.close()
        return
    requests = threading.Thread(target=_pump, args=(conn, server), daemon=True)
    requests.start()
    _pump(server, conn, delay_s)  # until the server closes, having answered
    requests.join(30)
    conn.close()
    server.close()


def _pump(source: socket.socket, sink: socket.socket, delay_s: float = 0.0) -> None:
    """Bytes from ``source`` to ``sink`` until either ends, the first ``delay_s`` late."""
    try:
        while chunk := source.recv(65536):
            if delay_s:
                time.sleep(delay_s)
                delay_s = 0.0
            sink.sendall(chunk)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class FaultProxy:
    def __init__(
        self, upstream: tuple[str, int], schedule: list[str], delay_s: float = 0.0
    ) -> None:
        if not schedule or set(schedule) - {"pass", "reset", "throttle", "delay"}:
            raise ValueError(f"bad schedule {schedule}")
        if "delay" in schedule and not delay_s > 0:
            raise ValueError("a schedule with 'delay' needs delay_s above 0")
        self.upstream = upstream
        self.schedule = schedule
        self.delay_s = delay_s
        self.counts: Counter[str] = Counter()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        connections = 0
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            action = self.schedule[connections % len(self.schedule)]
            connections += 1
            self.counts[action] += 1
            if action == "reset":
                _reset(conn)
            elif action == "throttle":
                threading.Thread(target=_throttle, args=(conn,), daemon=True).start()
            else:
                delay_s = self.delay_s if action == "delay" else 0.0
                forward = (conn, self.upstream, delay_s)
                threading.Thread(target=_forward, args=forward, daemon=True).start()

    def close(self) -> None:
        self._listener.close()
