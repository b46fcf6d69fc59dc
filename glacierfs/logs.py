"""Logging: one record per line, whatever a file name holds."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

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
    # Under systemd, stderr goes to the journal, which stamps every line itself.
    to_journal = log_file is None and "JOURNAL_STREAM" in os.environ
    stamp = "" if to_journal else "%(asctime)s "
    handler.setFormatter(OneLineFormatter(stamp + "%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    # botocore's debug output carries request headers, signatures included.
    for noisy in ("botocore", "boto3", "urllib3", "werkzeug"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
