"""`wa-gateway channels`: every sender as the settings configure it, where each alias
goes, and each channel's breaker as the workers last reported it.

A view of the configuration: it never connects to RabbitMQ. Breaker state comes from
the store (Redis, `REDIS_URL`) when there is one that answers; without it the command
says the state is unknown. Credentials are never printed, only whether they are set.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass
from typing import Any

from ..channels import Channel, describe_pace, shown_url
from ..compose import InvalidNotification, choose_channel
from ..hookspecs import hookimpl
from ..services import Services
from ..settings import Settings
from ..store import StoreUnavailable
from ..targets import InvalidTarget, resolve_target
from .connect import command_services

NO_REPORTS = "no worker has reported; REDIS_URL shares it"
_OWN = ("PROVIDER", "API_KEY", "API_URL", "SEND_RATE", "FALLBACK")


@dataclass(frozen=True)
class BreakerReport:
    """What the store says of the breakers: by channel, or why nothing can be said."""

    breakers: dict[str, dict[str, Any]] | None
    unknown_why: str | None = None


async def read_breakers(services: Services) -> BreakerReport:
    """The breakers the workers reported, from the store alone (never RabbitMQ)."""
    try:
        breakers = await services.store.get_breakers()
    except StoreUnavailable as exc:
        return BreakerReport(None, str(exc))
    finally:
        await services.store.close()
    if not breakers and services.settings.redis_url is None:
        return BreakerReport(None, NO_REPORTS)  # this process's own memory: nobody wrote to it
    return BreakerReport(breakers)


@dataclass(frozen=True)
class Routes:
    """Where each alias goes: alias -> (channel, how), and the aliases nothing serves."""

    routed: dict[str, tuple[str, str]]
    unroutable: dict[str, str]


def alias_routes(services: Services) -> Routes:
    """Each alias's channel as POST /notify would choose it without an event: its pin,
    else the first channel in WA_CHANNELS that can serve it (compose.choose_channel)."""
    settings, plan = services.settings, services.channels
    routed: dict[str, tuple[str, str]] = {}
    unroutable: dict[str, str] = {}
    for alias in sorted({*settings.group_aliases, *plan.people}):
        kind = "group" if alias in settings.group_aliases else "person"
        try:
            target = resolve_target(
                alias, settings.group_aliases, allow_raw=False,
                default_country=settings.wa_default_country, people=plan.people,
            )
            channel = choose_channel(services, alias, target, "", None)
        except (InvalidNotification, InvalidTarget) as exc:
            unroutable[alias] = str(exc).removeprefix("to: ")
            continue
        routed[alias] = (channel, f"{kind}, pinned" if alias in plan.pins else kind)
    return Routes(routed, unroutable)


def _rate(services: Services, sender: Channel) -> str:
    """The pace the worker sends at, and which setting decided it."""
    return describe_pace(*sender.pace(
        services.settings.wa_send_rate,
        services.channel_capabilities[sender.name].send_rate,
        legacy=services.channels.legacy,
    ))


def _own_settings(services: Services, sender: Channel) -> list[str]:
    """The provider settings given for this channel alone (names only: values may be secret)."""
    if services.channels.legacy:
        return []
    prefix = f"WA_CHANNEL_{sender.name.upper()}_"
    names = {variable.upper() for variable, value in services.settings.raw_env.items()
             if variable.upper().startswith(prefix) and value.strip()}
    return sorted(name.removeprefix(prefix) for name in names if name.removeprefix(prefix) not in _OWN)


def _breaker(name: str, report: BreakerReport, now: float) -> str:
    if report.breakers is None:
        return f"unknown ({report.unknown_why})"
    snapshot = report.breakers.get(name)
    if snapshot is None:
        return "closed as far as known (no worker has reported a change)"
    details = [f"failures in a row: {snapshot.get('consecutive_failures', '?')}"]
    changed_at = snapshot.get("changed_at")
    if snapshot.get("state") == "open":
        retry_in = float(snapshot.get("retry_in") or 0)
        left = retry_in - (now - changed_at) if isinstance(changed_at, (int, float)) else retry_in
        details.append(f"probe in {left:.0f} s" if left > 0 else "cooldown over: the next message probes")
    if isinstance(changed_at, (int, float)):
        details.append(f"reported {max(0.0, now - changed_at):.0f} s ago")
    return f"{snapshot.get('state', '?')} ({', '.join(details)})"


def channels_table(services: Services, report: BreakerReport, *, now: float | None = None) -> str:
    """Every sender in routing order (the legacy fallback last): provider, capabilities,
    pacing, queues, fallback, aliases and events routed to it, credentials (set or not)
    and breaker."""
    now = time.time() if now is None else now
    plan, topology = services.channels, services.topology
    routes = alias_routes(services)
    if plan.legacy:
        lines = ["one channel, `default` (WA_CHANNELS is not set: WA_PROVIDER and its settings)"]
    else:
        lines = [f"channels in routing order (WA_CHANNELS): {', '.join(plan.routable)}"]
    for name, sender in plan.senders.items():
        caps = services.channel_capabilities[name]
        lines += ["", f"channel {name}", f"  provider:     {sender.provider}"]
        lines.append(
            f"  can send to:  groups {'yes' if caps.groups else 'no'}, "
            f"phone numbers {'yes' if caps.phone_numbers else 'no'}; "
            f"text up to {caps.max_text_length} characters"
        )
        lines.append(f"  pacing:       {_rate(services, sender)}")
        if sender.queue:
            retries = topology.retry_queues_of(name)
            tiers = retries[0] if len(retries) == 1 else f"{retries[0]} … {retries[-1]}"
            lines.append(f"  queue:        {topology.work_queue(name)} (retry tiers {tiers})")
        else:
            lines.append("  queue:        none (WA_FALLBACK_PROVIDER: only `default`'s fallback)")
        lines.append(f"  fallback:     {sender.fallback or 'none'}")
        backed = [other.name for other in plan.senders.values() if other.fallback == name]
        if backed:
            lines.append(f"  fallback for: {', '.join(backed)}")
        if sender.queue:
            aliases = [f"{alias} ({how})" for alias, (channel, how) in routes.routed.items() if channel == name]
            lines.append(f"  aliases:      {', '.join(aliases) or 'none'}")
            events = sorted(event.name for event in services.events.events.values() if event.channel == name)
            if events:
                lines.append(f"  events:       {', '.join(events)} (their `channel`; a pinned alias still goes to its pin)")
        key = "set" if sender.config.api_key else "not set"
        lines.append(f"  api key:      {key} ({sender.config.api_key_variable})")
        lines.append(f"  api url:      {shown_url(sender.config.api_url)}")
        own = _own_settings(services, sender)
        if own:
            lines.append(f"  own settings: {', '.join(own)} (set; values not shown)")
        lines.append(f"  breaker:      {_breaker(name, report, now)}")
    if routes.unroutable:
        lines += ["", "aliases no channel can serve (POST /notify answers 422):"]
        lines += [f"  {alias}: {why}" for alias, why in routes.unroutable.items()]
    return "\n".join(lines)


def handle(settings: Settings, args: argparse.Namespace) -> int:
    services = command_services(settings, args.plugins, "wa-gateway channels")
    report = asyncio.run(read_breakers(services))
    print(channels_table(services, report))
    return 0


@hookimpl
def register_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "channels", help="each channel's provider, capabilities, queues, aliases and breaker"
    )
    parser.set_defaults(handler=handle)

