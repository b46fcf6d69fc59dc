"""HTTP face of the emulator: moto's GlacierResponse, extended and made strict.

moto picks the handler method by the operation's name, so adding
``initiate_multipart_upload`` and friends here, and registering this class on
moto's glacier ``url_paths``, serves them under moto's server.
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
from moto.glacier import urls as moto_glacier_urls
from moto.glacier.responses import GlacierResponse

from .backend import EmulatedGlacierBackend, emulated_backends
from .knobs import calls, settings
from .rules import check_page, invalid

log = logging.getLogger(__name__)

# (status, error code) pairs a faulty service answers with; None drops the connection.
FAULTS: list[tuple[int, str] | None] = [
    (500, "ServiceUnavailableException"),
    (503, "ServiceUnavailableException"),
    (400, "ThrottlingException"),
    (408, "RequestTimeoutException"),
    None,
]


class EmulatorResponse(GlacierResponse):
    _raw_path: str | None = None

    @property
    def glacier_backend(self) -> EmulatedGlacierBackend:
        return emulated_backends[self.current_account][self.region]

    def _dispatch(self, request: Any, full_url: str | None = None, headers: Any = None) -> TYPE_RESPONSE:
        if settings.latency_ms:
            time.sleep(settings.latency_ms / 1000)
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

    # Vaults ---------------------------------------------------------------

    def list_vaults(self) -> TYPE_RESPONSE:
        limit = check_page(self._query("limit"), 10)
        vaults, marker = self.glacier_backend.list_vault_page(self._query("marker"), limit)
        return self._json(200, {"VaultList": vaults, "Marker": marker})

    def describe_vault(self) -> TYPE_RESPONSE:
        return self._json(200, self.glacier_backend.describe_vault_dict(self._vault_name))

    def create_vault(self) -> TYPE_RESPONSE:
        self.glacier_backend.create_vault(self._vault_name)
        return self._empty(201, {"Location": self._location()})

    def delete_vault(self) -> TYPE_RESPONSE:
        self.glacier_backend.delete_vault(self._vault_name)
        return self._empty(204)

    # Archives -------------------------------------------------------------

    def upload_archive(self) -> TYPE_RESPONSE:
        archive_id, tree_hash = self.glacier_backend.upload_archive_checked(
            self._vault_name,
            self.body,
            self.headers.get("x-amz-archive-description") or "",
            self.headers.get("x-amz-sha256-tree-hash"),
            self.headers.get("x-amz-content-sha256"),
        )
        return self._empty(
            201,
            {
                "Location": self._location("archives", archive_id),
                "x-amz-archive-id": archive_id,
                "x-amz-sha256-tree-hash": tree_hash,
            },
        )

    def delete_archive(self) -> TYPE_RESPONSE:
        self.glacier_backend.delete_archive(self._vault_name, self._item_id())
        return self._empty(204)

    # Multipart upload -----------------------------------------------------

    def initiate_multipart_upload(self) -> TYPE_RESPONSE:
        upload_id = self.glacier_backend.initiate_multipart(
            self._vault_name,
            self.headers.get("x-amz-part-size"),
            self.headers.get("x-amz-archive-description") or "",
        )
        return self._empty(
            201,
            {
                "Location": self._location("multipart-uploads", upload_id),
                "x-amz-multipart-upload-id": upload_id,
            },
        )

    def upload_multipart_part(self) -> TYPE_RESPONSE:
        tree_hash = self.glacier_backend.upload_part(
            self._vault_name,
            self._item_id(),
            self.headers.get("Content-Range"),
            self.body,
            self.headers.get("x-amz-sha256-tree-hash"),
            self.headers.get("x-amz-content-sha256"),
        )
        return self._empty(204, {"x-amz-sha256-tree-hash": tree_hash})

    def complete_multipart_upload(self) -> TYPE_RESPONSE:
        archive_id, tree_hash = self.glacier_backend.complete_multipart(
            self._vault_name,
            self._item_id(),
            self.headers.get("x-amz-archive-size"),
            self.headers.get("x-amz-sha256-tree-hash"),
        )
        return self._empty(
            201,
            {
                "Location": self._location("archives", archive_id),
                "x-amz-archive-id": archive_id,
                "x-amz-sha256-tree-hash": tree_hash,
            },
        )

    def abort_multipart_upload(self) -> TYPE_RESPONSE:
        self.glacier_backend.abort_multipart(self._vault_name, self._item_id())
        return self._empty(204)

    def list_parts(self) -> TYPE_RESPONSE:
        limit = check_page(self._query("limit"), 1000)
        return self._json(
            200,
            self.glacier_backend.list_parts_page(self._vault_name, self._item_id(), self._query("marker"), limit),
        )

    def list_multipart_uploads(self) -> TYPE_RESPONSE:
        limit = check_page(self._query("limit"), 1000)
        uploads, marker = self.glacier_backend.list_uploads_page(self._vault_name, self._query("marker"), limit)
        return self._json(200, {"UploadsList": uploads, "Marker": marker})

    # Jobs -----------------------------------------------------------------

    def initiate_job(self) -> TYPE_RESPONSE:
        try:
            params = json.loads(self.body or b"{}")
        except ValueError:
            params = None
        if not isinstance(params, dict):
            raise invalid("The job parameters are not a JSON object")
        job_id = self.glacier_backend.initiate_job_checked(self._vault_name, params)
        return self._empty(202, {"Location": self._location("jobs", job_id), "x-amz-job-id": job_id})

    def describe_job(self) -> TYPE_RESPONSE:  # type: ignore[override]
        return self._json(200, self.glacier_backend.describe_job_dict(self._vault_name, self._item_id()))

    def list_jobs(self) -> TYPE_RESPONSE:
        limit = check_page(self._query("limit"), 50)
        jobs, marker = self.glacier_backend.list_jobs_page(
            self._vault_name,
            self._query("marker"),
            limit,
            self._query("statuscode"),
            self._query("completed"),
        )
        return self._json(200, {"JobList": jobs, "Marker": marker})

    def get_job_output(self) -> TYPE_RESPONSE:
        status, headers, body = self.glacier_backend.job_output(
            self._vault_name, self._item_id(), self.headers.get("Range")
        )
        return status, {"status": status, **headers}, body


_VAULT = r"{0}/(?P<account_number>[^/]+)/vaults/(?P<vault_name>[^/]+)"
_EXTRA_PATHS = [
    _VAULT + r"/multipart-uploads$",
    _VAULT + r"/multipart-uploads/(?P<upload_id>[^/]+)$",
]


def install() -> None:
    """Point every moto glacier route at EmulatorResponse; add the multipart routes.

    Must run before the first request, since moto builds its URL map lazily.
    """
    paths = moto_glacier_urls.url_paths
    for pattern in list(paths):
        paths[pattern] = EmulatorResponse.dispatch
    for pattern in _EXTRA_PATHS:
        paths[pattern] = EmulatorResponse.dispatch
