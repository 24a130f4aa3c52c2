"""Plugin manager factory: entry points + built-ins, and clear errors for broken ones.

Each call returns a fresh manager, so a test builds one with exactly the plugins it
asks for (`load_entry_points=False` sees none of the machine's installed plugins).
"""

from __future__ import annotations

import argparse
import importlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

import pluggy

from . import hookspecs
from .provider import Capabilities, Provider, ProviderConfig

log = logging.getLogger(__name__)

PROJECT = "wa_gateway"
DEFAULT_PLUGINS = (
    "wa_gateway.providers.log",
    "wa_gateway.providers.fake",
    "wa_gateway.commands.providers",
    "wa_gateway.commands.events",
    "wa_gateway.commands.status",
    "wa_gateway.commands.channels",
    "wa_gateway.commands.dlq",
    "wa_gateway.commands.db",
    "wa_gateway.commands.notifications",
)

ProviderFactory = Callable[[ProviderConfig], Provider]


class UnknownProvider(LookupError):
    """WA_PROVIDER names a provider that no installed plugin registers."""


@dataclass
class PluginSet:
    """A plugin manager with the providers its plugins registered and what went wrong."""

    manager: pluggy.PluginManager
    providers: dict[str, ProviderFactory] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def capabilities(self, name: str) -> Capabilities:
        return self.factory(name).capabilities  # type: ignore[attr-defined]

    def factory(self, name: str) -> ProviderFactory:
        try:
            return self.providers[name]
        except KeyError:
            installed = ", ".join(sorted(self.providers)) or "none"
            hint = f"; broken plugins: {'; '.join(self.problems)}" if self.problems else ""
            raise UnknownProvider(
                f"unknown provider {name!r}; installed providers: {installed}{hint}"
            ) from None

    def create(self, name: str, config: ProviderConfig) -> Provider:
        """Build the named provider; ProviderConfigError says what setting is missing."""
        return self.factory(name)(config)

    def add_commands(self, commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
        """Call every register_commands hook, in registration order (built-ins first);
        a plugin whose hook fails (a name already taken, an exception) is reported by
        name and the others' commands still count."""
        for impl in self.manager.hook.register_commands.get_hookimpls():
            try:
                impl.function(commands=commands)
            except Exception as exc:  # noqa: BLE001 - report the plugin by name, keep the others
                _problem(self, f"{impl.plugin_name}: register_commands failed ({exc})")


def make_plugin_manager(
    *,
    load_entry_points: bool = True,
    extra_plugins: Iterable[ModuleType | object] = (),
) -> PluginSet:
    """A fresh manager: built-ins, then installed entry points, then `extra_plugins`."""
    manager = pluggy.PluginManager(PROJECT)
    manager.add_hookspecs(hookspecs)
    plugins = PluginSet(manager)
    for module_name in DEFAULT_PLUGINS:
        _register(plugins, importlib.import_module(module_name), module_name)
    if load_entry_points:
        for entry_point in entry_points(group=PROJECT):
            try:
                plugin = entry_point.load()
            except Exception as exc:  # noqa: BLE001 - a plugin's import error must not kill the gateway
                _problem(plugins, f"{entry_point.name}: cannot import {entry_point.value} ({exc})")
                continue
            _register(plugins, plugin, entry_point.name)
    for plugin in extra_plugins:
        _register(plugins, plugin, getattr(plugin, "__name__", repr(plugin)))
    _collect_providers(plugins)
    return plugins


def _problem(plugins: PluginSet, text: str) -> None:
    # one line: pluggy's messages span several, and problems end up in one-line errors
    text = "; ".join(line.strip() for line in text.splitlines() if line.strip())
    plugins.problems.append(text)
    log.warning("plugin skipped: %s", text)


def _register(plugins: PluginSet, plugin: Any, name: str) -> None:
    manager = plugins.manager
    if manager.is_registered(plugin):
        return
    if manager.has_plugin(name):
        _problem(plugins, f"{name}: another plugin is already registered under this name")
        return
    try:
        manager.register(plugin, name=name)
        manager.check_pending()
    except (pluggy.PluginValidationError, ValueError) as exc:
        _problem(plugins, f"{name}: {exc}")
    else:
        return
    # register() may fail before registering anything (recent pluggy validates first)
    # or after (check_pending): unregister only what is registered.
    if manager.is_registered(plugin):
        manager.unregister(plugin)


def _refusal(name: Any, factory: Any, registered: dict[str, ProviderFactory]) -> str | None:
    if not isinstance(name, str) or not name.isidentifier():
        return f"provider name {name!r} is not a simple identifier"
    capabilities = getattr(factory, "capabilities", None)
    if not isinstance(capabilities, Capabilities):
        return f"provider {name!r} declares no Capabilities"
    if not capabilities.send_rate > 0 or capabilities.max_text_length < 1:
        return f"provider {name!r} declares an unusable send rate or text length"
    if name in registered:
        return f"provider {name!r} is already registered"
    return None


def _collect_providers(plugins: PluginSet) -> None:
    """Call every register_providers hook, one plugin at a time so a bad one is named."""
    for impl in plugins.manager.hook.register_providers.get_hookimpls():
        source = impl.plugin_name

        def register(name: str, factory: ProviderFactory, _source: str = source) -> None:
            """Add one provider; a refused one is reported and the plugin's others still count."""
            refusal = _refusal(name, factory, plugins.providers)
            if refusal:
                _problem(plugins, f"{_source}: {refusal}")
            else:
                plugins.providers[name] = factory

        try:
            impl.function(register=register)
        except Exception as exc:  # noqa: BLE001 - report the plugin by name, keep the others
            _problem(plugins, f"{source}: register_providers failed ({exc})")
