"""`glacierfs export SOURCE DEST`: get a vault (or a directory of it) out of
Glacier into a local directory, verified, paced and resumable, without going
through the mount's cache or reading files through the mount (an open() there
would start retrievals of its own). The mount only tells where its catalog is
and which Glacier it talks to (``user.glacier.source`` on its root); the
export reads the catalog read-only and keeps its own state beside it
(exportstate.py). The engine is exporter.py."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from glacierfs import client, errors
from glacierfs.client import human_size
from glacierfs.control import Attr
from glacierfs.exportstate import progress_line
from glacierfs.options import parse_size

if TYPE_CHECKING:
    from glacierfs.exporter import Totals

log = logging.getLogger(__name__)

EXIT_FAILED = 1
EXIT_STOPPED = 3  # stopped early (full destination, or --no-wait): rerun to resume


def add_parser(commands: argparse._SubParsersAction) -> None:
    from glacierfs.records import TIERS

    parser = commands.add_parser(
        "export",
        help="copy a vault (or a directory of it) out of Glacier: verified, paced, resumable",
        description="Retrieve every archive under SOURCE (a vault or directory in a running mount) with one job "
        "each, verify it against its tree hash, and write it under DEST with its mtime and mode. "
        "A rerun resumes and reuses jobs whose output is still downloadable.",
    )
    parser.add_argument("source", type=Path, metavar="SOURCE")
    parser.add_argument("dest", metavar="DEST", help="a local directory, or s3://BUCKET/PREFIX")
    parser.add_argument("--tier", choices=TIERS, default="Bulk", help="retrieval tier (default: Bulk, 5-12 hours)")
    parser.add_argument("--yes", action="store_true", help="start without asking")
    parser.add_argument("--overwrite", action="store_true", help="replace DEST files that hold other content")
    parser.add_argument("--max-bytes-per-day", type=parse_size, help="start jobs for at most this many bytes a day")
    parser.add_argument("--max-jobs-per-hour", type=int, help="start at most this many jobs an hour")
    parser.add_argument(
        "--no-wait",
        action="store_true",
        help="start or reuse jobs, export what is ready, then exit (status 3) instead of waiting; rerun later",
    )
    parser.add_argument("--poll-interval", type=float, metavar="SECONDS", help="default: by tier, as the mount's")
    parser.add_argument("--concurrency", type=int, default=4, help="archives downloaded at once (default: 4)")
    parser.add_argument(
        "--chunk-size", type=parse_size, default=parse_size("16M"), help="download chunk, 1 MiB x 2^n (default: 16M)"
    )
    parser.add_argument(
        "--ranged-threshold",
        type=parse_size,
        default=parse_size("4G"),
        help="archives larger than this come in ranged jobs, downloaded at once (default: 4G)",
    )
    parser.add_argument(
        "--range-size",
        type=parse_size,
        default=parse_size("1G"),
        help="bytes per ranged job, 1 MiB x 2^n (default: 1G)",
    )
    parser.add_argument("--prices", type=Path, metavar="FILE", help="a JSON price table to estimate the cost with")
    parser.add_argument("--debug", action="store_true", help="log every step to stderr")
    parser.set_defaults(run=run_export)


def _source(path: Path) -> tuple[dict[str, str | None], str, str]:
    """The mount's source description, the vault, and the directory in it."""
    root = client.mount_root(path)
    if root is None:
        raise errors.InvalidRequest(f"{path} is not inside a running glacierfs mount")
    rel = path.absolute().relative_to(root).parts
    if not rel:
        raise errors.InvalidRequest(f"{path} is the mount's root: name a vault, or a directory in one")
    if not path.is_dir():
        raise errors.InvalidRequest(f"{path} is not a vault or a directory")
    try:
        source = json.loads(os.getxattr(root, Attr.SOURCE))
    except OSError as error:
        raise errors.InvalidRequest(
            f"the mount at {root} does not tell where its catalog is ({error.strerror}); "
            "remount it with this version of glacierfs"
        ) from error
    return source, rel[0], "/".join(rel[1:])


def _progress(stream: TextIO, report: Callable[[dict[str, Any]], None]) -> Callable[[Totals], None]:
    """The progress line on a terminal, and the figures `glacierfs status` reads, twice a second at most."""
    last = [0.0]
    tty = stream.isatty()

    def show(totals: Totals) -> None:
        now = time.monotonic()
        if now - last[0] < 0.5:
            return
        last[0] = now
        figures = totals.figures()
        report(figures)
        if tty:
            print(f"\r{progress_line(figures, human_size)}  ", end="", file=stream, flush=True)

    return show


def run_export(args: argparse.Namespace) -> int:
    try:
        return _export(args)
    except errors.GlacierFSError as error:
        print(f"glacierfs export: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("\nglacierfs export: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


def _export(args: argparse.Namespace) -> int:
    from glacierfs.exporter import Destination, Exporter, StopExport
    from glacierfs.exportstate import ExportState, MountCatalog
    from glacierfs.glacier import GlacierClient, S3Client
    from glacierfs.localdest import LocalDestination
    from glacierfs.pacing import Pacer
    from glacierfs.pricing import price_table
    from glacierfs.retrieval import DEFAULT_POLL
    from glacierfs.s3dest import MIN_CHUNK, S3Destination
    from glacierfs.spending import spent, state_path

    source, vault, prefix = _source(args.source)
    to_s3 = str(args.dest).startswith("s3://")
    dest_root = Path(args.dest).absolute()
    if not to_s3 and client.mount_root(dest_root) is not None:
        raise errors.InvalidRequest(f"{dest_root} is inside a glacierfs mount: export to a local directory or S3")
    if to_s3 and args.chunk_size < MIN_CHUNK:
        raise errors.InvalidRequest(f"to S3 the chunk size is at least {MIN_CHUNK >> 20} MiB (S3's smallest part)")
    prices = price_table(args.prices)
    catalog_path = Path(str(source["catalog"]))
    catalog = MountCatalog(catalog_path)
    state = ExportState(state_path(catalog_path))
    started = time.time()
    label = f"{vault}/{prefix}".rstrip("/")
    try:
        glacier = GlacierClient(source.get("endpoint"), source.get("region"), source.get("profile"))
        # The account's spending as the mount's cost guard counts it (spending.py): its jobs and the exports'.
        pacer = Pacer(
            lambda since: spent(catalog.jobs_since(since), state.jobs_since(since)),
            args.max_bytes_per_day,
            args.max_jobs_per_hour,
        )
        dest: Destination = LocalDestination(dest_root)
        if to_s3:
            dest = S3Destination(S3Client(source.get("region"), source.get("profile")), str(args.dest), args.chunk_size)
        exporter = Exporter(
            glacier,
            catalog,
            state,
            dest,
            args.tier,
            pacer,
            args.poll_interval if args.poll_interval is not None else DEFAULT_POLL[args.tier],
            concurrency=max(1, args.concurrency),
            chunk_size=args.chunk_size,
            overwrite=args.overwrite,
            ranged_threshold=args.ranged_threshold,
            range_size=args.range_size,
            progress=_progress(sys.stderr, lambda figures: state.report(dest.label, label, started, figures)),
        )
        work, local = exporter.plan(vault, prefix)
        listed = exporter.jobs_listed(vault)
        new = [w for w in work if exporter._pick(w, listed) is None]
        reusable = len(work) - len(new)
        new_bytes = sum(w.item.size for w in new)
        cost = prices.estimate(args.tier, len(new), new_bytes)
        totals = exporter.totals
        print(
            f"{label} -> {dest.label}: {totals.files} file(s), {human_size(totals.bytes)}; "
            f"{totals.files_done} already there. {len(work)} archive(s) to bring out: {reusable} from jobs "
            f"whose output is still downloadable, {len(new)} with new {args.tier} jobs ({human_size(new_bytes)}), "
            f"estimated ${cost:.2f} (prices of {prices.date}; --prices overrides)."
        )
        asked = bool(new and not args.yes)
        if asked:
            if not sys.stdin.isatty():
                print("glacierfs export: not confirmed (use --yes to start without asking)", file=sys.stderr)
                return EXIT_FAILED
            if input("Retrievals cost money. Start? [y/N] ").strip().lower() not in ("y", "yes"):
                print("Nothing started.")
                return EXIT_FAILED
        stopped = ""
        totals.bytes_at_start, totals.started = totals.bytes_done, time.monotonic()
        try:
            if not to_s3:
                dest_root.mkdir(parents=True, exist_ok=True)
            exporter.write_local(local)
            # Glacier's list as just read, unless a person took time to answer.
            exporter.run(vault, work, wait_for_jobs=not args.no_wait, listed=None if asked else listed)
            exporter.finish_dirs(local)
        except (StopExport, errors.NoSpace) as error:
            stopped = str(error)
        finally:
            state.finished(dest.label)
        if sys.stderr.isatty():
            print(file=sys.stderr)  # end the progress line
        return _summary(totals, stopped)
    finally:
        state.close()
        catalog.close()


def _summary(totals: Totals, stopped: str) -> int:
    print(
        f"{totals.files_done}/{totals.files} file(s) exported, {human_size(totals.bytes_done)}; "
        f"{totals.new_jobs} new job(s), {totals.reused_jobs} reused; {len(totals.failures)} failed."
    )
    for path, why in sorted(totals.failures.items()):
        print(f"glacierfs export: failed: {path}: {why}", file=sys.stderr)
    if stopped:
        print(f"glacierfs export: stopped: {stopped}; run the same command again to resume", file=sys.stderr)
        return EXIT_STOPPED
    return EXIT_FAILED if totals.failures else 0
