"""`wa-gateway status`: queue depths and consumers as RabbitMQ sees them, grouped by
channel, and each channel's breaker as the workers last reported it.

`wa-gateway status ID`: that notification and its timeline, from the ledger alone
(commands/notifications.py; no RabbitMQ)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from ..errors import UserError
from ..hookspecs import hookimpl
from ..services import Services
from ..settings import Settings
from .connect import command_services, connected_or_fail
from .notifications import show_notification


async def collect(services: Services) -> dict[str, Any]:
    async with connected_or_fail(services):
        depths = await services.queue_depths()
        breakers = await services.store.get_breakers()
    return {"queues": depths, "breakers": breakers, "channels": channel_queues(services)}


def channel_queues(services: Services) -> dict[str, dict[str, Any]]:
    """Each sender (channel) with its provider and its queues: the work queue, then its
    retry tiers; none for the legacy fallback, which only stands in for `default`."""
    topology = services.topology
    return {
        name: {
            "provider": sender.provider,
            "fallback": sender.fallback,
            "queues": [topology.work_queue(name), *topology.retry_queues_of(name)] if sender.queue else [],
        }
        for name, sender in services.channels.senders.items()
    }


def render(report: dict[str, Any]) -> str:
    """Queues grouped by channel, each channel's breaker after its queues; the dead
    queue, shared by all, first."""
    queues: dict[str, Any] = report["queues"]
    breakers: dict[str, Any] = report["breakers"]
    channels: dict[str, dict[str, Any]] = report.get("channels") or {}
    width = max([20, *(len(name) for name in queues)])
    grouped = {name for channel in channels.values() for name in channel["queues"]}

    def row(name: str) -> str:
        depth = queues.get(name)
        ready, consumers = ("-", "-") if depth is None else depth
        return f"{name:<{width}} {ready!s:>5}  {consumers!s:>9}"

    lines = [f"{'queue':<{width}} ready  consumers"]
    lines += [row(name) for name in queues if name not in grouped]
    for name, channel in channels.items():
        fallback = f", fallback {channel['fallback']}" if channel["fallback"] else ""
        role = "" if channel["queues"] else ", no queue: a fallback only"
        lines += ["", f"channel {name} ({channel['provider']}{fallback}{role})"]
        lines += [row(queue) for queue in channel["queues"] if queue in queues]
        if name in breakers:
            lines.append(_breaker_line(name, breakers[name]))
        elif breakers:
            lines.append(f"breaker {name}: no change reported (closed, as far as the workers said)")
    tail = []
    if not breakers:
        tail.append("breakers: no worker has reported (REDIS_URL shares breaker state between processes)")
    others = {name: snapshot for name, snapshot in breakers.items() if name not in channels}
    if others and channels:
        tail.append("reported for no configured channel (a removed channel, or a release before channels):")
    tail += [_breaker_line(name, snapshot) for name, snapshot in sorted(others.items())]
    return "\n".join([*lines, "", *tail] if tail else lines)


def _breaker_line(name: str, snapshot: dict[str, Any]) -> str:
    return (
        f"breaker {name}: {snapshot['state']} (failures in a row: {snapshot['consecutive_failures']}, "
        f"retry in {snapshot['retry_in']} s)"
    )


def handle(settings: Settings, args: argparse.Namespace) -> int:
    if args.id is not None:
        return show_notification(settings, args.id, as_json=args.json)
    if args.json:
        raise UserError("--json is for one notification: wa-gateway status ID --json")
    services = command_services(settings, args.plugins, "wa-gateway status")
    print(render(asyncio.run(collect(services))))
    return 0


@hookimpl
def register_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("status", help="queue depths and circuit breakers; with an ID, that notification")
    parser.set_defaults(handler=handle)
    parser.add_argument("id", nargs="?", metavar="ID",
                        help="a notification id: show it and its timeline from the ledger (no RabbitMQ)")
    parser.add_argument("--json", action="store_true", help="with an ID: the notification as JSON")
