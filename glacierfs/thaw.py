"""`glacierfs retrieve` of a large tree, paced as `glacierfs export` is:
``--max-bytes-per-day`` and ``--max-jobs-per-hour`` spread the jobs, counted
with everything the account started lately (spending.py: the mount's jobs and
exports'), and a refusal by the account's data retrieval policy, or a lack of
Expedited capacity, holds new jobs for a while instead of failing them. A
progress line says how far it got and when the next job may start.

The jobs themselves are the mount's: each is asked for through the mount's
``user.glacier.retrieve``, which records the job in the catalog before it
answers, so the next look at the catalog counts it."""

from __future__ import annotations

import errno
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from glacierfs import errors
from glacierfs.control import Attr
from glacierfs.exportstate import MountCatalog
from glacierfs.pacing import Pacer
from glacierfs.spending import exports_started, spent

log = logging.getLogger(__name__)

# Errors of a retrieve that mean "not now": the account's policy, Glacier's capacity.
NOT_NOW = (errno.EDQUOT, errno.EAGAIN)


def pacer_for(
    root: Path, max_bytes_per_day: int | None, max_jobs_per_hour: int | None
) -> tuple[Pacer, MountCatalog | None]:
    """A pacer over the account's recent jobs, as the mount at ``root`` and its
    exports recorded them (and the catalog it reads, to close)."""
    try:
        catalog_path = Path(json.loads(os.getxattr(root, Attr.SOURCE))["catalog"])
        catalog = MountCatalog(catalog_path)
    except (OSError, ValueError, KeyError, errors.NotFound) as error:
        if max_bytes_per_day is None and max_jobs_per_hour is None:
            return Pacer(lambda since: []), None  # nothing to pace by: only policy refusals hold jobs back
        raise errors.InvalidRequest(
            f"the mount at {root} does not tell where its catalog is ({error}); remount it to pace retrievals"
        ) from error

    def history(since: float) -> list[tuple[float, int]]:
        return spent(catalog.jobs_since(since), exports_started(catalog_path, since))

    return Pacer(history, max_bytes_per_day, max_jobs_per_hour), catalog


def retrieve_paced(
    paths: list[Path],
    tier: str,
    pacer: Pacer,
    size_text: Callable[[float], str] = str,
    stream: TextIO = sys.stderr,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Ask the mount to retrieve each of ``paths`` as the pacer allows; the
    number that failed. ``size_text`` writes sizes on the progress line."""
    total = sum(path.stat().st_size for path in paths)
    done = failed = 0
    done_bytes = 0
    shown = 0.0
    tty = stream.isatty()

    def show(note: str, force: bool = False) -> None:
        nonlocal shown
        if not tty:
            if note:  # a line a log or cron mail keeps
                print(f"requested {done}/{len(paths)}{note}", file=stream, flush=True)
            return
        if not force and time.monotonic() - shown < 0.5:
            return
        shown = time.monotonic()
        fraction = done_bytes / total if total else 1.0
        line = (
            f"[{'#' * int(fraction * 20):<20}] requested {done}/{len(paths)}, "
            f"{size_text(done_bytes)}/{size_text(total)}, failed {failed}{note}"
        )
        print(f"\r{line}  ", end="", file=stream, flush=True)

    for path in paths:
        size = path.stat().st_size
        while True:
            wait = pacer.when(size) - pacer.clock()
            if wait > 0:
                show(f", paced: the next job in {wait:.0f} s", force=True)
                log.info("paced: the next retrieval job may start in %.0f s", wait)
                sleep(min(wait, 60.0))
                continue
            try:
                os.setxattr(path, Attr.RETRIEVE, tier.encode())
            except OSError as error:
                if error.errno in NOT_NOW:
                    pacer.refused(f"{path}: {error.strerror}")
                    continue
                failed += 1
                print(f"\nglacierfs: {path}: {error.strerror}", file=stream)
                break
            pacer.accepted()
            done += 1
            done_bytes += size
            show("")
            break
    show("", force=True)
    if tty:
        print(file=stream)
    return failed
