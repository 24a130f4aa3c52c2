"""The aiohttp application's typed keys, shared by the gateway's handler modules."""

from __future__ import annotations

from aiohttp import web

from .services import Services

SERVICES = web.AppKey("services", Services)
STOPPING = web.AppKey("stopping", dict)
"""{"value": True} once the process stops taking requests."""
