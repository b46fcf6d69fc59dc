"""The knobs a test turns while the emulator runs, the emulator's clock, and the count of what it answered.

They live apart from the backend because both faces of the emulator read them:
the HTTP layer injects faults and counts calls, the job outputs corrupt or cut
bytes on request, and every area reads the time through ``now`` so a test can
move the clock a day or a month ahead instead of sleeping. Tests reach them as
``Emulator.settings`` and ``Emulator.calls``, or over HTTP (``control``).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

EXPEDITED_CAPACITY = ("on-demand", "none")


@dataclass
class EmulatorSettings:
    """Knobs a test may turn while the emulator runs."""

    job_delay: float = 0.0
    fault_rate: float = 0.0
    latency_ms: float = 0.0
    # Shift the date an inventory describes this many seconds into the past.
    inventory_lag: float = 0.0
    # Flip one byte in this many of the next archive job outputs served.
    corrupt_outputs: int = 0
    # Serve only the first half of this many of the next job outputs (archive or inventory).
    truncate_outputs: int = 0
    # An outage of one operation: answer every ``fail_operation`` request (an
    # operation name, e.g. "GetJobOutput") with ``fail_status`` until the wall
    # clock (time.time(), not ``now``) reaches ``fail_until``.
    fail_operation: str = ""
    fail_until: float = 0.0
    fail_status: int = 503
    # Seconds added to the wall clock wherever the emulator reads the time:
    # vault lock expiry, capacity units, the retrieval policy's hour, job completion.
    clock_offset: float = 0.0
    # "on-demand": the service has Expedited capacity for every request;
    # "none": Expedited jobs need a provisioned capacity unit (InsufficientCapacityException otherwise).
    expedited_capacity: str = "on-demand"
    # What a FreeTier data retrieval policy lets through in any 24 hours (10 GiB a month, prorated daily).
    free_tier_bytes_per_day: int = (10 << 30) // 30


settings = EmulatorSettings()
# The settings the running emulator started with: what a reset restores.
startup = EmulatorSettings()
# Requests answered, by operation name: lets a test count InitiateJob calls.
calls: Counter[str] = Counter()


def now() -> float:
    """The emulator's clock: the wall clock moved by ``settings.clock_offset``."""
    return time.time() + settings.clock_offset


def restore_startup_settings() -> None:
    for name, value in vars(startup).items():
        setattr(settings, name, value)
