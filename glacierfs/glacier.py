"""The one module that talks to boto3.

Typed results, hidden pagination, botocore's own retry modes, and the
project's exceptions instead of botocore's. Upload calls hand botocore the
hashes the caller already computed, so no body is hashed twice.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO, ParamSpec, TypeVar

import boto3
import botocore.exceptions
from botocore.config import Config
from botocore.handlers import add_glacier_checksums

from glacierfs import errors, timestamps
from glacierfs.reachability import Reachability
from glacierfs.records import (
    Archive,
    CapacityUnit,
    Job,
    JobOutput,
    PendingUpload,
    RetrievalPolicy,
    Vault,
    VaultLock,
    VaultNotifications,
)
from glacierfs.treehash import part_hashes

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

_LINEAR_HASH_KEY = "glacierfs_linear_sha256"


# Error code -> project exception. Codes not listed become ServiceUnavailable
# for server-side (5xx) errors and InvalidRequest otherwise.
_ERRORS: dict[str, type[errors.GlacierFSError]] = {
    "ResourceNotFoundException": errors.NotFound,
    "InvalidParameterValueException": errors.InvalidRequest,
    "MissingParameterValueException": errors.InvalidRequest,
    "LimitExceededException": errors.LimitExceeded,
    "PolicyEnforcedException": errors.RetrievalPolicyRefused,
    "InsufficientCapacityException": errors.InsufficientCapacity,
    "ServiceUnavailableException": errors.ServiceUnavailable,
    "ThrottlingException": errors.ServiceUnavailable,
    "RequestTimeoutException": errors.ServiceUnavailable,
    "AccessDeniedException": errors.AccessDenied,
    "UnrecognizedClientException": errors.AccessDenied,
    "InvalidSignatureException": errors.AccessDenied,
    "SignatureDoesNotMatch": errors.AccessDenied,
    "ExpiredTokenException": errors.AccessDenied,
    "NoLongerSupportedException": errors.AccessDenied,
}
# Glacier reuses InvalidParameterValueException for these; the message tells them apart.
_MESSAGES: list[tuple[str, type[errors.GlacierFSError]]] = [
    ("not currently available for download", errors.JobNotReady),
    ("Checksum mismatch", errors.ChecksumMismatch),
    ("not empty", errors.NotEmpty),
]


def _translate(error: Exception) -> errors.GlacierFSError:
    if isinstance(error, botocore.exceptions.ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        message = error.response.get("Error", {}).get("Message", "") or str(error)
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        for fragment, kind in _MESSAGES:
            if fragment.lower() in message.lower():
                return kind(message)
        kind = _ERRORS.get(code) or (errors.ServiceUnavailable if status >= 500 else errors.InvalidRequest)
        return kind(f"{code}: {message}")
    if isinstance(error, botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError):
        return errors.AccessDenied(f"no usable AWS credentials: {error}")
    if isinstance(error, botocore.exceptions.ProfileNotFound):
        return errors.AccessDenied(str(error))
    if isinstance(error, botocore.exceptions.ParamValidationError):
        return errors.InvalidRequest(str(error))
    if isinstance(error, botocore.exceptions.ConnectionError | botocore.exceptions.HTTPClientError):
        return errors.Unreachable(f"Glacier endpoint unreachable: {error}")
    return errors.ServiceUnavailable(f"Glacier endpoint failed: {error}")


def _noted(client: object, outcome: errors.GlacierFSError | None) -> None:
    """Tell the client's Reachability what a call found."""
    reachability = getattr(client, "reachability", None)
    if reachability is None:
        return
    if isinstance(outcome, errors.Unreachable):
        reachability.unreachable(outcome)
    else:
        reachability.answered()


def _service_call(method: Callable[P, R]) -> Callable[P, R]:
    """Run a call and hand upper layers only the project's exceptions."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            result = method(*args, **kwargs)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            translated = _translate(error)
            _noted(args[0], translated)
            log.debug("%s failed: %s", method.__name__, translated)
            raise translated from error
        _noted(args[0], None)
        return result

    return wrapper


def _paged(method: Callable[P, Iterator[R]]) -> Callable[P, Iterator[R]]:
    """Like _service_call, for generators: translate errors raised while iterating."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Iterator[R]:
        try:
            yield from method(*args, **kwargs)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            translated = _translate(error)
            _noted(args[0], translated)
            raise translated from error
        _noted(args[0], None)

    return wrapper


class GlacierClient:
    """Glacier for one region and account, as the rest of glacierfs sees it."""

    def __init__(
        self,
        endpoint_url: str | None = None,
        region: str | None = None,
        profile: str | None = None,
        max_attempts: int = 5,
        retry_mode: str = "standard",
        max_connections: int = 16,
        connect_timeout: float = 10,
        read_timeout: float = 120,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        """``credentials`` (key id, secret) override the standard AWS chain; the
        embedded emulator uses them, since it accepts any."""
        key_id, secret = credentials or (None, None)
        try:
            session = boto3.Session(
                profile_name=profile,
                region_name=region,
                aws_access_key_id=key_id,
                aws_secret_access_key=secret,
            )
        except botocore.exceptions.ProfileNotFound as error:
            raise errors.AccessDenied(str(error)) from error
        self.region = session.region_name or "us-east-1"
        self.endpoint_url = endpoint_url
        self.profile = profile
        self.reachability = Reachability(endpoint_url or f"AWS ({self.region})")
        self._session = session
        config = Config(
            retries={"mode": retry_mode, "total_max_attempts": max_attempts},
            max_pool_connections=max_connections,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        )
        self._client = session.client("glacier", region_name=self.region, endpoint_url=endpoint_url, config=config)
        events = self._client.meta.events
        for operation in ("UploadArchive", "UploadMultipartPart"):
            events.register(f"before-parameter-build.glacier.{operation}", _stash_linear_hash)
            events.register_first(f"before-call.glacier.{operation}", _send_linear_hash)
            # Ours sends both hashes; botocore's would seek in the body, which a
            # bytearray part (no copy) cannot do.
            events.unregister(f"before-call.glacier.{operation}", add_glacier_checksums)
        events.register_first("needs-retry.glacier.InitiateJob", _no_retry_without_capacity)

    # Who ------------------------------------------------------------------

    def account(self, vaults: Iterable[Vault] = ()) -> str:
        """The account these credentials act for, so that two accounts behind one
        endpoint never share a catalog: from a vault's ARN when there is one, else
        from STS GetCallerIdentity (asked at the same endpoint when one is given),
        else ``key-`` and a digest of the access key id."""
        for vault in vaults:
            if vault.account:
                return vault.account
        try:
            return self._caller_account()
        except errors.GlacierFSError as error:
            log.debug("STS GetCallerIdentity failed: %s", error)
        credentials = self._session.get_credentials()
        key_id = credentials.access_key if credentials is not None else ""
        label = "key-" + hashlib.sha256(key_id.encode()).hexdigest()[:12]
        log.warning(
            "no vault and no answer from STS tell which account these credentials belong to; "
            "the catalog is keyed by the access key instead (%s)",
            label,
        )
        return label

    @_service_call
    def _caller_account(self) -> str:
        sts = self._session.client(
            "sts",
            region_name=self.region,
            endpoint_url=self.endpoint_url,
            config=Config(retries={"mode": "standard", "total_max_attempts": 2}, connect_timeout=5, read_timeout=30),
        )
        return str(sts.get_caller_identity()["Account"])

    # Vaults ---------------------------------------------------------------

    @_paged
    def list_vaults(self) -> Iterator[Vault]:
        for page in self._client.get_paginator("list_vaults").paginate():
            for raw in page.get("VaultList", []):
                yield _vault(raw)

    @_service_call
    def describe_vault(self, name: str) -> Vault:
        return _vault(self._client.describe_vault(vaultName=name))

    @_service_call
    def create_vault(self, name: str) -> None:
        self._client.create_vault(vaultName=name)

    @_service_call
    def delete_vault(self, name: str) -> None:
        self._client.delete_vault(vaultName=name)

    # Archives -------------------------------------------------------------

    @_service_call
    def upload_archive(
        self,
        vault: str,
        body: bytes | bytearray | BinaryIO,
        description: str = "",
        hashes: tuple[str, str] | None = None,
    ) -> Archive:
        """Upload in one request. ``hashes`` is (linear, tree) if already known;
        a file as the body (the spool's) must come with them, and is streamed."""
        if hashes is None:
            if not isinstance(body, bytes | bytearray):
                raise TypeError("a streamed body needs its hashes")
            hashes = part_hashes(body)
        linear, tree = hashes
        response = self._client.upload_archive(
            vaultName=vault,
            archiveDescription=description,
            body=body,
            checksum=tree,
            **{_LINEAR_HASH_KEY: linear},
        )
        return Archive(response["archiveId"], response["checksum"])

    @_service_call
    def delete_archive(self, vault: str, archive_id: str) -> None:
        self._client.delete_archive(vaultName=vault, archiveId=archive_id)

    # Multipart upload -----------------------------------------------------

    @_service_call
    def initiate_multipart(self, vault: str, part_size: int, description: str = "") -> str:
        response = self._client.initiate_multipart_upload(
            vaultName=vault, partSize=str(part_size), archiveDescription=description
        )
        return response["uploadId"]

    @_service_call
    def upload_part(
        self,
        vault: str,
        upload_id: str,
        offset: int,
        body: bytes | bytearray,
        hashes: tuple[str, str] | None = None,
    ) -> str:
        linear, tree = hashes or part_hashes(body)
        self._client.upload_multipart_part(
            vaultName=vault,
            uploadId=upload_id,
            range=f"bytes {offset}-{offset + len(body) - 1}/*",
            body=body,
            checksum=tree,
            **{_LINEAR_HASH_KEY: linear},
        )
        return tree

    @_service_call
    def complete_multipart(self, vault: str, upload_id: str, size: int, tree_hash: str) -> Archive:
        response = self._client.complete_multipart_upload(
            vaultName=vault, uploadId=upload_id, archiveSize=str(size), checksum=tree_hash
        )
        return Archive(response["archiveId"], response["checksum"])

    @_service_call
    def abort_multipart(self, vault: str, upload_id: str) -> None:
        self._client.abort_multipart_upload(vaultName=vault, uploadId=upload_id)

    @_paged
    def list_multipart_uploads(self, vault: str) -> Iterator[PendingUpload]:
        for page in self._client.get_paginator("list_multipart_uploads").paginate(vaultName=vault):
            for raw in page.get("UploadsList", []):
                created = timestamps.parse_iso(str(raw.get("CreationDate") or "")) or 0.0
                yield PendingUpload(raw["MultipartUploadId"], raw.get("ArchiveDescription") or "", created)

    # Jobs -----------------------------------------------------------------

    @_service_call
    def initiate_archive_retrieval(
        self,
        vault: str,
        archive_id: str,
        tier: str = "Standard",
        byte_range: tuple[int, int] | None = None,
        description: str | None = None,
    ) -> str:
        """Start a retrieval; ``byte_range`` is inclusive and must be MiB aligned."""
        params: dict[str, Any] = {"Type": "archive-retrieval", "ArchiveId": archive_id, "Tier": tier}
        if byte_range is not None:
            params["RetrievalByteRange"] = f"{byte_range[0]}-{byte_range[1]}"
        if description:
            params["Description"] = description
        return self._client.initiate_job(vaultName=vault, jobParameters=params)["jobId"]

    @_service_call
    def initiate_inventory_retrieval(self, vault: str, output_format: str = "JSON") -> str:
        params = {"Type": "inventory-retrieval", "Format": output_format}
        return self._client.initiate_job(vaultName=vault, jobParameters=params)["jobId"]

    @_service_call
    def describe_job(self, vault: str, job_id: str) -> Job:
        return Job.from_response(self._client.describe_job(vaultName=vault, jobId=job_id))

    @_paged
    def list_jobs(self, vault: str, completed: bool | None = None, status: str | None = None) -> Iterator[Job]:
        params: dict[str, Any] = {"vaultName": vault}
        if completed is not None:
            params["completed"] = "true" if completed else "false"
        if status:
            params["statuscode"] = status
        for page in self._client.get_paginator("list_jobs").paginate(**params):
            for raw in page.get("JobList", []):
                yield Job.from_response(raw)

    @_service_call
    def get_job_output(self, vault: str, job_id: str, byte_range: tuple[int, int] | None = None) -> JobOutput:
        """Download job output, or the inclusive ``byte_range`` of it."""
        params: dict[str, Any] = {"vaultName": vault, "jobId": job_id}
        if byte_range is not None:
            params["range"] = f"bytes={byte_range[0]}-{byte_range[1]}"
        response = self._client.get_job_output(**params)
        with response["body"] as stream:
            body = stream.read()
        return JobOutput(
            body=body,
            tree_hash=response.get("checksum"),
            content_range=response.get("contentRange"),
            description=response.get("archiveDescription"),
        )

    # A vault's own settings -------------------------------------------------

    @_service_call
    def list_vault_tags(self, vault: str) -> dict[str, str]:
        return dict(self._client.list_tags_for_vault(vaultName=vault).get("Tags") or {})

    @_service_call
    def add_vault_tags(self, vault: str, tags: dict[str, str]) -> None:
        """Adds or overwrites; LimitExceeded past the vault's 50 tags."""
        self._client.add_tags_to_vault(vaultName=vault, Tags=tags)

    @_service_call
    def remove_vault_tags(self, vault: str, keys: list[str]) -> None:
        self._client.remove_tags_from_vault(vaultName=vault, TagKeys=keys)

    @_service_call
    def get_vault_notifications(self, vault: str) -> VaultNotifications | None:
        """None when none are set (the service answers that with a 404)."""
        try:
            raw = self._client.get_vault_notifications(vaultName=vault)["vaultNotificationConfig"]
        except botocore.exceptions.ClientError as error:
            if _code_of(error.response) == "ResourceNotFoundException":
                return None
            raise
        return VaultNotifications(topic=raw.get("SNSTopic", ""), events=tuple(raw.get("Events") or ()))

    @_service_call
    def set_vault_notifications(self, vault: str, notifications: VaultNotifications) -> None:
        config = {"SNSTopic": notifications.topic, "Events": list(notifications.events)}
        self._client.set_vault_notifications(vaultName=vault, vaultNotificationConfig=config)

    @_service_call
    def delete_vault_notifications(self, vault: str) -> None:
        self._client.delete_vault_notifications(vaultName=vault)

    @_service_call
    def get_vault_access_policy(self, vault: str) -> str | None:
        """The policy document as Glacier keeps it; None when the vault has none."""
        try:
            return str(self._client.get_vault_access_policy(vaultName=vault)["policy"]["Policy"])
        except botocore.exceptions.ClientError as error:
            if _code_of(error.response) == "ResourceNotFoundException":
                return None
            raise

    @_service_call
    def set_vault_access_policy(self, vault: str, policy: str) -> None:
        self._client.set_vault_access_policy(vaultName=vault, policy={"Policy": policy})

    @_service_call
    def delete_vault_access_policy(self, vault: str) -> None:
        self._client.delete_vault_access_policy(vaultName=vault)

    @_service_call
    def get_vault_lock(self, vault: str) -> VaultLock | None:
        """None when the vault has no lock (or an in-progress one lapsed)."""
        try:
            raw = self._client.get_vault_lock(vaultName=vault)
        except botocore.exceptions.ClientError as error:
            if _code_of(error.response) == "ResourceNotFoundException":
                return None
            raise
        return VaultLock(
            state=raw.get("State", ""),
            policy=raw.get("Policy", ""),
            created=raw.get("CreationDate", ""),
            expires=raw.get("ExpirationDate"),
        )

    # The account's retrieval limits -----------------------------------------

    @_service_call
    def get_data_retrieval_policy(self) -> RetrievalPolicy:
        rules = self._client.get_data_retrieval_policy().get("Policy", {}).get("Rules") or [{}]
        return RetrievalPolicy(strategy=rules[0].get("Strategy", "None"), bytes_per_hour=rules[0].get("BytesPerHour"))

    @_service_call
    def list_provisioned_capacity(self) -> list[CapacityUnit]:
        return [
            CapacityUnit(capacity_id=raw["CapacityId"], start=raw.get("StartDate", ""), expires=raw["ExpirationDate"])
            for raw in self._client.list_provisioned_capacity().get("ProvisionedCapacityList", [])
        ]


def _no_retry_without_capacity(response: Any = None, **_: Any) -> None:
    """InsufficientCapacityException is a 503, which botocore's retry modes
    retry; but capacity does not come back within their backoff, and the
    caller falls back to another tier. Raised here, before the retry handler
    (registered for the whole service, so asked later) can answer, it ends the
    call at its first attempt."""
    if response is None:
        return
    parsed = response[1]
    if _code_of(parsed) == "InsufficientCapacityException":
        raise botocore.exceptions.ClientError(parsed, "InitiateJob")


def _code_of(parsed: dict[str, Any]) -> str:
    return str(parsed.get("Error", {}).get("Code", ""))


def _vault(raw: dict[str, Any]) -> Vault:
    return Vault(
        name=raw["VaultName"],
        created=raw.get("CreationDate", ""),
        archive_count=raw.get("NumberOfArchives"),
        size=raw.get("SizeInBytes"),
        arn=raw.get("VaultARN", ""),
        last_inventory=raw.get("LastInventoryDate"),
    )


def _stash_linear_hash(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    """Move our extra parameter out of the API params before botocore validates them."""
    linear = params.pop(_LINEAR_HASH_KEY, None)
    if linear:
        context[_LINEAR_HASH_KEY] = linear


def _send_linear_hash(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    """Set x-amz-content-sha256, so botocore neither hashes the body nor signs it
    again. Every upload passes its hashes (the tree hash as ``checksum``)."""
    params["headers"]["x-amz-content-sha256"] = context[_LINEAR_HASH_KEY]


# S3, for `glacierfs export` to s3://BUCKET/PREFIX: here, so that this stays the one boto3 module.
_S3_ERRORS: dict[str, type[errors.GlacierFSError]] = {
    "NoSuchBucket": errors.NotFound,
    "NoSuchKey": errors.NotFound,
    "NoSuchUpload": errors.NotFound,
    "404": errors.NotFound,
    "NotFound": errors.NotFound,
    "AccessDenied": errors.AccessDenied,
    "403": errors.AccessDenied,
    "InvalidAccessKeyId": errors.AccessDenied,
    "SignatureDoesNotMatch": errors.AccessDenied,
    "KeyTooLongError": errors.NameTooLong,
    "EntityTooSmall": errors.InvalidRequest,
}


def _s3_call(method: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except botocore.exceptions.ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            raise _S3_ERRORS.get(code, errors.ServiceUnavailable)(f"S3: {error}") from error
        except botocore.exceptions.BotoCoreError as error:
            raise errors.Unreachable(f"S3: {error}") from error

    return wrapper


class S3Client:
    """The S3 calls an export makes. Endpoint and credentials come from the
    standard AWS chain (``AWS_ENDPOINT_URL_S3`` included) unless given."""

    def __init__(self, region: str | None = None, profile: str | None = None, max_attempts: int = 5) -> None:
        session = boto3.Session(profile_name=profile, region_name=region)
        config = Config(retries={"mode": "standard", "total_max_attempts": max_attempts}, max_pool_connections=16)
        self._client = session.client("s3", config=config)

    @_s3_call
    def check_bucket(self, bucket: str) -> None:
        self._client.head_bucket(Bucket=bucket)

    @_s3_call
    def head(self, bucket: str, key: str) -> tuple[int, dict[str, str]] | None:
        """(size, user metadata) of an object, or None if there is none."""
        try:
            found = self._client.head_object(Bucket=bucket, Key=key)
        except botocore.exceptions.ClientError as error:
            if str(error.response.get("Error", {}).get("Code", "")) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return int(found["ContentLength"]), dict(found.get("Metadata", {}))

    @_s3_call
    def put(self, bucket: str, key: str, body: bytes, metadata: dict[str, str]) -> None:
        self._client.put_object(Bucket=bucket, Key=key, Body=body, Metadata=metadata)

    @_s3_call
    def start_upload(self, bucket: str, key: str, metadata: dict[str, str]) -> str:
        return str(self._client.create_multipart_upload(Bucket=bucket, Key=key, Metadata=metadata)["UploadId"])

    @_s3_call
    def upload_part(self, bucket: str, key: str, upload_id: str, number: int, body: bytes) -> str:
        return str(
            self._client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body)["ETag"]
        )

    @_s3_call
    def complete_upload(self, bucket: str, key: str, upload_id: str, etags: list[str]) -> None:
        parts = [{"ETag": etag, "PartNumber": number} for number, etag in enumerate(etags, 1)]
        self._client.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )

    @_s3_call
    def abort_upload(self, bucket: str, key: str, upload_id: str) -> None:
        self._client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)

    @_s3_call
    def uploads(self, bucket: str, key: str) -> list[str]:
        """Ids of unfinished multipart uploads of exactly ``key`` (a killed export's)."""
        found = self._client.list_multipart_uploads(Bucket=bucket, Prefix=key)
        return [upload["UploadId"] for upload in found.get("Uploads", []) if upload["Key"] == key]
