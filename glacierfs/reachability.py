"""Whether Glacier's endpoint answers, as the client's calls find it."""

from __future__ import annotations

import logging
import threading
import time

from glacierfs import errors

log = logging.getLogger(__name__)


class Reachability:
    """Whether the endpoint answers, as every call finds: lost when a call gets
    no answer at all (after botocore's retries), back when any call gets one,
    even an error. Each change is logged once, not once per call."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self._lock = threading.Lock()
        self._lost_since: float | None = None
        self._error = ""

    def answered(self) -> None:
        with self._lock:
            lost_since, self._lost_since = self._lost_since, None
        if lost_since is not None:
            log.warning(
                "Glacier at %s answers again, after %.0f s without an answer", self.endpoint, time.time() - lost_since
            )

    def unreachable(self, error: errors.GlacierFSError) -> None:
        with self._lock:
            first = self._lost_since is None
            if first:
                self._lost_since = time.time()
            self._error = str(error)
        if first:
            log.error(
                "lost Glacier at %s: %s; what needs it fails (EIO) until it answers again "
                "(logged once; `glacierfs status` shows it)",
                self.endpoint,
                error,
            )

    def status(self) -> dict[str, object]:
        with self._lock:
            return {
                "endpoint": self.endpoint,
                "reachable": self._lost_since is None,
                "lost_since": self._lost_since,
                "error": self._error if self._lost_since is not None else "",
            }
