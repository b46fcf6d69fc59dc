"""The command line of ``glacierfs emulator seed``.

Apart from the emulator package, whose import loads moto: the command line is
built for every glacierfs command, and only a seed needs the emulator.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from glacierfs import errors

log = logging.getLogger(__name__)


def add_seed_parser(emulator: argparse.ArgumentParser) -> None:
    """``glacierfs emulator seed``, under the ``emulator`` command's parser."""
    commands = emulator.add_subparsers(dest="emulator_command", metavar="COMMAND")
    parser = commands.add_parser(
        "seed",
        help="fill a vault of the emulator from an inventory (JSON or CSV)",
        description="Load a vault's inventory, as Glacier sends it, into the emulator's data directory: the "
        "same archive ids, descriptions, dates and sizes, with synthetic bodies (zeros, made on demand). "
        "Then run the emulator on that directory and mount it, to see how glacierfs will show the real "
        "vault before paying for anything.",
    )
    parser.add_argument("--data-dir", required=True, metavar="DIR", help="the emulator's data directory")
    parser.add_argument("--vault", required=True, metavar="NAME", help="the vault to fill (made if need be)")
    parser.add_argument("--account", help="its account (default: the emulator's own, 123456789012)")
    parser.add_argument("--region", default="us-east-1", help="(default: us-east-1)")
    parser.add_argument("inventory", type=Path, metavar="INVENTORY", help="the inventory: a file in JSON or CSV")
    parser.set_defaults(run=run_seed)


def run_seed(args: argparse.Namespace) -> int:
    from glacierfs.emulator.seed import DEFAULT_ACCOUNT, seed

    started = time.monotonic()
    try:
        count = seed(Path(args.data_dir), args.vault, args.inventory, args.account or DEFAULT_ACCOUNT, args.region)
    except (OSError, errors.GlacierFSError, ValueError) as error:
        log.error("cannot seed vault %s from %s: %s", args.vault, args.inventory, error)
        return 1
    print(
        f"seeded vault {args.vault} with {count:,} archive(s) in {time.monotonic() - started:.1f} s "
        f"(data in {args.data_dir})",
        flush=True,
    )
    return 0
