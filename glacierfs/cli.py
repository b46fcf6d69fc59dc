"""Command line: argument parsing, logging set-up, wiring objects together."""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import fcntl
import hashlib
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

from glacierfs import __version__, client, errors

if TYPE_CHECKING:
    from glacierfs.catalog import Catalog

log = logging.getLogger(__name__)


# Control characters (and the line separators Python's splitlines() honours) in
# a message: a file name holding a newline must not forge or split a log line.
# Undecodable bytes of a name (surrogate escapes) would fail the write itself.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\udc80-\udcff]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(match: re.Match[str]) -> str:
    char = match[0]
    return _ESCAPES.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def _escape_control(text: str) -> str:
    return _CONTROL.sub(_escaped, text)


class OneLineFormatter(logging.Formatter):
    """One record, one line: control characters in the message are escaped.
    A traceback, appended after the message, keeps its own lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        return _escape_control(super().formatMessage(record))


def setup_logging(debug: bool, log_file: Path | None = None) -> None:
    handler: logging.Handler
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        handler = logging.FileHandler(log_file)
        os.chmod(log_file, 0o600)
    else:
        handler = logging.StreamHandler()
    handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    # botocore's debug output carries request headers, signatures included.
    for noisy in ("botocore", "boto3", "urllib3", "werkzeug"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction between 0 and 1")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def add_emulator_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "emulator",
        help="run the local Glacier emulator in the foreground",
        description="Serve a local Glacier endpoint (moto's server with Glacier's real rules).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9797)
    parser.add_argument(
        "--job-delay",
        type=_non_negative,
        default=0.0,
        metavar="SECONDS",
        help="seconds until any job completes (default: 0, at once)",
    )
    parser.add_argument(
        "--fault-rate",
        type=_fraction,
        default=0.0,
        metavar="FRACTION",
        help="fraction of requests answered with 500/503/throttling/timeout or a dropped connection (default: 0)",
    )
    parser.add_argument(
        "--latency-ms", type=_non_negative, default=0.0, metavar="MS", help="delay added to every request (default: 0)"
    )
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help="keep vaults, archives, uploads and jobs here across restarts "
        "(default: a temporary directory removed on exit)",
    )
    parser.add_argument("--debug", action="store_true")
    parser.set_defaults(run=run_emulator)


def run_emulator(args: argparse.Namespace) -> int:
    from glacierfs.emulator import Emulator

    emulator = Emulator(
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        job_delay=args.job_delay,
        fault_rate=args.fault_rate,
        latency_ms=args.latency_ms,
    )
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        url = emulator.start()
    except OSError as error:
        log.error("cannot start the emulator on %s:%s: %s", args.host, args.port, error)
        return 1
    print(f"Glacier emulator listening on {url}", flush=True)
    try:
        stop.wait()
    finally:
        emulator.stop()
    return 0


SIZE = re.compile(r"(?i)^(\d+)\s*([kmgt]?)i?b?$")


def parse_size(text: str) -> int:
    """'64M', '1GiB', '1048576' -> bytes (binary units)."""
    match = SIZE.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 64M or 1G")
    return int(match[1]) << (10 * " kmgt".index((match[2] or " ").lower()))


def default_state_root() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "glacierfs"


def add_mount_parser(commands: argparse._SubParsersAction) -> None:
    from glacierfs.retrieval import TIERS
    from glacierfs.writer import DEFAULT_PART_SIZE

    parser = commands.add_parser(
        "mount",
        help="mount Glacier vaults at MOUNTPOINT",
        description="Mount the region's vaults as directories and their archives as files.",
    )
    parser.add_argument("mountpoint")
    parser.add_argument("--endpoint-url", help="Glacier endpoint (default: AWS's for the region)")
    parser.add_argument("--region", help="AWS region (default: from the AWS config)")
    parser.add_argument("--profile", help="AWS profile (default: the standard credential chain)")
    parser.add_argument(
        "--state-dir",
        type=Path,
        help="where the catalog lives (default: $XDG_DATA_HOME/glacierfs); "
        "losing it loses names, so it is never the cache directory",
    )
    parser.add_argument(
        "--cache-dir", type=Path, help="where retrieved archives are cached (default: $XDG_CACHE_HOME/glacierfs)"
    )
    parser.add_argument(
        "--cache-size",
        type=parse_size,
        default=parse_size("10G"),
        help="the cache's size; least recently used archives go first (default: 10G)",
    )
    parser.add_argument(
        "--tier", choices=TIERS, default="Standard", help="retrieval tier for reads (default: Standard, 3-5 hours)"
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="let open() wait this long for a retrieval instead of failing with EAGAIN at once (default: 0)",
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        metavar="SECONDS",
        help="how often to ask Glacier about jobs (default: by tier: Expedited 60, Standard 900, Bulk 1800)",
    )
    parser.add_argument(
        "--max-retrieval-bytes",
        type=parse_size,
        default=parse_size("10G"),
        help="cost guard: bytes open() may request per rolling 24 h; past it, open() fails with EDQUOT (default: 10G)",
    )
    parser.add_argument(
        "--max-retrieval-jobs",
        type=int,
        default=50,
        help="cost guard: retrieval jobs open() may start per rolling 24 h (default: 50)",
    )
    parser.add_argument(
        "--ranged-threshold",
        type=parse_size,
        default=parse_size("1G"),
        help="archives larger than this are read in ranges of --range-size, "
        "retrieved as reads reach them (default: 1G)",
    )
    parser.add_argument(
        "--range-size",
        type=parse_size,
        default=parse_size("64M"),
        help="size of one ranged retrieval, 1 MiB x 2^n (default: 64M)",
    )
    parser.add_argument(
        "--part-size",
        type=parse_size,
        default=DEFAULT_PART_SIZE,
        help="multipart part size, 1 MiB x 2^n (default: 64M, so files up to "
        "625 GiB; 512M allows 5 TiB, 4G the service's 40 TiB)",
    )
    parser.add_argument("--concurrency", type=int, default=4, help="parts uploaded at once per file (default: 4)")
    parser.add_argument(
        "--inventory-max-age",
        type=float,
        default=24 * 3600,
        metavar="SECONDS",
        help="ask for a new inventory of a vault when the last is older (default: 86400)",
    )
    parser.add_argument(
        "--manifest-delay",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="write a vault's manifest once its changes have settled this long (default: 60)",
    )
    parser.add_argument(
        "--max-attempts",
        type=int,
        default=5,
        help="attempts per Glacier request, with botocore's standard backoff "
        "(default: 5; a request that keeps failing gives up after ~8 s on average)",
    )
    parser.add_argument(
        "--vault-list-ttl",
        type=_non_negative,
        default=60.0,
        metavar="SECONDS",
        help="list the vaults again (ListVaults) when the last list is older; during "
        "an outage the last list is served (default: 60)",
    )
    parser.add_argument(
        "--cleanup-interval",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how often to retry aborting multipart uploads a failure left open (default: 30)",
    )
    parser.add_argument(
        "--keep-replaced",
        action="store_true",
        help="keep the old archive when a file is overwritten (default: delete it once the new one is stored)",
    )
    parser.add_argument(
        "--cache-writes",
        action="store_true",
        help="keep a copy of what is written in the cache, so reading it back costs no "
        "retrieval (default: off; the copy is checked against Glacier's tree hash)",
    )
    parser.add_argument(
        "--no-passthrough",
        dest="passthrough",
        action="store_false",
        help="serve reads of cached archives from glacierfs even where the kernel could "
        "read the cache's files itself (FUSE passthrough)",
    )
    parser.add_argument(
        "--allow-other",
        action="store_true",
        help="let other users see the mount (needs user_allow_other in /etc/fuse.conf)",
    )
    parser.add_argument("--foreground", action="store_true", help="stay in the foreground, log to stderr")
    parser.add_argument(
        "--log-file", type=Path, help="log here (default: glacierfs.log in the state directory when daemonized)"
    )
    parser.add_argument("--debug", action="store_true", help="log at debug level")
    parser.add_argument(
        "--emulator", action="store_true", help="start the local Glacier emulator in-process and mount it"
    )
    parser.add_argument(
        "--emulator-dir",
        type=Path,
        help="with --emulator: keep the emulator's data (and, unless --state-dir is "
        "given, the catalog) here, so it survives remounts",
    )
    parser.set_defaults(run=run_mount)

    umount = commands.add_parser("umount", help="unmount a glacierfs mount")
    umount.add_argument("mountpoint")
    umount.set_defaults(run=run_umount)

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
    retrieve.set_defaults(run=client.run_retrieve)

    refresh = commands.add_parser("refresh", help="ask for a new inventory of each VAULTPATH")
    refresh.add_argument("vaults", nargs="+", type=Path, metavar="VAULTPATH")
    refresh.set_defaults(run=client.run_refresh)

    status = commands.add_parser("status", help="uploads, jobs, cache and budget of running mounts")
    status.add_argument("mountpoint", nargs="?", type=Path)
    status.set_defaults(run=client.run_status)


def _mountpoint_problem(mountpoint: Path) -> str | None:
    if not mountpoint.is_dir():
        return f"{mountpoint} is not a directory"
    if os.path.ismount(mountpoint):
        return f"{mountpoint} is already a mount point (busy)"
    return None


def state_dir_for(args: argparse.Namespace) -> Path:
    """Where the catalog and a daemon's log live (a temporary emulator aside)."""
    if args.state_dir:
        return Path(args.state_dir)
    if args.emulator and args.emulator_dir:
        return Path(args.emulator_dir) / "state"
    return default_state_root()


def default_cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "glacierfs"


def _legacy_endpoint_key(args: argparse.Namespace, region: str) -> str:
    """What catalogs and caches were keyed by before they were keyed by account:
    the endpoint, region and profile, which two accounts can share."""
    endpoint = args.endpoint_url or "aws"
    readable = re.sub(r"[^A-Za-z0-9.-]+", "_", f"{region}-{endpoint}").strip("_")[:80]
    digest = hashlib.sha256(f"{region}|{endpoint}|{args.profile}".encode()).hexdigest()[:8]
    return f"{readable}-{digest}"


def account_key(account: str, region: str) -> str:
    """A catalog and a cache belong to one account in one region: a vault's names
    mean nothing to another account, whatever the endpoint."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", f"{account}-{region}")[:120]


def _private_dir(path: Path) -> Path:
    """Create ``path`` 0700, or make it 0700 if it exists: it holds the catalog,
    logs or cached archives, which are the user's alone."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    mode = path.stat().st_mode & 0o777
    if mode != 0o700:
        try:
            os.chmod(path, 0o700)
            log.info("%s was mode %o; made it 0700", path, mode)
        except OSError as error:
            log.warning("cannot make %s private (mode %o): %s", path, mode, error)
    return path


def _move_sqlite(source: Path, target: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        old = source.with_name(source.name + suffix)
        if old.exists():
            old.rename(target.with_name(target.name + suffix))


def _lock_catalog(path: Path) -> int | str:
    """Hold the catalog for this mount alone: a second mount on it would take the
    first one's uploads in flight for a crash's leftovers and abort them. The
    lock's descriptor, or why it cannot be had."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        return (
            f"the catalog in {path.parent} is in use by another glacierfs mount (pid {holder}); "
            "mount an account and region once per state directory"
        )
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def open_catalog(state_dir: Path, args: argparse.Namespace, region: str, account: str, listed: list[str]) -> Catalog:
    """The account's catalog. One left under the old endpoint key is adopted, with
    the cache beside it, when its vaults are this account's (or it has none)."""
    from glacierfs.catalog import Catalog

    key = account_key(account, region)
    path = state_dir / f"catalog-{key}.sqlite"
    legacy = state_dir / f"catalog-{_legacy_endpoint_key(args, region)}.sqlite"
    if not path.exists() and legacy.exists():
        old = Catalog(legacy)
        known = old.vaults() + [name for name, _, _ in old.gone_vaults()]
        old.close()
        if known and not set(known) & set(listed):
            log.warning(
                "left %s alone: none of its vaults (%s) is in the list of account %s; "
                "it is adopted when the account it belongs to mounts",
                legacy.name,
                ", ".join(sorted(known)[:5]),
                account,
            )
        else:
            _move_sqlite(legacy, path)
            log.warning(
                "adopted the catalog of %s (%s, keyed by endpoint) for account %s in %s as %s",
                args.endpoint_url or "AWS",
                legacy.name,
                account,
                region,
                path.name,
            )
            old_cache = default_cache_root() / _legacy_endpoint_key(args, region)
            new_cache = default_cache_root() / key
            if not args.cache_dir and old_cache.is_dir() and not new_cache.exists():
                old_cache.rename(new_cache)
                log.info("moved the cache %s to %s", old_cache, new_cache)
    catalog = Catalog(path)
    if catalog.meta("account") is None:
        catalog.set_meta("account", account)
        catalog.set_meta("region", region)
    return catalog


def _steady_heap() -> None:
    """Pin glibc's mmap threshold at 1 MiB. Part buffers are allocated and freed
    all the time; with the default dynamic threshold, freed ones are recycled on
    the heap, which fragments and lets RSS creep past the Writer's bound."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


def serve_mount(args: argparse.Namespace, report: Callable[[str], None]) -> int:
    """Set everything up, mount, and serve until unmounted. ``report`` gets
    'READY' once the mount is up, or the reason it is not."""
    from glacierfs.cache import ContentCache
    from glacierfs.fs import GlacierOperations, mount_options, serve
    from glacierfs.glacier import GlacierClient
    from glacierfs.inventory import Inventories
    from glacierfs.manifest import ManifestKeeper
    from glacierfs.retrieval import Retriever
    from glacierfs.vfs import GlacierFS
    from glacierfs.writer import check_part_size

    _steady_heap()
    os.umask(0o077)  # the catalog, logs and cached archives are the user's alone
    with ExitStack() as stack:
        endpoint = args.endpoint_url
        credentials = None
        state_dir = state_dir_for(args)
        if args.emulator:
            from glacierfs.emulator import Emulator

            root = args.emulator_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="glacierfs-")))
            emulator = Emulator(data_dir=root / "glacier")
            endpoint = emulator.start()
            stack.callback(emulator.stop)
            credentials = ("emulator", "emulator")
            if not (args.state_dir or args.emulator_dir):
                state_dir = root / "state"  # a throwaway emulator gets a throwaway catalog
            args.cache_dir = args.cache_dir or root / "cache"
        try:
            part_size = check_part_size(args.part_size)
            probe = GlacierClient(
                endpoint,
                args.region,
                args.profile,
                max_attempts=2,
                connect_timeout=5,
                read_timeout=30,
                credentials=credentials,
            )
            listing = list(probe.list_vaults())
            account = probe.account(listing)
        except errors.GlacierFSError as error:
            report(f"cannot reach Glacier at {endpoint or 'AWS'}: {error}")
            return 1
        vaults = [vault.name for vault in listing]
        glacier = GlacierClient(
            endpoint,
            args.region,
            args.profile,
            max_attempts=max(1, args.max_attempts),
            max_connections=max(16, args.concurrency * 4),
            credentials=credentials,
        )
        _private_dir(state_dir)
        holder = _lock_catalog(state_dir / f"catalog-{account_key(account, glacier.region)}.lock")
        if isinstance(holder, str):
            report(holder)
            return 1
        stack.callback(os.close, holder)
        catalog = open_catalog(state_dir, args, glacier.region, account, vaults)
        stack.callback(catalog.close)
        catalog.set_vaults(vaults)
        key = account_key(account, glacier.region)
        cache = ContentCache(
            _private_dir(Path(args.cache_dir) if args.cache_dir else default_cache_root() / key), args.cache_size
        )
        stack.callback(cache.close)
        try:
            retriever = Retriever(
                glacier,
                catalog,
                cache,
                tier=args.tier,
                poll_interval=args.poll_interval,
                max_bytes=args.max_retrieval_bytes,
                max_jobs=args.max_retrieval_jobs,
                concurrency=max(1, args.concurrency),
                range_size=args.range_size,
                ranged_threshold=args.ranged_threshold,
            )
        except errors.GlacierFSError as error:
            report(str(error))
            return 1
        retriever.start()
        stack.callback(retriever.stop)
        manifests = ManifestKeeper(glacier, catalog, delay=args.manifest_delay)
        vfs = GlacierFS(
            glacier,
            catalog,
            part_size,
            max(1, args.concurrency),
            keep_replaced=args.keep_replaced,
            cleanup_interval=args.cleanup_interval,
            retriever=retriever,
            wait_seconds=args.wait,
            manifests=manifests,
            cache_writes=args.cache_writes,
            vault_list_ttl=args.vault_list_ttl,
        )
        vfs.inventories = Inventories(
            glacier,
            catalog,
            retriever,
            max_age=args.inventory_max_age,
            poll_interval=retriever.poll_interval,
            scratch_dir=cache.directory,
        )
        vfs.inventories.start()
        stack.callback(vfs.inventories.stop)
        manifests.start()
        log.info(
            "mounting %d vault(s) of account %s at %s (%s) on %s",
            len(vaults),
            account,
            endpoint or "AWS",
            glacier.region,
            args.mountpoint,
        )
        operations = GlacierOperations(vfs, on_ready=lambda: report("READY"), passthrough=args.passthrough)
        try:
            serve(operations, str(args.mountpoint), **mount_options(args.allow_other))
        except RuntimeError as error:
            report(f"mounting at {args.mountpoint} failed: {error}")
            return 1
        log.info("unmounted %s", args.mountpoint)
    return 0


def run_mount(args: argparse.Namespace) -> int:
    # libfuse changes the working directory to / once mounted.
    for name in ("mountpoint", "state_dir", "cache_dir", "emulator_dir", "log_file"):
        if getattr(args, name) is not None:
            setattr(args, name, Path(getattr(args, name)).absolute())
    problem = _mountpoint_problem(args.mountpoint)
    if problem:
        print(f"glacierfs: {problem}", file=sys.stderr)
        return 1
    if args.foreground:

        def say(message: str) -> None:
            if message != "READY":
                log.error("%s", message)
            else:
                log.info("mounted at %s", args.mountpoint)

        return serve_mount(args, say)
    return _daemonize(args)


def _daemonize(args: argparse.Namespace) -> int:
    """Fork; the parent exits 0 only once the child reports the mount ready."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        log_file = args.log_file or state_dir_for(args) / "glacierfs.log"
        setup_logging(args.debug, log_file)
        # libfuse writes to stderr; keep that in the log, off the user's terminal.
        log_fd = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        reported = False

        def report(message: str) -> None:
            nonlocal reported
            if reported:
                return
            reported = True
            os.write(write_end, (message + "\n").encode())
            os.close(write_end)

        code = 1
        try:
            code = serve_mount(args, report)
        except BaseException as error:
            log.exception("glacierfs daemon failed")
            report(f"glacierfs failed: {error}")
        finally:
            report(f"glacierfs stopped before the mount was ready (see {log_file})")
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        message = pipe.readline().strip()
    if message == "READY":
        print(f"glacierfs mounted at {args.mountpoint} (pid {pid})")
        return 0
    os.waitpid(pid, 0)
    print(f"glacierfs: {message or 'the daemon died before the mount was ready'}", file=sys.stderr)
    return 1


def run_umount(args: argparse.Namespace) -> int:
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    if tool is None:
        print("glacierfs: neither fusermount3 nor fusermount is installed", file=sys.stderr)
        return 1
    result = subprocess.run([tool, "-u", str(args.mountpoint)], check=False)
    return result.returncode


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="glacierfs", description="Mount Amazon Glacier vaults as a filesystem.")
    parser.add_argument("--version", action="version", version=f"glacierfs {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_mount_parser(commands)
    add_emulator_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log_file = getattr(args, "log_file", None)
    setup_logging(getattr(args, "debug", False), log_file if getattr(args, "foreground", False) else None)
    return int(args.run(args) or 0)
