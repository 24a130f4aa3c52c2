"""The hooks a wa-gateway plugin can implement. A plugin author learns the whole API here.

Hooks are small and synchronous; network work belongs in a provider's async methods.
Implement them with `@wa_gateway.hookimpl` in a module named by an entry point of group
`wa_gateway`.
"""

from __future__ import annotations

from typing import Any

from pluggy import HookimplMarker, HookspecMarker

hookspec = HookspecMarker("wa_gateway")
hookimpl = HookimplMarker("wa_gateway")


@hookspec
def register_providers(register: Any) -> None:
    """Add providers: call `register(name, factory)` once per provider, where `factory` is a Provider subclass."""


@hookspec
def message_delivered(message: Any, receipt: Any) -> None:
    """Observe a message the provider accepted (for audit logs, metrics, databases)."""


@hookspec
def message_dead_lettered(message: Any, reason: str, headers: dict[str, Any]) -> None:
    """Observe a message that went to the dead-letter queue (report it to Sentry, a database …)."""
