"""Wiring: the mount's parts built from its options, with every start and
stop owned by one ExitStack. The command line (cli.py) and the fs-level tests
build a mount the same way, here.

Stops run in reverse: open files are closed or aborted first (vfs), then the
write-back queue stops (what is left stays in the spool), then the janitor's
last sweep, the manifests still due, inventories, and retrievals.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from glacierfs.cache import ContentCache
from glacierfs.catalog import Catalog
from glacierfs.control import Control
from glacierfs.glacier import GlacierClient
from glacierfs.inventory import Inventories
from glacierfs.manifest import ManifestKeeper
from glacierfs.options import MountOptions
from glacierfs.outcomes import Janitor
from glacierfs.restore import ManifestRestorer
from glacierfs.retrieval import Retriever
from glacierfs.spool import Spool
from glacierfs.vfs import GlacierFS


@dataclass(frozen=True)
class Assembly:
    vfs: GlacierFS
    control: Control
    retriever: Retriever
    inventories: Inventories
    manifests: ManifestKeeper
    janitor: Janitor


def spool_dir(catalog: Catalog, options: MountOptions) -> Path:
    """One spool per catalog (an account and region), beside it unless --spool-dir says where."""
    key = catalog.path.stem.removeprefix("catalog-")
    return (options.spool_dir or catalog.path.parent) / f"spool-{key}"


def assemble(
    stack: ExitStack, glacier: GlacierClient, catalog: Catalog, cache: ContentCache, options: MountOptions
) -> Assembly:
    retriever = Retriever(
        glacier,
        catalog,
        cache,
        tier=options.tier,
        poll_interval=options.poll_interval,
        max_bytes=options.max_retrieval_bytes,
        max_jobs=options.max_retrieval_jobs,
        concurrency=max(1, options.concurrency),
        range_size=options.range_size,
        ranged_threshold=options.ranged_threshold,
        tier_fallback=options.tier_fallback,
    )
    inventories = Inventories(
        glacier,
        catalog,
        catalog.path.parent,  # the state directory: a download there is resumed by the next mount
        max_age=options.inventory_max_age,
        poll_interval=retriever.poll_interval,
        restore_manifest=ManifestRestorer(catalog, retriever),
    )
    manifests = ManifestKeeper(glacier, catalog, delay=options.manifest_delay)
    vfs = GlacierFS(glacier, catalog, options, retriever, inventories, manifests, Spool(spool_dir(catalog, options)))
    janitor = Janitor(
        glacier, catalog, vfs.outcomes, vfs.open_files, vfs.queue, vfs.part_buffers, options.cleanup_interval
    )
    control = Control(vfs, vfs.open_files, vfs.outcomes, retriever, inventories, catalog)
    # The queue stops before the janitor's last sweep, which aborts any multipart
    # upload the queue gave up.
    for part in (retriever, inventories, manifests, janitor, vfs.queue):
        part.start()
        stack.callback(part.stop)
    stack.callback(vfs.close)
    return Assembly(vfs, control, retriever, inventories, manifests, janitor)
