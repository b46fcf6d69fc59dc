"""Deleting archives: the one way glacierfs removes anything from Glacier.

An archive is written down as deleted before DeleteArchive is sent, because
inventories lag the vault by a day or more and would otherwise bring it back;
if Glacier keeps it after all (a vault lock, an outage), the note goes again
so the next inventory shows it.
"""

from __future__ import annotations

import logging

from glacierfs import errors
from glacierfs.catalog import Catalog, Entry
from glacierfs.glacier import GlacierClient

log = logging.getLogger(__name__)


class Deletions:
    def __init__(self, glacier: GlacierClient, catalog: Catalog, keep_replaced: bool) -> None:
        self.glacier = glacier
        self.catalog = catalog
        self.keep_replaced = keep_replaced

    def delete(self, vault: str, archive_id: str) -> None:
        self.catalog.record_deleted(vault, archive_id)
        try:
            self.glacier.delete_archive(vault, archive_id)
        except errors.NotFound:
            pass
        except errors.GlacierFSError:
            # Still in the vault: the next inventory must list it again, not hide it.
            self.catalog.forget_deleted(vault, archive_id)
            raise

    def retire(self, vault: str, archive_id: str | None, path: str) -> None:
        """Delete the archive of a file that was replaced, unless told to keep
        it; a failure is logged, and the archive comes back with an inventory."""
        if not archive_id:
            return
        if self.keep_replaced:
            log.info("kept archive %s of replaced %s/%s", archive_id[:16], vault, path)
            return
        try:
            self.delete(vault, archive_id)
            log.info("deleted archive %s of replaced %s/%s", archive_id[:16], vault, path)
        except errors.GlacierFSError as error:
            log.error(
                "could not delete archive %s of replaced %s/%s; it stays in the vault: %s",
                archive_id,
                vault,
                path,
                error,
            )

    def retire_entry(self, entry: Entry) -> None:
        self.retire(entry.vault, entry.archive_id, entry.path)
