"""Restoring a vault's tree from its newest manifest: what a fresh catalog needs.

Apart from manifest.py, which writes and reads manifests, because restoring
one needs the retriever (a job, and the cache): the inventory's poller calls
``ManifestRestorer`` through a hook and imports neither.
"""

from __future__ import annotations

import logging

from glacierfs import errors, manifest
from glacierfs.catalog import Catalog
from glacierfs.retrieval import Retriever

log = logging.getLogger(__name__)


class ManifestRestorer:
    """Applies a vault's newest manifest, unless this catalog wrote or applied it:
    what a fresh catalog needs to show the tree again. The manifest is small, and
    retrieving it is the one job started without a reader asking."""

    def __init__(self, catalog: Catalog, retriever: Retriever) -> None:
        self.catalog = catalog
        self.retriever = retriever

    def __call__(self, vault: str) -> None:
        manifests = self.catalog.manifests(vault)
        if not manifests or manifests[-1].applied:
            return
        newest = manifests[-1]
        target = self.retriever.whole(vault, newest.archive_id, newest.size, newest.tree_hash)
        cached = self.retriever.open_cached(target)
        if cached is None:
            try:
                self.retriever.request(target, explicit=True)  # small, and needed to show the tree
            except errors.GlacierFSError as error:
                log.warning("could not retrieve the manifest of vault %s: %s", vault, error)
            return
        with cached:
            data = cached.read()
        try:
            changed = manifest.apply(self.catalog, vault, manifest.decode(data))
        except errors.GlacierFSError as error:
            log.error("the manifest %s of vault %s is unusable: %s", newest.archive_id[:16], vault, error)
            changed = 0
        self.catalog.mark_manifest_applied(newest.archive_id)
        log.info("restored vault %s from its manifest %s (%d change(s))", vault, newest.archive_id[:16], changed)
