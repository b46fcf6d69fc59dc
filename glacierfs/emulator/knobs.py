"""The knobs a test turns while the emulator runs, and the count of what it answered.

They live apart from the backend because both faces of the emulator read them:
the HTTP layer injects faults and counts calls, the job outputs corrupt or cut
bytes on request. Tests reach them as ``Emulator.settings`` and ``Emulator.calls``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass


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
    # operation name, e.g. "GetJobOutput") with ``fail_status`` until the clock
    # (time.time()) reaches ``fail_until``.
    fail_operation: str = ""
    fail_until: float = 0.0
    fail_status: int = 503


settings = EmulatorSettings()
# Requests answered, by operation name: lets a test count InitiateJob calls.
calls: Counter[str] = Counter()
