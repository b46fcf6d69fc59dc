"""Whether a vault lock policy denies deleting an archive of a given age.

A vault lock exists to keep archives for a time (compliance retention): its
policy denies ``glacier:DeleteArchive`` while ``glacier:ArchiveAgeInDays`` is
below some number of days. That is the case evaluated here, with every numeric
operator IAM has. A statement conditioned on anything else cannot be judged by
the emulator: it is skipped, with a log line saying so.
"""

from __future__ import annotations

import json
import logging
import operator
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

AGE_KEY = "glacier:archiveageindays"
NUMERIC: dict[str, Callable[[float, float], bool]] = {
    "numericlessthan": operator.lt,
    "numericlessthanequals": operator.le,
    "numericgreaterthan": operator.gt,
    "numericgreaterthanequals": operator.ge,
    "numericequals": operator.eq,
    "numericnotequals": operator.ne,
}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _names_delete_archive(actions: Any) -> bool:
    return any(
        isinstance(action, str) and action.lower() in ("glacier:deletearchive", "glacier:*", "*")
        for action in _as_list(actions)
    )


def _conditions_hold(conditions: Any, age_days: int) -> bool | None:
    """True or False when every condition could be judged, None when one could not."""
    if not conditions:
        return True
    if not isinstance(conditions, dict):
        return None
    for operator_name, tests in conditions.items():
        compare = NUMERIC.get(str(operator_name).lower())
        if compare is None or not isinstance(tests, dict):
            return None
        for key, values in tests.items():
            if str(key).lower() != AGE_KEY:
                return None
            try:
                limits = [float(value) for value in _as_list(values)]
            except (TypeError, ValueError):
                return None
            if not any(compare(age_days, limit) for limit in limits):
                return False
    return True


def denying_statement(policy: str, age_days: int) -> str | None:
    """The Sid (or position) of the statement that denies deleting an archive ``age_days`` old, if any."""
    try:
        statements = _as_list(json.loads(policy).get("Statement", []))
    except (ValueError, AttributeError):
        return None
    for index, statement in enumerate(statements):
        if not isinstance(statement, dict) or statement.get("Effect") != "Deny":
            continue
        if not _names_delete_archive(statement.get("Action")):
            continue
        name = str(statement.get("Sid") or f"statement {index + 1}")
        holds = _conditions_hold(statement.get("Condition"), age_days)
        if holds is None:
            log.warning("emulator: vault lock %s has a condition the emulator cannot judge; not enforced", name)
        elif holds:
            return name
    return None
