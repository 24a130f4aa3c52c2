"""`wa-gateway status`: queue depths and consumers as RabbitMQ sees them, breakers as the
worker last reported them."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from ..hookspecs import hookimpl
from ..services import Services
from ..settings import Settings
from .connect import command_services, connected_or_fail


async def collect(services: Services) -> dict[str, Any]:
    async with connected_or_fail(services):
        depths = await services.queue_depths()
        breakers = await services.store.get_breakers()
    return {"queues": depths, "breakers": breakers}


def render(report: dict[str, Any]) -> str:
    lines = ["queue                ready  consumers"]
    for name, depth in report["queues"].items():
        ready, consumers = ("-", "-") if depth is None else depth
        lines.append(f"{name:<20} {ready!s:>5}  {consumers!s:>9}")
    breakers = report["breakers"]
    lines.append("")
    if not breakers:
        lines.append("breakers: no worker has reported (REDIS_URL shares breaker state between processes)")
    for name, snapshot in sorted(breakers.items()):
        lines.append(
            f"breaker {name}: {snapshot['state']} (failures in a row: {snapshot['consecutive_failures']}, "
            f"retry in {snapshot['retry_in']} s)"
        )
    return "\n".join(lines)


def handle(settings: Settings, args: argparse.Namespace) -> int:
    services = command_services(settings, args.plugins, "wa-gateway status")
    print(render(asyncio.run(collect(services))))
    return 0


@hookimpl
def register_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("status", help="queue depths and circuit breakers")
    parser.set_defaults(handler=handle)
