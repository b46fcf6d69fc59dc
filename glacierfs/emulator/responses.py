"""HTTP face of the emulator: moto's GlacierResponse, extended and made strict.

moto picks the handler method by the operation's name, so adding
``initiate_multipart_upload`` and friends here, and registering this class on
moto's glacier ``url_paths``, serves them under moto's server. The handlers of
the data plane (vaults, archives, uploads, jobs) are here; those of a vault's
and an account's configuration are in ``config_responses``.
"""

from __future__ import annotations

from moto.core.common_types import TYPE_RESPONSE
from moto.glacier import urls as moto_glacier_urls

from . import control
from .config_responses import ConfigResponses
from .rules import check_page


class EmulatorResponse(ConfigResponses):
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
        job_id = self.glacier_backend.initiate_job_checked(self._vault_name, self._body("job parameters"))
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


_ACCOUNT = r"{0}/(?P<account_number>[^/]+)"
_VAULT = _ACCOUNT + r"/vaults/(?P<vault_name>[^/]+)"
_EXTRA_PATHS = [
    _VAULT + r"/multipart-uploads$",
    _VAULT + r"/multipart-uploads/(?P<upload_id>[^/]+)$",
    _VAULT + r"/tags$",
    _VAULT + r"/notification-configuration$",
    _VAULT + r"/access-policy$",
    _VAULT + r"/lock-policy$",
    _VAULT + r"/lock-policy/(?P<lock_id>[^/]+)$",
    _ACCOUNT + r"/policies/data-retrieval$",
    _ACCOUNT + r"/provisioned-capacity$",
]


def install() -> None:
    """Point every moto glacier route at EmulatorResponse; add the routes moto lacks.

    Must run before the first request, since moto builds its URL map lazily.
    """
    paths = moto_glacier_urls.url_paths
    for pattern in list(paths):
        paths[pattern] = EmulatorResponse.dispatch
    for pattern in _EXTRA_PATHS:
        paths[pattern] = EmulatorResponse.dispatch
    control.install()
