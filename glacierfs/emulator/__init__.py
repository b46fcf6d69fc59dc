"""A local Glacier endpoint: moto's server with Glacier's real rules.

``Emulator`` runs it on a thread of this process and yields its URL; the CLI's
``glacierfs emulator`` runs the same thing in the foreground. Its knobs are
``Emulator.settings`` in this process and ``control.configure`` from another.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from types import TracebackType

from moto.moto_server.threaded_moto_server import ThreadedMotoServer

from .backend import reset
from .knobs import EmulatorSettings, calls, restore_startup_settings, settings, startup
from .responses import install
from .store import close_store, open_store

__all__ = ["Emulator", "EmulatorSettings", "settings"]

log = logging.getLogger(__name__)


class Emulator:
    """One emulator per process: moto's backends, and so these settings, are global."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        data_dir: str | Path | None = None,
        job_delay: float = 0.0,
        fault_rate: float = 0.0,
        latency_ms: float = 0.0,
        expedited_capacity: str = "on-demand",
    ) -> None:
        self.host = host
        self.port = port
        self.data_dir = Path(data_dir) if data_dir else None
        self.settings: EmulatorSettings = settings
        self.calls = calls  # requests answered, by operation name
        self._initial = EmulatorSettings(
            job_delay=job_delay, fault_rate=fault_rate, latency_ms=latency_ms, expedited_capacity=expedited_capacity
        )
        self._server: ThreadedMotoServer | None = None
        self._scratch: tempfile.TemporaryDirectory[str] | None = None
        self.url = ""

    def start(self) -> str:
        install()
        for name, value in vars(self._initial).items():
            setattr(startup, name, value)
        restore_startup_settings()
        if self.data_dir is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="glacierfs-emulator-")
            root = Path(self._scratch.name)
        else:
            root = self.data_dir
            root.mkdir(parents=True, exist_ok=True, mode=0o700)
        open_store(root)
        self._server = ThreadedMotoServer(ip_address=self.host, port=self.port, verbose=False)
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        log.info("Glacier emulator listening on %s (data in %s)", self.url, root)
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        close_store()
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None

    def reset(self) -> None:
        """Empty every vault and restore the settings given at construction."""
        reset()
        restore_startup_settings()

    def __enter__(self) -> Emulator:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
