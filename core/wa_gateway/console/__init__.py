"""The operator console at /admin: what failed and why, replay it, watch the channels.

Server-rendered (aiohttp + Jinja2, no JavaScript, nothing from a CDN), mounted by the
gateway when GATEWAY_ADMIN_KEYS is set. `app` builds it, `auth` signs operators in,
`views` are its pages, `stats` draws the overview's chart, `live` asks RabbitMQ and the
store, `ledger_reads` the ledger, `forms` reads what a request carries, and `safety`
masks what is shown.
"""

from __future__ import annotations

from .app import make_console

__all__ = ["make_console"]
