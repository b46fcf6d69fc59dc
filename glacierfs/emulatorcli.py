"""`glacierfs emulator`: serve the local Glacier endpoint in the foreground. Outside the
emulator package, so that building the command line does not import moto."""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from glacierfs.options import fraction, non_negative
from glacierfs.seedcli import add_seed_parser

log = logging.getLogger(__name__)


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
        type=non_negative,
        default=0.0,
        metavar="SECONDS",
        help="seconds until any job completes (default: 0, at once)",
    )
    parser.add_argument(
        "--fault-rate",
        type=fraction,
        default=0.0,
        metavar="FRACTION",
        help="fraction of requests answered with 500/503/throttling/timeout or a dropped connection (default: 0)",
    )
    parser.add_argument(
        "--latency-ms",
        type=non_negative,
        default=0.0,
        metavar="MS",
        help="round trip added to every request, half of it before the request takes effect (default: 0)",
    )
    parser.add_argument(
        "--expedited-capacity",
        choices=("on-demand", "none"),
        default="on-demand",
        help="'none': Expedited jobs fail with InsufficientCapacityException unless a provisioned "
        "capacity unit is active (default: on-demand, always capacity)",
    )
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help="keep vaults, archives, uploads and jobs here across restarts "
        "(default: a temporary directory removed on exit)",
    )
    parser.add_argument("--debug", action="store_true")
    parser.set_defaults(run=run_emulator)
    add_seed_parser(parser)


def run_emulator(args: argparse.Namespace) -> int:
    from glacierfs.emulator import Emulator  # moto is slow to import: only for this command

    emulator = Emulator(
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        job_delay=args.job_delay,
        fault_rate=args.fault_rate,
        latency_ms=args.latency_ms,
        expedited_capacity=args.expedited_capacity,
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
