"""One run at a time writes into an output: the lease it holds there (``owner.json``).

A run (``cai-ray synth``, ``cai-ray verify --repair``) claims the output before it writes into
it: it creates the owner file where none is (:func:`cai_ray.io.storage.create_new`), naming its
host, process and start; refreshes the file's heartbeat every ``heartbeat_s`` while it runs;
and removes it at the end. Another run refuses while the lease is fresh, naming its holder. A
lease is stale, and taken over with a warning in the log, once its heartbeat is older than the
``timeout_s`` its holder wrote in it (a run on another host that died, or that could not reach
the store for that long), or at once where it names this host and a process that is gone (a
driver killed here and resumed at once). Hosts' clocks are taken to agree within seconds (NTP):
the timeout is minutes.

The race that remains: on a store that ignores conditional uploads (AWS S3, MinIO and SeaweedFS
honour them), and when a stale lease is taken over (an overwrite, on any store), two runs that
claim at once may both write the file. Each reads it back :data:`SETTLE_S` later and goes on
only if it still finds its own, so both go on only where one's claim took longer than that
pause. Then the overwritten run finds the other's name at its next heartbeat and logs it, and
nothing is lost: either run writes each shard whole and with the same bytes, and a run's final
manifest is summed afresh where shards changed under it. The lease spares double work and a
muddled log; the output's correctness does not rest on it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace

from cai_ray.io import layout, storage
from cai_ray.io.layout import OutputBusyError

log = logging.getLogger(__name__)

SETTLE_S = 1.0
"""How long a claim that is not an exclusive create waits before reading the file back."""

CLAIM_TRIES = 3
"""Claims of an output whose lease is released between the look and the read, before giving up."""


_held_here: set[str] = set()
"""The tokens of the leases this process holds now: a lease naming this process with another
token was left by an earlier run in it (one that could not release it: its store was down)."""


def _boot() -> str:
    """This host's boot id: hosts that share a name (``ubuntu``) and the root pid namespace,
    whose id is the same on every Linux host, still differ in it."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as file:
            return file.read().strip()
    except OSError:
        return ""


def _processes() -> str:
    """The pid namespace of this process (containers on one host name their pids apart)."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's process: alive
        return False
    return False


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


@dataclass(frozen=True)
class Owner:
    """What the owner file says of the run holding the output."""

    what: str
    host: str
    pid: int
    boot: str
    """The boot id of ``host`` (:func:`_boot`)."""
    processes: str
    """The pid namespace ``pid`` belongs to."""
    started: float
    heartbeat: float
    """When the holder last refreshed the file (seconds since the epoch, its clock)."""
    timeout_s: float
    token: str

    def describe(self, now: float) -> str:
        return (
            f"{self.what} on host {self.host}, pid {self.pid}, started {_when(self.started)}, "
            f"last heartbeat {now - self.heartbeat:.0f} s ago"
        )

    def stale(self, now: float) -> str | None:
        """Why the lease may be taken over, or None while it holds."""
        here = (self.host, self.boot, self.processes) == (
            socket.gethostname(),
            _boot(),
            _processes(),
        )
        if here and _gone(self.pid):
            return f"its process {self.pid} on this host is gone"
        if here and self.pid == os.getpid() and self.token not in _held_here:
            return "an earlier run in this process left it (it could not release it)"
        if now - self.heartbeat > self.timeout_s:
            return (
                f"no heartbeat for {now - self.heartbeat:.0f} s (stale after {self.timeout_s:g} s)"
            )
        return None

    def encode(self) -> bytes:
        return json.dumps(asdict(self), indent=2).encode()


def _read(url: str) -> Owner | None:
    """The owner file's holder; None where there is none."""
    try:
        return Owner(**json.loads(storage.read_bytes(url)))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as exc:
        raise OutputBusyError(
            f"{url} is unreadable ({exc}): if no run writes into that output, delete it"
        ) from exc


class Lease:
    """The claim of this process on an output, refreshed by a thread while it is held."""

    def __init__(self, out: str, what: str, timeout_s: float, heartbeat_s: float) -> None:
        now = time.time()
        self.url = storage.join(out, layout.OWNER_FILE)
        self.heartbeat_s = heartbeat_s
        self.owner = Owner(
            what,
            socket.gethostname(),
            os.getpid(),
            _boot(),
            _processes(),
            now,
            now,
            timeout_s,
            uuid.uuid4().hex,
        )
        self._stop = threading.Event()
        self._beating = threading.Thread(target=self._beat, name="lease-heartbeat", daemon=True)

    def claim(self) -> None:
        """Create the owner file, or take over a stale one; ``OutputBusyError`` naming the
        holder of a fresh one."""
        for _ in range(CLAIM_TRIES):
            if storage.create_new(self.url, self.owner.encode()):
                if storage.is_local(self.url):  # an exclusive create: no one else has it
                    break
                self._confirm()
                break
            held = _read(self.url)
            if held is None:  # released since: try again
                continue
            now = time.time()
            why = held.stale(now)
            if why is None:
                raise OutputBusyError(
                    f"{self.url.rsplit('/', 1)[0]} is being written by another run: "
                    f"{held.describe(now)}; two runs would make the same shards twice. Wait "
                    f"for it to end; if it is gone, its lease goes stale {held.timeout_s:g} s "
                    f"after its last heartbeat, or delete {self.url}"
                )
            log.warning("taking over the lease %s of %s: %s", self.url, held.describe(now), why)
            storage.write_bytes_atomic(self.url, self.owner.encode())
            self._confirm()
            break
        else:
            raise OutputBusyError(f"{self.url} changed hands {CLAIM_TRIES} times during the claim")
        _held_here.add(self.owner.token)
        self._beating.start()

    def _confirm(self) -> None:
        """Read the file back after :data:`SETTLE_S`: another claim at the same moment has
        overwritten it unless it is still this run's."""
        time.sleep(SETTLE_S)
        held = _read(self.url)
        if held is None or held.token != self.owner.token:
            holder = held.describe(time.time()) if held else "a run that has released it since"
            raise OutputBusyError(f"{self.url} was claimed at the same moment by {holder}")

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                held = _read(self.url)
                if held is None or held.token != self.owner.token:
                    taker = held.describe(time.time()) if held else "no one (it was deleted)"
                    log.error(
                        "%s was taken over by %s: this run goes on (its shards are the same "
                        "bytes) but no longer holds the output",
                        self.url,
                        taker,
                    )
                    return
                self.owner = replace(self.owner, heartbeat=time.time())
                storage.write_bytes_atomic(self.url, self.owner.encode())
            except (OSError, OutputBusyError) as exc:
                log.warning(
                    "could not refresh the heartbeat in %s (%s): trying again", self.url, exc
                )

    def release(self) -> None:
        """Stop the heartbeat (its storage calls are bounded) and remove the owner file if it
        is still this run's."""
        self._stop.set()
        _held_here.discard(self.owner.token)
        if self._beating.is_alive():
            self._beating.join()
        try:
            held = _read(self.url)
            if held is not None and held.token == self.owner.token:
                storage.remove(self.url)
        except (OSError, OutputBusyError) as exc:
            log.warning(
                "could not release %s (%s): it goes stale %g s after its last heartbeat",
                self.url,
                exc,
                self.owner.timeout_s,
            )


@contextmanager
def holding(out: str, what: str, timeout_s: float, heartbeat_s: float) -> Iterator[Lease]:
    """The output ``out`` claimed by this run (``what`` says which command) while the block
    runs (see the module's docstring)."""
    storage.makedirs(out)
    lease = Lease(out, what, timeout_s, heartbeat_s)
    lease.claim()
    try:
        yield lease
    finally:
        lease.release()
