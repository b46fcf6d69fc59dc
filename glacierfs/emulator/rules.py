"""What every API area of the emulator shares: Glacier's error shape, its ids and dates, its input checks.

Kept below the areas so a vault, an upload and a job refuse bad input with the
same codes and messages the service uses, worded in one place.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from datetime import UTC, datetime
from typing import Any

from moto.core.exceptions import JsonRESTError

GiB = 1 << 30
MAX_DESCRIPTION = 1024


class GlacierError(JsonRESTError):
    """An error the way Glacier sends it: JSON body with code, message and type."""

    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__(error_code, message)
        self.code = status
        self.description = json.dumps(
            {"code": error_code, "message": message, "type": "Client" if status < 500 else "Server"}
        )


def not_found(message: str) -> GlacierError:
    return GlacierError(404, "ResourceNotFoundException", message)


def invalid(message: str) -> GlacierError:
    return GlacierError(400, "InvalidParameterValueException", message)


def missing(message: str) -> GlacierError:
    return GlacierError(400, "MissingParameterValueException", message)


def access_denied(message: str) -> GlacierError:
    return GlacierError(403, "AccessDeniedException", message)


def limit_exceeded(message: str) -> GlacierError:
    return GlacierError(400, "LimitExceededException", message)


def iso(epoch: float) -> str:
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def new_id(raw_bytes: int) -> str:
    """An opaque URL-safe id; 103 random bytes give the service's 138 characters."""
    return base64.urlsafe_b64encode(secrets.token_bytes(raw_bytes)).decode().rstrip("=")


def check_description(description: str) -> None:
    if len(description) > MAX_DESCRIPTION:
        raise invalid(f"Invalid archive description: longer than {MAX_DESCRIPTION} characters")
    if any(not 0x20 <= ord(char) <= 0x7E for char in description):
        raise invalid("Invalid archive description: only printable ASCII characters are allowed")


def check_page(limit: str | None, maximum: int) -> int:
    """A page size: the service caps one above its maximum (``aws --page-size 50``) and refuses only nonsense."""
    if limit is None:
        return maximum
    if not limit.isdigit() or int(limit) < 1:
        raise invalid(f"Invalid limit: {limit!r} (a whole number of at least 1)")
    return min(int(limit), maximum)


def parse_date(value: str, what: str) -> float:
    """An ISO 8601 date as the API takes them (``2013-03-20T17:03:43Z``), as epoch seconds."""
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise invalid(f"Invalid {what}: {value!r} is not an ISO 8601 date") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def json_object(body: bytes | str | None, what: str) -> dict[str, Any]:
    """A request body that must be a JSON object; an empty body is an empty object."""
    try:
        value = json.loads(body or b"{}")
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise invalid(f"The {what} is not a JSON object")
    return value


def parse_range(value: str, pattern: str) -> tuple[int, int]:
    match = re.fullmatch(pattern, value.strip())
    if not match:
        raise invalid(f"Invalid range: {value!r}")
    return int(match.group(1)), int(match.group(2))
