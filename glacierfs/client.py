"""The control client: `glacierfs status`, `retrieve` and `refresh` talk to a
running mount through extended attributes on it, from any shell. The xattrs
are the whole protocol; their names and states are control.py's."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

from glacierfs.control import Attr, State, state_of

_ESCAPED = re.compile(rb"\\([0-7]{3})")


def _unescape_mount_field(field: bytes) -> Path:
    """mountinfo writes space, tab, newline and backslash as octal escapes; other
    bytes (UTF-8 names included) as they are."""
    return Path(os.fsdecode(_ESCAPED.sub(lambda match: bytes([int(match[1], 8)]), field)))


def _glacierfs_mounts() -> list[Path]:
    with open("/proc/self/mountinfo", "rb") as table:
        mounts = []
        for line in table:
            fields = line.split()
            if fields[fields.index(b"-") + 1] == b"fuse.glacierfs":
                mounts.append(_unescape_mount_field(fields[4]))
        return mounts


def mount_root(path: Path) -> Path | None:
    path = path.absolute()
    roots = sorted(_glacierfs_mounts(), key=lambda p: len(str(p)), reverse=True)
    return next((root for root in roots if path == root or root in path.parents), None)


def _files_under(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            for folder, _, names in os.walk(path):
                files.extend(Path(folder) / name for name in sorted(names))
        else:
            files.append(path)
    return files


def _state_of(path: Path) -> str:
    try:
        return os.getxattr(path, Attr.STATE).decode()
    except OSError as error:
        return f"unknown ({error.strerror})"


def human_size(size: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"


def run_retrieve(args: argparse.Namespace) -> int:
    for path in args.paths:
        if mount_root(path) is None:
            print(f"glacierfs: {path} is not inside a glacierfs mount", file=sys.stderr)
            return 1
    files = _files_under(args.paths)
    # A "failed" archive's last job gave bytes that failed verification: a new job is what helps.
    states = {path: state_of(_state_of(path)) for path in files}
    wanted = [path for path in files if states[path] in (State.STORED, State.FAILED)]
    pending = [path for path in files if states[path] == State.RETRIEVING]
    total = sum(path.stat().st_size for path in wanted)
    print(
        f"{len(wanted)} archive(s), {human_size(total)}, to retrieve with the {args.tier} tier "
        f"({len(pending)} already being retrieved, {len(files) - len(wanted) - len(pending)} cached or empty)."
    )
    if wanted and not args.yes:
        if not sys.stdin.isatty():
            print("glacierfs: not confirmed (use --yes to retrieve without asking)", file=sys.stderr)
            return 1
        if input("Retrievals cost money. Start them? [y/N] ").strip().lower() not in ("y", "yes"):
            print("Nothing started.")
            return 1
    from glacierfs.errors import GlacierFSError
    from glacierfs.thaw import pacer_for, retrieve_paced

    try:
        root = mount_root(args.paths[0]) or Path("/")
        pacer, catalog = pacer_for(root, args.max_bytes_per_day, args.max_jobs_per_hour)
    except GlacierFSError as error:
        print(f"glacierfs: {error}", file=sys.stderr)
        return 1
    try:
        failed = retrieve_paced(wanted, args.tier, pacer, human_size)
    finally:
        if catalog is not None:
            catalog.close()
    print(f"Started {len(wanted) - failed} retrieval job(s).")
    if args.wait:
        return _wait_with_progress(wanted + pending)
    return 1 if failed else 0


def _wait_with_progress(paths: list[Path]) -> int:
    sizes = {path: path.stat().st_size for path in paths}
    total = sum(sizes.values()) or 1
    while True:
        states = {path: _state_of(path) for path in paths}
        done = [path for path, state in states.items() if state_of(state) == State.CACHED]
        failed = [path for path, state in states.items() if state_of(state) == State.FAILED]
        fraction = sum(sizes[path] for path in done) / total
        bar = "#" * int(fraction * 30)
        print(
            f"\r[{bar:<30}] {len(done)}/{len(paths)} cached, {human_size(sum(sizes[p] for p in done))}",
            end="",
            flush=True,
        )
        if len(done) + len(failed) == len(paths):
            print()
            for path in failed:
                print(f"glacierfs: {path}: {states[path]}", file=sys.stderr)
            return 1 if failed else 0
        time.sleep(2)


def run_refresh(args: argparse.Namespace) -> int:
    code = 0
    for vault in args.vaults:
        root = mount_root(vault)
        if root is None or vault.absolute().parent != root:
            print(f"glacierfs: {vault} is not a vault of a glacierfs mount", file=sys.stderr)
            code = 1
            continue
        try:
            os.setxattr(vault, Attr.REFRESH, b"1")
            print(f"{vault}: {os.getxattr(vault, Attr.INVENTORY).decode()}")
        except OSError as error:
            print(f"glacierfs: {vault}: {error.strerror}", file=sys.stderr)
            code = 1
    return code


def drain(mountpoint: Path, quiet: bool = False, poll: float = 0.1) -> list[dict]:
    """`glacierfs umount`: send every queued file now, and wait until none is
    left to try, with a progress line. The files that failed (each tried once
    more since the drain began)."""
    os.setxattr(mountpoint, Attr.QUEUE, b"now")
    started, first = time.monotonic(), None
    while True:
        queue = json.loads(os.getxattr(mountpoint, Attr.QUEUE))
        left = queue["bytes"]
        if first is None:
            first = (queue["pending"], left)
        if not queue["pending"]:
            break
        if not quiet:
            # The further of the two measures of progress: one large file, or many small ones, left.
            done = max(1 - queue["pending"] / first[0], 1 - left / first[1] if first[1] else 0)
            elapsed = time.monotonic() - started
            eta = f", about {elapsed * (1 - done) / done:.0f} s left" if done > 0.05 else ""
            print(
                f"\rwaiting for uploads: {queue['pending']} file(s), {human_size(left)} to go{eta}   ",
                end="",
                file=sys.stderr,
                flush=True,
            )
        time.sleep(poll)
    if not quiet and first and first[0]:
        print(file=sys.stderr)
    return list(queue["failed"])


# Exit codes of `glacierfs status`, for monitoring.
STATUS_OK = 0
STATUS_UNREADABLE = 1  # a mount named (or listed) does not answer
STATUS_DEGRADED = 3  # a mount answers, but cannot reach Glacier or holds repairs back


def _degraded(status: dict) -> bool:
    return (
        not status.get("glacier", {}).get("reachable", True)
        or bool(status.get("held_back"))
        or bool(status.get("queue", {}).get("failed"))
    )


def run_status(args: argparse.Namespace) -> int:
    from glacierfs.exportstate import running_exports

    mounts = [args.mountpoint.absolute()] if args.mountpoint else _glacierfs_mounts()
    code = STATUS_OK
    found: dict[str, dict] = {}
    for mount in mounts:
        try:
            found[str(mount)] = json.loads(os.getxattr(mount, Attr.STATUS))
            found[str(mount)]["exports"] = running_exports(mount)
        except OSError as error:
            print(f"glacierfs: {mount}: not a running glacierfs mount ({error.strerror})", file=sys.stderr)
            code = STATUS_UNREADABLE
    if code == STATUS_OK and any(_degraded(status) for status in found.values()):
        code = STATUS_DEGRADED
    if args.json:
        print(json.dumps({"mounts": found}, indent=2, sort_keys=True))
        return code
    if not mounts:
        print("No glacierfs mounts.")
    for mount, status in found.items():
        _print_status(mount, status)
    return code


def _print_status(mount: str, status: dict) -> None:
    print(f"{mount}")
    glacier = status.get("glacier")
    if glacier and not glacier["reachable"]:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(glacier["lost_since"]))
        print(f"  Glacier at {glacier['endpoint']}: NOT ANSWERING since {since} ({glacier['error']})")
    elif glacier:
        print(f"  Glacier at {glacier['endpoint']}: answering")
    uploads = status.get("uploads", [])
    print(f"  uploads in progress: {len(uploads)}")
    for upload in uploads:
        print(f"    {upload['path']:<50} {human_size(upload['bytes']):>10}  {upload['parts_sent']} part(s) sent")
    queue = status.get("queue")
    if queue and queue["files"]:
        print(
            f"  write-back queue: {queue['files']} file(s), {human_size(queue['bytes'])}, "
            f"{len(queue['uploading'])} uploading, in {queue['spool']}"
        )
        for failed in queue["failed"]:
            print(f"    {failed['path']:<50} FAILED {failed['attempts']} time(s): {failed['error']}")
    jobs = status.get("jobs", [])
    print(f"  retrievals in flight: {len(jobs)}")
    for job in jobs:
        age = time.time() - job["requested"]
        print(
            f"    {job['vault']}/{job['archive_id'][:16]}…  {human_size(job['bytes']):>10}  {job['tier']:<9} "
            f"{job['status']:<10} {age / 60:6.0f} min old"
        )
    for waiting in status.get("held_back", []):
        print(f"  waiting for room on the state disk (or for Glacier) to {waiting}")
    for gone in status.get("gone_vaults", []):
        since = time.strftime("%Y-%m-%d %H:%M", time.localtime(gone["since"]))
        print(
            f"  vault {gone['name']} missing from Glacier's vault list since {since}: hidden, "
            f"{gone['entries']} name(s) kept until it is listed again"
        )
    for running in status.get("exports", []):
        from glacierfs.exportstate import progress_line

        line = progress_line(running, human_size)
        print(f"  export of {running['source']} to {running['dest']} (pid {running['pid']}): {line}")
    cache = status.get("cache")
    if cache:
        print(
            f"  cache: {human_size(cache['bytes'])} of {human_size(cache['limit'])} in {cache['entries']} item(s), "
            f"read by {cache['read_by']}"
        )
    budget = status.get("budget")
    if budget:
        print(
            f"  retrieval budget left (24 h): {human_size(budget['bytes_left'])} of "
            f"{human_size(budget['max_bytes'])}, {budget['jobs_left']} of {budget['max_jobs']} job(s)"
        )
    policy = status.get("retrieval_policy", {})
    if policy:
        summary = policy.get("summary") or f"unknown ({policy.get('error')})"
        print(f"  account's data retrieval policy (set in Glacier): {summary}")
    capacity = status.get("capacity", {})
    if "error" in capacity:
        print(f"  provisioned capacity: unknown ({capacity['error']})")
    elif "units" in capacity:
        print(f"  provisioned capacity units: {len(capacity['units']) or 'none'}")
        for unit in capacity["units"]:
            print(f"    {unit['capacity_id']}  since {unit['start']}, expires {unit['expires']}")


def add_parsers(commands: argparse._SubParsersAction) -> None:
    """The commands that talk to a running mount."""
    from glacierfs.options import parse_size
    from glacierfs.records import TIERS

    retrieve = commands.add_parser(
        "retrieve",
        help="thaw every archive under PATHs (bulk retrieval)",
        description="Start retrieval jobs for every stored archive under the PATHs of a running "
        "mount, after showing the count, bytes and tier and asking to confirm.",
    )
    retrieve.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    retrieve.add_argument("--tier", choices=TIERS, default="Standard")
    retrieve.add_argument("--yes", action="store_true", help="do not ask")
    retrieve.add_argument("--wait", action="store_true", help="wait, with a progress bar, until all are cached")
    retrieve.add_argument("--max-bytes-per-day", type=parse_size, help="start jobs for at most this many bytes a day")
    retrieve.add_argument("--max-jobs-per-hour", type=int, help="start at most this many jobs an hour")
    retrieve.set_defaults(run=run_retrieve)

    refresh = commands.add_parser("refresh", help="ask for a new inventory of each VAULTPATH")
    refresh.add_argument("vaults", nargs="+", type=Path, metavar="VAULTPATH")
    refresh.set_defaults(run=run_refresh)

    status = commands.add_parser("status", help="uploads, jobs, cache and budget of running mounts")
    status.add_argument("mountpoint", nargs="?", type=Path)
    status.add_argument("--json", action="store_true", help="print every figure as JSON, for monitoring")
    status.set_defaults(run=run_status)
