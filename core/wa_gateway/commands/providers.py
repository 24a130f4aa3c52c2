"""`wa-gateway providers`: the installed providers, their capabilities, and broken plugins.

It needs no valid settings (they may be what the operator is fixing): with broken
ones it still lists what is installed.
"""

from __future__ import annotations

import argparse

from ..hookspecs import hookimpl
from ..plugins import PluginSet
from ..settings import Settings


def providers_table(plugins: PluginSet, configured: str | None = None) -> str:
    rows = [("provider", "groups", "max text", "send rate/s", "")]
    for name in sorted(plugins.providers):
        caps = plugins.capabilities(name)
        rate = "unlimited" if caps.send_rate == float("inf") else f"{caps.send_rate:g}"
        rows.append((name, "yes" if caps.groups else "no", str(caps.max_text_length), rate,
                     "(configured)" if name == configured else ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    for problem in plugins.problems:
        lines.append(f"broken plugin: {problem}")
    return "\n".join(lines)


def handle(settings: Settings | None, args: argparse.Namespace) -> int:
    print(providers_table(args.plugins, settings.wa_provider if settings else None))
    return 0


@hookimpl
def register_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("providers", help="installed providers and their capabilities")
    parser.set_defaults(handler=handle, needs_settings=False)
