"""Job progress: shards, samples, throughput and ETA.

On a terminal it is a progress bar; elsewhere (``ray job submit`` logs, Kubernetes pods) a
progress bar's carriage returns are noise, so it logs one line every ``interval`` seconds.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

log = logging.getLogger(__name__)


def format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class Progress:
    def __init__(
        self, shards: int, *, enabled: bool = True, interval: float = 30.0, desc: str = "synth"
    ) -> None:
        self.shards = shards
        self.desc = desc
        self.done = 0
        self.samples = 0
        self.interval = interval
        self.started = time.monotonic()
        self._last_log = self.started
        self._bar: Any = None
        self.enabled = enabled
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=shards, unit="shard", desc=desc)

    def status(self, now: float | None = None) -> str:
        elapsed = max((now or time.monotonic()) - self.started, 1e-9)
        rate = self.samples / elapsed
        line = (
            f"{self.done}/{self.shards} shards ({self.done / max(self.shards, 1):.0%}), "
            f"{self.samples} samples, {rate:.0f} samples/s"
        )
        if 0 < self.done < self.shards:
            line += f", ETA {format_duration(elapsed / self.done * (self.shards - self.done))}"
        return line

    def update(self, samples: int) -> None:
        self.done += 1
        self.samples += samples
        if self._bar is not None:
            elapsed = max(time.monotonic() - self.started, 1e-9)
            self._bar.set_postfix(samples=self.samples, per_s=f"{self.samples / elapsed:.0f}")
            self._bar.update(1)
            return
        now = time.monotonic()
        if self.enabled and (now - self._last_log >= self.interval or self.done == self.shards):
            self._last_log = now
            log.info("%s: %s", self.desc, self.status(now))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
