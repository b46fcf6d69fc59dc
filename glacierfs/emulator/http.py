"""The HTTP plumbing every handler of the emulator shares: faults, latency, counting, paths, replies.

Kept apart from the handlers (``responses``, ``config_responses``) so each of
those stays one API surface; this base is moto's GlacierResponse made exact
about paths and able to misbehave on purpose.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import socket
import time
from typing import Any
from urllib.parse import unquote

from moto.core.common_types import TYPE_RESPONSE
from moto.glacier.responses import GlacierResponse

from .backend import EmulatedGlacierBackend, emulated_backends
from .knobs import calls, settings
from .rules import json_object

log = logging.getLogger(__name__)

# (status, error code) pairs a faulty service answers with; None drops the connection.
FAULTS: list[tuple[int, str] | None] = [
    (500, "ServiceUnavailableException"),
    (503, "ServiceUnavailableException"),
    (400, "ThrottlingException"),
    (408, "RequestTimeoutException"),
    None,
]


class EmulatorHTTP(GlacierResponse):
    _raw_path: str | None = None

    @property
    def glacier_backend(self) -> EmulatedGlacierBackend:
        return emulated_backends[self.current_account][self.region]

    def _dispatch(self, request: Any, full_url: str | None = None, headers: Any = None) -> TYPE_RESPONSE:
        # A round trip: half of it before the service acts, half before its answer
        # arrives, so a client can die after the service acted, unanswered.
        if settings.latency_ms:
            time.sleep(settings.latency_ms / 2000)
        try:
            return self._dispatch_now(request, full_url, headers)
        finally:
            if settings.latency_ms:
                time.sleep(settings.latency_ms / 2000)

    def _dispatch_now(self, request: Any, full_url: str | None, headers: Any) -> TYPE_RESPONSE:
        if settings.fault_rate and random.random() < settings.fault_rate:
            return self._fault(request)
        # request.url re-quotes the decoded path and leaves '%' alone, so a name
        # holding '%41' would read as 'A'; the raw request line is exact.
        raw_uri = getattr(request, "environ", {}).get("RAW_URI")
        self._raw_path = raw_uri.split("?", 1)[0] if raw_uri else None
        return super()._dispatch(request, full_url, headers)

    def _fault(self, request: Any) -> TYPE_RESPONSE:
        fault = random.choice(FAULTS)
        environ = getattr(request, "environ", {})
        connection = environ.get("werkzeug.socket")
        if fault is None and connection is not None:
            log.info("emulator: dropping the connection of %s %s on purpose", request.method, request.path)
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            return 500, {}, ""
        status, code = fault or (500, "ServiceUnavailableException")
        log.info("emulator: answering %s %s with %s %s on purpose", request.method, request.path, status, code)
        body = json.dumps({"code": code, "message": "Injected fault", "type": "Server"})
        return status, {"content-type": "application/json", "x-amzn-errortype": code}, body

    def call_action(self) -> TYPE_RESPONSE:
        action = self._get_action()
        calls[action] += 1
        if action == settings.fail_operation and time.time() < settings.fail_until:
            log.info(
                "emulator: answering %s with %s on purpose (an outage of that operation)", action, settings.fail_status
            )
            body = json.dumps({"code": "ServiceUnavailableException", "message": "Injected outage", "type": "Server"})
            return (
                settings.fail_status,
                {"content-type": "application/json", "x-amzn-errortype": "ServiceUnavailableException"},
                body,
            )
        return super().call_action()

    # Helpers --------------------------------------------------------------

    def _segments(self) -> list[str]:
        """Path segments after the account id: ['vaults', NAME, 'jobs', ID, ...]."""
        path = self._raw_path or self.parsed_url.path
        return [unquote(part) for part in path.split("/")[2:]]

    @property
    def _vault_name(self) -> str:
        return self._segments()[1]

    def _item_id(self) -> str:
        return self._segments()[3]

    def _query(self, name: str) -> str | None:
        values = self.querystring.get(name)
        return values[0] if values else None

    def _json(self, status: int, payload: dict[str, Any]) -> TYPE_RESPONSE:
        return status, {"content-type": "application/json", "status": status}, json.dumps(payload)

    def _empty(self, status: int, headers: dict[str, Any] | None = None) -> TYPE_RESPONSE:
        return status, {"status": status, **(headers or {})}, ""

    def _location(self, *parts: str) -> str:
        return "/".join(["", self.current_account, "vaults", self._vault_name, *parts])

    def _body(self, what: str) -> dict[str, Any]:
        return json_object(self.body, what)
