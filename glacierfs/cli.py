"""Command line: parse, wire (assembly.py builds the parts), daemonize.

Heavy modules (the FUSE binding, boto3, the emulator) are imported by the
command that needs them, so `glacierfs status` and `--help` stay quick.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path

from glacierfs import __version__, client, errors, export
from glacierfs.logs import setup_logging
from glacierfs.notify import notify
from glacierfs.options import MountOptions, non_negative, parse_size
from glacierfs.state import default_state_root

log = logging.getLogger(__name__)


def add_mount_parser(commands: argparse._SubParsersAction) -> None:
    from glacierfs.records import TIERS
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
        "--no-tier-fallback",
        dest="tier_fallback",
        action="store_false",
        help="with --tier Expedited, fail (EAGAIN) when Glacier has no Expedited capacity, "
        "instead of retrieving at the Standard tier",
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
        type=non_negative,
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
        "--write-back",
        action="store_true",
        help="close() returns once the file is safe in the local spool, and uploads follow, "
        "--transfers at once; fsync, `sync FILE` and `glacierfs umount` wait for them (default: off: "
        "close() returns once Glacier stored the file)",
    )
    parser.add_argument(
        "--spool-dir",
        type=Path,
        help="with --write-back: keep the spool here (default: in the state directory); it needs "
        "room for the files not yet uploaded",
    )
    parser.add_argument(
        "--transfers", type=int, default=32, help="queued files uploaded at once with --write-back (default: 32)"
    )
    parser.add_argument(
        "--settle",
        type=non_negative,
        default=2.0,
        metavar="SECONDS",
        help="a queued file waits this long after its close, so a rename right after it (rsync's "
        "temporary names) is the name its archive records (default: 2)",
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


def mount_options_of(args: argparse.Namespace) -> MountOptions:
    return MountOptions(**{field.name: getattr(args, field.name) for field in dataclasses.fields(MountOptions)})


def serve_mount(args: argparse.Namespace, report: Callable[[str], None]) -> int:
    """Set everything up, mount, and serve until unmounted. ``report`` gets
    'READY' once the mount is up, or the reason it is not."""
    from glacierfs import state
    from glacierfs.assembly import assemble
    from glacierfs.cache import ContentCache
    from glacierfs.fs import GlacierOperations, mount_options, serve
    from glacierfs.glacier import GlacierClient
    from glacierfs.writer import check_part_size, steady_heap

    steady_heap()
    os.umask(0o077)  # the catalog, logs and cached archives are the user's alone
    with ExitStack() as stack:
        endpoint, credentials, state_dir, cache_dir = args.endpoint_url, None, state_dir_for(args), args.cache_dir
        if args.emulator:
            from glacierfs.emulator import Emulator

            root = args.emulator_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="glacierfs-")))
            emulator = Emulator(data_dir=root / "glacier")
            endpoint = emulator.start()
            stack.callback(emulator.stop)
            credentials = ("emulator", "emulator")
            if not (args.state_dir or args.emulator_dir):
                state_dir = root / "state"  # a throwaway emulator gets a throwaway catalog
            cache_dir = cache_dir or root / "cache"
        options = mount_options_of(args)
        try:
            check_part_size(options.part_size)
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
            max_attempts=max(1, options.max_attempts),
            max_connections=max(16, options.concurrency * 4, options.transfers + options.concurrency),
            credentials=credentials,
        )
        key = state.account_key(account, glacier.region)
        try:
            stack.callback(os.close, state.lock_catalog(state.private_dir(state_dir), key))
            catalog = state.open_catalog(
                state_dir, key, state.legacy_key(args.endpoint_url, glacier.region, args.profile), vaults, cache_dir
            )
            stack.callback(catalog.close)
            catalog.set_vaults(vaults)
            cache = ContentCache(state.private_dir(cache_dir or state.default_cache_root() / key), options.cache_size)
            stack.callback(cache.close)
            parts = assemble(stack, glacier, catalog, cache, options)
        except errors.GlacierFSError as error:
            report(str(error))
            return 1
        log.info(
            "mounting %d vault(s) of account %s at %s (%s) on %s",
            len(vaults),
            account,
            endpoint or "AWS",
            glacier.region,
            args.mountpoint,
        )

        def ready() -> None:
            notify("READY=1", f"MAINPID={os.getpid()}", f"STATUS=mounted at {args.mountpoint}")
            report("READY")

        operations = GlacierOperations(parts.vfs, parts.control, on_ready=ready, passthrough=options.passthrough)
        try:
            serve(operations, str(args.mountpoint), **mount_options(options.allow_other))
        except RuntimeError as error:
            report(f"mounting at {args.mountpoint} failed: {error}")
            return 1
        # Unmounted; the stack now stops every part, uploads and manifests first.
        notify("STOPPING=1", f"STATUS=unmounted from {args.mountpoint}; finishing what is under way")
        log.info("unmounted %s; stopping", args.mountpoint)
    log.info("stopped")
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
    """Drain the write-back queue (unless --lazy), then unmount. Files that could
    not be stored stay in the spool for the next mount, and the exit status says so."""
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    if tool is None:
        print("glacierfs: neither fusermount3 nor fusermount is installed", file=sys.stderr)
        return 1
    failed: list[dict] = []
    if not args.lazy:
        try:
            failed = client.drain(args.mountpoint, quiet=args.quiet)
        except OSError as error:  # not a glacierfs mount, or one that no longer answers
            print(f"glacierfs: {args.mountpoint}: the upload queue cannot be read ({error.strerror})", file=sys.stderr)
        except KeyboardInterrupt:
            print("\nglacierfs: not unmounted; what is queued keeps uploading", file=sys.stderr)
            return 130
    result = subprocess.run([tool, "-u", str(args.mountpoint)], check=False)
    for item in failed:
        print(f"glacierfs: {item['path']} is not stored ({item['error']}); it stays in the spool", file=sys.stderr)
    if failed:
        print("glacierfs: the files above go up at the next mount", file=sys.stderr)
    return result.returncode or (1 if failed else 0)


def build_parser() -> argparse.ArgumentParser:
    from glacierfs.emulatorcli import add_emulator_parser

    parser = argparse.ArgumentParser(prog="glacierfs", description="Mount Amazon Glacier vaults as a filesystem.")
    parser.add_argument("--version", action="version", version=f"glacierfs {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_mount_parser(commands)
    umount = commands.add_parser("umount", help="unmount a glacierfs mount")
    umount.add_argument("mountpoint", type=Path)
    umount.add_argument(
        "--lazy", action="store_true", help="do not wait for queued uploads: they go up at the next mount"
    )
    umount.add_argument("-q", "--quiet", action="store_true", help="no progress line while uploads finish")
    umount.set_defaults(run=run_umount)
    client.add_parsers(commands)
    export.add_parser(commands)
    add_emulator_parser(commands)
    return parser


# Options mount(8) and fstab add that mean nothing to glacierfs (or only to
# mount(8) and systemd): accepted and ignored. Any other unknown one is refused.
GENERIC_OPTIONS = {
    "rw", "defaults", "auto", "noauto", "user", "nouser", "users", "owner", "group", "dev", "nodev", "suid",
    "nosuid", "exec", "noexec", "async", "atime", "noatime", "relatime", "strictatime", "nodiratime", "diratime",
    "lazytime", "nolazytime", "_netdev", "nofail", "silent", "loud",
}  # fmt: skip
SOURCE_FORM = "glacier or glacier:REGION"


def from_mount_helper(argv: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """mount(8)'s form, ``SOURCE MOUNTPOINT -o OPTIONS``, as the mount command's
    arguments: each option NAME[=VALUE] is the mount option --NAME (dashes may be
    written as underscores), and SOURCE's REGION, if any, is --region."""
    source, mountpoint, rest = argv[0], argv[1], argv[2:]
    kind, _, region = source.partition(":")
    if kind != "glacier":
        parser.error(f"SOURCE is {SOURCE_FORM}, not {source!r}")
    options: list[str] = []
    while rest:
        flag = rest.pop(0)
        if flag == "-o" and rest:
            options.extend(rest.pop(0).split(","))
        elif flag.startswith("-o") and len(flag) > 2:
            options.extend(flag[2:].split(","))
        else:
            parser.error(f"unexpected {flag!r}: mount(8) passes options as -o NAME=VALUE,...")
    mount_parser = next(
        action.choices["mount"] for action in parser._actions if isinstance(action, argparse._SubParsersAction)
    )
    known = {
        option[2:].replace("-", "_"): action
        for action in mount_parser._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }
    converted = ["mount", mountpoint] + (["--region", region] if region else [])
    for option in filter(None, options):
        name, has_value, value = option.partition("=")
        if name in GENERIC_OPTIONS or name.startswith("x-") or name == "comment":
            continue
        action = known.get(name.replace("-", "_"))
        if action is None:
            parser.error(f"unknown mount option {name!r}; the options are those of `glacierfs mount --help`")
        takes_value = action.nargs != 0
        if takes_value != bool(has_value):
            parser.error(f"mount option {name} {'needs a' if takes_value else 'takes no'} value")
        converted += [action.option_strings[-1], value] if takes_value else [action.option_strings[-1]]
    return converted


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = next(a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if len(argv) >= 2 and not argv[0].startswith("-") and argv[0] not in commands:
        argv = from_mount_helper(argv, parser)
    args = parser.parse_args(argv)
    log_file = getattr(args, "log_file", None)
    setup_logging(getattr(args, "debug", False), log_file if getattr(args, "foreground", False) else None)
    return int(args.run(args) or 0)
