"""The service manager's readiness protocol (sd_notify), spoken without
libsystemd: one datagram per state change to $NOTIFY_SOCKET. Outside systemd
(no NOTIFY_SOCKET) it does nothing."""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def notify(*states: str) -> bool:
    """Send ``states`` (e.g. "READY=1", "STATUS=...") to the service manager;
    whether there was one to tell."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(states).encode())
    except OSError as error:
        log.warning("could not tell the service manager %s: %s", ", ".join(states), error)
        return False
    return True
