"""A background worker: runs a function every so often, or sooner when woken.

The job poller, the inventory follower, the upload janitor and the manifest
writer are all this. An exception is logged and the next round tries again:
a worker that died would leave jobs unfollowed and uploads unaborted.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Periodic:
    def __init__(self, name: str, interval: float, work: Callable[[], None]) -> None:
        self.name = name
        self.interval = interval
        self._work = work
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._work()
            except Exception:
                log.exception("%s: this round failed; the next one tries again", self.name)
            self._wake.wait(self.interval)
            self._wake.clear()
