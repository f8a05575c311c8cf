"""Progress lines for the steps between epochs that can take minutes (decoding a folder,
extracting features, mining neighbours, K search, making the report): never silent."""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger("vtcc")


class Progress:
    """Logs ``<what>: <done> of <total> <unit> (<elapsed> s, about <left> s left)`` at the first
    update, then at most every ``every`` seconds, and once at the end. Thread-safe."""

    def __init__(self, what: str, total: int, unit: str = "", every: float = 10.0) -> None:
        self.what, self.total, self.unit, self.every = what, total, unit, every
        self.done = 0
        self._start = time.perf_counter()
        self._last = None
        self._lock = threading.Lock()

    def advance(self, count: int = 1) -> None:
        with self._lock:
            self.done += count
            now = time.perf_counter()
            if self._last is None or now - self._last >= self.every or self.done >= self.total:
                self._last = now
                self._report(now)

    def _report(self, now: float) -> None:
        elapsed = now - self._start
        left = elapsed / max(self.done, 1) * (self.total - self.done)
        unit = f" {self.unit}" if self.unit else ""
        if self.done >= self.total:
            log.info("%s: %d%s done in %.0f s", self.what, self.total, unit, elapsed)
        else:
            log.info(
                "%s: %d of %d%s (%.0f s, about %.0f s left)",
                self.what,
                self.done,
                self.total,
                unit,
                elapsed,
                left,
            )
