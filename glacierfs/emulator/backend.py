"""Glacier's rules on top of moto's Glacier backend: the areas, composed and registered.

Stock moto keeps archives in memory, names them md5(body), reports a plain
SHA-256 as the tree hash, has no multipart upload and ignores ranges. The
subclass here keeps moto's plumbing (BackendDict, account and region routing)
and takes the behaviour from one layer per API area, each following the Glacier
API reference: vaults, archives, multipart uploads, job outputs, jobs, tags,
a vault's documents (notifications, access policy), vault lock, the data
retrieval policy and provisioned capacity. A new area is a new layer and one
more base here.
"""

from __future__ import annotations

import shutil

from moto.core.base_backend import BackendDict

from .documents import VaultDocumentsBackend
from .jobs import JobsBackend
from .knobs import EmulatorSettings, calls, settings
from .lock import VaultLockBackend
from .multipart import MultipartBackend
from .store import TABLES, close_store, current_store, open_store
from .tags import TagsBackend

# The knobs and the store handle are re-exported so older imports from here keep working.
__all__ = [
    "EmulatedGlacierBackend",
    "EmulatorSettings",
    "calls",
    "close_store",
    "emulated_backends",
    "open_store",
    "reset",
    "settings",
]


class EmulatedGlacierBackend(MultipartBackend, JobsBackend, VaultLockBackend, TagsBackend, VaultDocumentsBackend):
    """One account's Glacier in one region, backed by the shared Store."""


emulated_backends = BackendDict(EmulatedGlacierBackend, "glacier")


def reset() -> None:
    """Forget every vault: used between tests sharing one emulator."""
    calls.clear()
    store = current_store()
    with store.transaction() as db:
        for table in TABLES:
            db.execute(f"DELETE FROM {table}")
    for sub in ("archives", "uploads", "jobs"):
        shutil.rmtree(store.root / sub, ignore_errors=True)
        (store.root / sub).mkdir()
