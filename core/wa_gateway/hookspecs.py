"""The hooks a wa-gateway plugin can implement. A plugin author learns the whole API here.

Implement them with `@wa_gateway.hookimpl` in a module named by an entry point of group
`wa_gateway`; arguments are passed by name, so an implementation may take only the ones
it uses. `register_*` hooks run once, when the plugin manager is made. The observer
hooks (`message_delivered`, `message_dead_lettered`, `message_failed`) run after the message was acked,
each call in a task of its own: they may be `async def` (the worker awaits them there,
so a database or Sentry call never holds up delivery), and one that raises is logged
and ignored. A plain `def` observer runs in the event loop: keep it quick.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pluggy import HookimplMarker, HookspecMarker

if TYPE_CHECKING:
    from .models import Notification
    from .plugins import ProviderFactory
    from .provider import LateFailure, Receipt

hookspec = HookspecMarker("wa_gateway")
hookimpl = HookimplMarker("wa_gateway")


@hookspec
def register_providers(register: Callable[[str, ProviderFactory], None]) -> None:
    """Add providers: call `register(name, factory)` once per provider, where `factory` is a Provider subclass."""


@hookspec
def register_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `wa-gateway` commands: `commands.add_parser(name)`, then `set_defaults(handler=fn)`; `fn(settings, args)` returns the exit status."""


@hookspec
def message_delivered(message: Notification, receipt: Receipt) -> Awaitable[None] | None:
    """Observe a message the provider accepted (for audit logs, metrics, databases); may be `async def`."""


@hookspec
def message_dead_lettered(
    message: Notification | None, reason: str, headers: dict[str, Any]
) -> Awaitable[None] | None:
    """Observe a message that went to the dead-letter queue (`message` is None for an unreadable body); may be `async def`."""


@hookspec
def message_failed(failure: LateFailure) -> Awaitable[None] | None:
    """Observe a message the provider accepted and later reported undeliverable (a `failed` receipt: Meta 131047, Twilio 63016 …), once it is in the ledger; may be `async def`."""
