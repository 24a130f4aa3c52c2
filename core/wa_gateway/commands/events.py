"""`wa-gateway events`: the events of the catalog (WA_TEMPLATES) and where each goes."""

from __future__ import annotations

import argparse

from ..events import EventCatalog
from ..hookspecs import hookimpl
from ..settings import Settings


def events_table(settings: Settings) -> str:
    catalog = EventCatalog.load(settings.wa_templates, settings.group_aliases)
    lines = [f"events from {catalog.path}:"]
    for name, event in sorted(catalog.events.items()):
        targets = ", ".join(f"{alias} ({settings.group_aliases[alias]})" for alias in event.targets)
        fields = ", ".join(f"{field}: {kind}" for field, kind in event.fields.items()) or "free-form"
        lines.append(f"  {name} -> {targets}")
        lines.append(f"      data: {fields}" + (f"  -- {event.description}" if event.description else ""))
    for name, why in sorted(catalog.disabled.items()):
        lines.append(f"  {name} (disabled: {why})")
    return "\n".join(lines)


def handle(settings: Settings, args: argparse.Namespace) -> int:
    print(events_table(settings))
    return 0


@hookimpl
def register_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("events", help="the events and where each goes")
    parser.set_defaults(handler=handle)
