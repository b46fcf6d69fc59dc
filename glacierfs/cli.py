"""Command line: argument parsing, logging set-up, wiring objects together."""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
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

from glacierfs import __version__, errors

log = logging.getLogger(__name__)


def setup_logging(debug: bool, log_file: Path | None = None) -> None:
    handler: logging.Handler
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        handler = logging.FileHandler(log_file)
        os.chmod(log_file, 0o600)
    else:
        handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
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
    parser.add_argument("--job-delay", type=_non_negative, default=0.0, metavar="SECONDS",
                        help="seconds until any job completes (default: 0, at once)")
    parser.add_argument("--fault-rate", type=_fraction, default=0.0, metavar="FRACTION",
                        help="fraction of requests answered with 500/503/throttling/timeout "
                             "or a dropped connection (default: 0)")
    parser.add_argument("--latency-ms", type=_non_negative, default=0.0, metavar="MS",
                        help="delay added to every request (default: 0)")
    parser.add_argument("--data-dir", metavar="DIR",
                        help="keep vaults, archives, uploads and jobs here across restarts "
                             "(default: a temporary directory removed on exit)")
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
    parser.add_argument("--state-dir", type=Path,
                        help="where the catalog lives (default: $XDG_DATA_HOME/glacierfs); "
                             "losing it loses names, so it is never the cache directory")
    parser.add_argument("--cache-dir", type=Path, help="where retrieved archives are cached")
    parser.add_argument("--part-size", type=parse_size, default=DEFAULT_PART_SIZE,
                        help="multipart part size, 1 MiB x 2^n (default: 64M, so files up to "
                             "625 GiB; 512M allows 5 TiB, 4G the service's 40 TiB)")
    parser.add_argument("--concurrency", type=int, default=4,
                        help="parts uploaded at once per file (default: 4)")
    parser.add_argument("--max-attempts", type=int, default=5,
                        help="attempts per Glacier request, with botocore's standard backoff "
                             "(default: 5; a request that keeps failing gives up after ~8 s on average)")
    parser.add_argument("--cleanup-interval", type=float, default=30.0, metavar="SECONDS",
                        help="how often to retry aborting multipart uploads a failure left open "
                             "(default: 30)")
    parser.add_argument("--keep-replaced", action="store_true",
                        help="keep the old archive when a file is overwritten (default: delete it "
                             "once the new one is stored)")
    parser.add_argument("--allow-other", action="store_true",
                        help="let other users see the mount (needs user_allow_other in /etc/fuse.conf)")
    parser.add_argument("--foreground", action="store_true", help="stay in the foreground, log to stderr")
    parser.add_argument("--log-file", type=Path,
                        help="log here (default: glacierfs.log in the state directory when daemonized)")
    parser.add_argument("--debug", action="store_true", help="log at debug level")
    parser.add_argument("--emulator", action="store_true",
                        help="start the local Glacier emulator in-process and mount it")
    parser.add_argument("--emulator-dir", type=Path,
                        help="with --emulator: keep the emulator's data (and, unless --state-dir is "
                             "given, the catalog) here, so it survives remounts")
    parser.set_defaults(run=run_mount)

    umount = commands.add_parser("umount", help="unmount a glacierfs mount")
    umount.add_argument("mountpoint")
    umount.set_defaults(run=run_umount)


def _mountpoint_problem(mountpoint: Path) -> str | None:
    if not mountpoint.is_dir():
        return f"{mountpoint} is not a directory"
    if os.path.ismount(mountpoint):
        return f"{mountpoint} is already a mount point (busy)"
    return None


def _endpoint_key(args: argparse.Namespace, region: str) -> str:
    endpoint = args.endpoint_url or "aws"
    readable = re.sub(r"[^A-Za-z0-9.-]+", "_", f"{region}-{endpoint}").strip("_")[:80]
    digest = hashlib.sha256(f"{region}|{endpoint}|{args.profile}".encode()).hexdigest()[:8]
    return f"{readable}-{digest}"


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
    from glacierfs.catalog import Catalog
    from glacierfs.fs import GlacierOperations, mount_options, serve
    from glacierfs.glacier import GlacierClient
    from glacierfs.vfs import GlacierFS
    from glacierfs.writer import check_part_size

    _steady_heap()
    with ExitStack() as stack:
        endpoint = args.endpoint_url
        credentials = None
        state_dir = args.state_dir
        if args.emulator:
            from glacierfs.emulator import Emulator

            root = args.emulator_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="glacierfs-")))
            emulator = Emulator(data_dir=root / "glacier")
            endpoint = emulator.start()
            stack.callback(emulator.stop)
            credentials = ("emulator", "emulator")
            state_dir = state_dir or root / "state"
        try:
            part_size = check_part_size(args.part_size)
            probe = GlacierClient(endpoint, args.region, args.profile, max_attempts=2,
                                  connect_timeout=5, read_timeout=30, credentials=credentials)
            vaults = [vault.name for vault in probe.list_vaults()]
        except errors.GlacierFSError as error:
            report(f"cannot reach Glacier at {endpoint or 'AWS'}: {error}")
            return 1
        glacier = GlacierClient(endpoint, args.region, args.profile, max_attempts=max(1, args.max_attempts),
                                max_connections=max(16, args.concurrency * 4), credentials=credentials)
        state_dir = Path(state_dir or default_state_root())
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        catalog = Catalog(state_dir / f"catalog-{_endpoint_key(args, glacier.region)}.sqlite")
        stack.callback(catalog.close)
        catalog.set_vaults(vaults)
        vfs = GlacierFS(glacier, catalog, part_size, max(1, args.concurrency),
                        keep_replaced=args.keep_replaced, cleanup_interval=args.cleanup_interval)
        log.info("mounting %d vault(s) of %s at %s", len(vaults), endpoint or glacier.region, args.mountpoint)
        operations = GlacierOperations(vfs, on_ready=lambda: report("READY"))
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
        log_file = args.log_file or (
            (args.state_dir or (args.emulator_dir / "state" if args.emulator and args.emulator_dir else None)
             or default_state_root()) / "glacierfs.log"
        )
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
        except BaseException as error:  # noqa: BLE001 - the parent must hear of it
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
    parser = argparse.ArgumentParser(
        prog="glacierfs", description="Mount Amazon Glacier vaults as a filesystem."
    )
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
