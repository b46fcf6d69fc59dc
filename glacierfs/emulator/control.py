"""The emulator's knobs over HTTP, for an emulator in another process.

A test of the served emulator (``glacierfs emulator``) cannot reach its
``settings`` object, yet it must move the clock a day ahead, take away Expedited
capacity, or start clean. Two routes beside moto's own ``/moto-api`` serve that;
they are no part of the Glacier API and no Glacier client ever calls them:

- ``GET /moto-api/glacierfs/settings`` answers the settings as JSON;
  ``POST`` with a JSON object sets the knobs it names and answers the result.
- ``POST /moto-api/glacierfs/reset`` forgets every vault, policy and capacity
  unit, and restores the settings the emulator started with.

``configure`` and ``reset`` are the client side of both.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from dataclasses import fields
from typing import Any

from moto.core.common_types import TYPE_RESPONSE
from moto.moto_api._internal import urls as moto_api_urls

from .backend import reset as forget_everything
from .knobs import EXPEDITED_CAPACITY, EmulatorSettings, restore_startup_settings, settings

log = logging.getLogger(__name__)

SETTINGS_PATH = "/moto-api/glacierfs/settings"
RESET_PATH = "/moto-api/glacierfs/reset"


def update_settings(values: Any) -> None:
    """Set the knobs ``values`` names, each checked against its type; nothing changes if one is wrong."""
    if not isinstance(values, dict):
        raise ValueError("the settings must be a JSON object")
    known = {field.name: type(getattr(EmulatorSettings(), field.name)) for field in fields(EmulatorSettings)}
    for name, value in values.items():
        kind = known.get(name)
        if kind is None:
            raise ValueError(f"no such setting: {name!r} (one of {', '.join(sorted(known))})")
        if isinstance(value, bool) or not isinstance(value, (float, int) if kind is float else kind):
            raise ValueError(f"{name} takes a {kind.__name__}, not {value!r}")
        if name == "expedited_capacity" and value not in EXPEDITED_CAPACITY:
            raise ValueError(f"expedited_capacity is one of {', '.join(EXPEDITED_CAPACITY)}, not {value!r}")
    for name, value in values.items():
        setattr(settings, name, float(value) if known[name] is float else value)
    log.info("emulator: settings changed over HTTP: %s", values)


def _json_reply(status: int, payload: Any) -> TYPE_RESPONSE:
    return status, {"content-type": "application/json"}, json.dumps(payload)


def settings_view(request: Any, full_url: str, headers: Any) -> TYPE_RESPONSE:
    if request.method == "POST":
        try:
            update_settings(json.loads(request.get_data() or b"{}"))
        except ValueError as error:
            return _json_reply(400, {"message": str(error)})
    return _json_reply(200, vars(settings))


def reset_view(request: Any, full_url: str, headers: Any) -> TYPE_RESPONSE:
    if request.method != "POST":
        return _json_reply(405, {"message": "POST to reset the emulator"})
    forget_everything()
    restore_startup_settings()
    return _json_reply(200, vars(settings))


def install() -> None:
    """Add the two routes to moto's own; like every route, before the first request."""
    moto_api_urls.url_paths["{0}" + SETTINGS_PATH] = settings_view
    moto_api_urls.url_paths["{0}" + RESET_PATH] = reset_view


def _post(url: str, payload: Any) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"content-type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return dict(json.loads(response.read()))


def configure(endpoint: str, **values: Any) -> dict[str, Any]:
    """Set knobs of the emulator at ``endpoint`` (its URL); the settings as they now are."""
    return _post(endpoint.rstrip("/") + SETTINGS_PATH, values)


def reset(endpoint: str) -> dict[str, Any]:
    """Empty the emulator at ``endpoint`` and give it back the settings it started with."""
    return _post(endpoint.rstrip("/") + RESET_PATH, {})
