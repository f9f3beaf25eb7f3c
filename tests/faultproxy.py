"""A TCP proxy in front of a real server that misbehaves on a schedule, as networks and object
stores do: connection ``n`` gets ``schedule[n % len(schedule)]``.

* ``pass``: bytes flow both ways untouched.
* ``reset``: the connection is accepted and reset at once (TCP RST), as a dropped link does.
* ``throttle``: the request is read and answered ``503 SlowDown``, as S3 throttles.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections import Counter

SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


def _reset(conn: socket.socket) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def _read_request(conn: socket.socket) -> None:
    """Read one request head, and its body unless the client waits for 100-continue."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
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


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while chunk := source.recv(65536):
            sink.sendall(chunk)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class FaultProxy:
    def __init__(self, upstream: tuple[str, int], schedule: list[str]) -> None:
        if not schedule or set(schedule) - {"pass", "reset", "throttle"}:
            raise ValueError(f"bad schedule {schedule}")
        self.upstream = upstream
        self.schedule = schedule
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
                upstream = socket.create_connection(self.upstream)
                for a, b in ((conn, upstream), (upstream, conn)):
                    threading.Thread(target=_pump, args=(a, b), daemon=True).start()

    def close(self) -> None:
        self._listener.close()
