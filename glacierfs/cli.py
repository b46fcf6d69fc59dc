"""Command line: argument parsing, logging set-up, wiring objects together."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence

from glacierfs import __version__

log = logging.getLogger(__name__)


def setup_logging(debug: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="glacierfs", description="Mount Amazon Glacier vaults as a filesystem."
    )
    parser.add_argument("--version", action="version", version=f"glacierfs {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_emulator_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(getattr(args, "debug", False))
    return int(args.run(args) or 0)
