"""``s3://BUCKET/PREFIX`` as an export's destination. An archive that fits one
chunk is one PutObject after verification; a larger one is a multipart upload
whose parts go as its chunks arrive, completed only once the whole tree hash
matched (aborted otherwise), so an unverified object never appears. The tree
hash and mtime travel in the object's metadata; an empty directory is a
zero-byte ``dir/`` marker, as S3 consoles show folders."""

from __future__ import annotations

import logging
import threading

from glacierfs import errors
from glacierfs.exportstate import Item
from glacierfs.glacier import S3Client
from glacierfs.localdest import ABSENT, DIFFERENT, SAME

log = logging.getLogger(__name__)

MAX_KEY_BYTES = 1024
TREE_HASH_KEY = "glacier-tree-hash"
# S3 refuses parts under 5 MiB but the last: chunks (the parts) must be at least this.
MIN_CHUNK = 8 << 20


def parse_s3_url(url: str) -> tuple[str, str]:
    """(bucket, prefix without slashes at its ends) of ``s3://BUCKET/PREFIX``."""
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    if not bucket:
        raise errors.InvalidRequest(f"{url} names no bucket: s3://BUCKET/PREFIX")
    return bucket, prefix.strip("/")


def _metadata(item: Item) -> dict[str, str]:
    values = {"mtime": f"{item.mtime_ns / 1e9:.9f}", "mode": f"{item.mode & 0o7777:o}"}
    if item.tree_hash:
        values[TREE_HASH_KEY] = item.tree_hash
    return values


class S3Destination:
    def __init__(self, s3: S3Client, url: str, chunk_size: int = MIN_CHUNK) -> None:
        self.s3 = s3
        self.chunk_size = chunk_size  # each part is one chunk; a chunk's offset gives its number
        self.bucket, self.prefix = parse_s3_url(url)
        self.label = f"s3://{self.bucket}/{self.prefix}"
        try:
            s3.check_bucket(self.bucket)
        except errors.NotFound as error:
            raise errors.NotFound(f"the bucket {self.bucket} does not exist (or is not this account's)") from error
        except errors.AccessDenied as error:
            raise errors.AccessDenied(f"access to the bucket {self.bucket} is denied: {error}") from error

    def key(self, rel: str) -> str:
        key = f"{self.prefix}/{rel}" if self.prefix else rel
        if len(key.encode()) > MAX_KEY_BYTES:
            raise errors.NameTooLong(f"the S3 key for {rel} would be {len(key.encode())} bytes; S3 allows 1,024")
        return key

    def compare(self, rel: str, item: Item) -> str:
        if item.is_dir:
            return SAME if self.s3.head(self.bucket, self.key(rel) + "/") is not None else ABSENT
        found = self.s3.head(self.bucket, self.key(rel))
        if found is None:
            return ABSENT
        size, metadata = found
        if size == item.size and (item.size == 0 or metadata.get(TREE_HASH_KEY) == item.tree_hash):
            return SAME
        return DIFFERENT

    def still_there(self, rel: str, item: Item) -> bool:
        return self.compare(rel, item) == SAME  # one HEAD: the tree hash is in the metadata

    def make_dir(self, rel: str) -> None:
        """Directories appear as markers once their times are known (set_dir_times)."""

    def set_dir_times(self, rel: str, item: Item) -> None:
        if rel:
            self.s3.put(self.bucket, self.key(rel) + "/", b"", _metadata(item))

    def partial_tree_hash(self, rel: str, first: int, last: int) -> str | None:
        """An upload is not resumed: a large archive's ranges come again (from the same jobs)."""
        return None

    def begin(self, rel: str, item: Item, resume: bool = False) -> S3Sink:
        key = self.key(rel)
        for upload_id in self.s3.uploads(self.bucket, key):  # left by a killed export
            self.s3.abort_upload(self.bucket, key, upload_id)
            log.info("aborted an unfinished upload of s3://%s/%s", self.bucket, key)
        return S3Sink(self.s3, self.bucket, key, item, self.chunk_size)

    def empty_file(self, rel: str, item: Item) -> None:
        self.s3.put(self.bucket, self.key(rel), b"", _metadata(item))


class S3Sink:
    def __init__(self, s3: S3Client, bucket: str, key: str, item: Item, chunk_size: int) -> None:
        self.s3, self.bucket, self.key, self.item, self.chunk_size = s3, bucket, key, item, chunk_size
        self._single: bytes | None = None
        self._upload_id: str | None = None
        self._etags: dict[int, str] = {}  # part number -> ETag
        self._lock = threading.Lock()  # a large archive's ranges arrive at once, from several threads

    def write(self, data: bytes, offset: int) -> None:
        """A chunk, at any offset; one that is the whole archive is kept back for one PutObject."""
        if offset == 0 and len(data) == self.item.size:
            self._single = data
            return
        with self._lock:
            if self._upload_id is None:
                self._upload_id = self.s3.start_upload(self.bucket, self.key, _metadata(self.item))
        number = offset // self.chunk_size + 1
        etag = self.s3.upload_part(self.bucket, self.key, self._upload_id, number, data)
        with self._lock:
            self._etags[number] = etag

    def commit(self) -> None:
        if self._single is not None:
            self.s3.put(self.bucket, self.key, self._single, _metadata(self.item))
        elif self._upload_id is not None:
            etags = [self._etags[number] for number in sorted(self._etags)]
            self.s3.complete_upload(self.bucket, self.key, self._upload_id, etags)

    def abort(self) -> None:
        if self._upload_id is not None:
            try:
                self.s3.abort_upload(self.bucket, self.key, self._upload_id)
            except errors.GlacierFSError as error:
                log.warning("could not abort the upload of s3://%s/%s: %s", self.bucket, self.key, error)

    def keep(self) -> None:
        self.abort()  # S3 keeps no partial object; the ranges come again from their jobs
