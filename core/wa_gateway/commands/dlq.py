"""`wa-gateway dlq list | replay | purge`: the operator's tools for the dead-letter queue.

It holds notifications and status callbacks (`x-kind: callback`): a notification goes
back to its channel's work queue, a callback to `<prefix>.callbacks`, attempts reset.

Reading uses basic.get without ack and closes the channel at the end, so every
message not explicitly taken goes back where it was: `list` leaves the queue as it
was, and an interrupted `replay` loses nothing (a dead copy is acked only after its
replay copy was confirmed in the work queue).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from ..callback_jobs import CALLBACK_KIND
from ..callback_sender import CALLBACK_URL_HEADER
from ..channels import DEFAULT
from ..errors import UserError
from ..hookspecs import hookimpl
from ..ledger_feed import KIND_HEADER
from ..models import DeliveryStatus
from ..publisher import REPLAYED_AT, header_int
from ..services import Services
from ..settings import Settings
from ..store import StoreUnavailable
from .connect import command_services, connected_or_fail

REASON_HEADERS = ("x-attempts", "x-error", "x-last-error", "x-provider", "x-channel", "x-provider-status",
                  "x-provider-code", "x-first-failed-at", "x-dead-at", "x-death", CALLBACK_URL_HEADER)


@dataclass(frozen=True)
class DeadMessage:
    id: str
    target: str
    reason: str
    attempts: int
    first_failed_at: str
    channel: str = DEFAULT
    """The channel whose queue it goes back to: the message's own, as chosen at POST."""
    callback: bool = False
    """A status callback (`x-kind: callback`): it goes back to the callback queue, and
    `target` is its URL's host."""

    @classmethod
    def read(cls, message: AbstractIncomingMessage) -> DeadMessage:
        headers = message.headers or {}
        if headers.get(KIND_HEADER) == CALLBACK_KIND:
            return cls._callback(message, headers)
        channel = str(headers.get("x-channel") or DEFAULT)
        try:
            body = json.loads(message.body)
            target = str(body.get("to", "?")) if isinstance(body, dict) else "?"
            if isinstance(body, dict) and isinstance(body.get("channel"), str):
                channel = body["channel"]
        except ValueError:
            target = "(unparseable)"
        return cls(
            id=message.message_id or "?",
            target=target,
            reason=str(headers.get("x-error", _death_reason(headers))),
            attempts=header_int(headers, "x-attempts"),
            first_failed_at=str(headers.get("x-first-failed-at", "")),
            channel=channel,
        )

    @classmethod
    def _callback(cls, message: AbstractIncomingMessage, headers: dict[str, Any]) -> DeadMessage:
        url = headers.get(CALLBACK_URL_HEADER)
        if not isinstance(url, str):  # dead-lettered by RabbitMQ (the delivery limit): the job's
            try:
                body = json.loads(message.body)
                url = body.get("url") if isinstance(body, dict) else None
            except ValueError:
                url = None
        try:
            host = urlsplit(url).hostname if isinstance(url, str) else None
        except ValueError:
            host = None
        return cls(
            id=message.message_id or "?",
            target=host or "(unreadable callback)",
            reason=str(headers.get("x-error", _death_reason(headers))),
            attempts=header_int(headers, "x-attempts"),
            first_failed_at=str(headers.get("x-first-failed-at", "")),
            callback=True,
        )


def _death_reason(headers: dict[str, Any]) -> str:
    """RabbitMQ's own reason (delivery_limit, expired …) for messages it dead-lettered."""
    deaths = headers.get("x-death") or []
    if deaths and isinstance(deaths[0], dict):
        return f"{deaths[0].get('reason', 'unknown')} (dead-lettered by RabbitMQ)"
    return "unknown"


@contextlib.asynccontextmanager
async def _dead_messages(services: Services) -> AsyncIterator[tuple[AbstractChannel, list[AbstractIncomingMessage]]]:
    """Every message of the dead queue, unacked; the ones not acked go back on exit."""
    channel = await services.broker.channel()
    try:
        queue = await channel.declare_queue(services.topology.dead, durable=True)
        messages = []
        while (message := await queue.get(no_ack=False, fail=False)) is not None:
            messages.append(message)
        yield channel, messages
    finally:
        await channel.close()


async def list_dead(services: Services) -> list[DeadMessage]:
    async with connected_or_fail(services), _dead_messages(services) as (_, messages):
        return [DeadMessage.read(m) for m in messages]


async def replay(services: Services, ids: set[str] | None, *, dry_run: bool) -> list[DeadMessage]:
    """Send dead messages back with their attempts reset: a notification to its channel's
    work queue, a status callback to the callback queue.

    A message of a channel that is no longer configured stays dead (UserError after
    the others are replayed): sending it through another channel is the operator's call.
    So does a callback while callbacks are off here.
    """
    replayed = []
    stranded = []
    async with connected_or_fail(services), _dead_messages(services) as (_, messages):
        for message in messages:
            if ids is not None and message.message_id not in ids:
                continue
            dead = DeadMessage.read(message)
            why = _stranded(services, dead)
            if why:
                stranded.append((dead, why))
                continue
            replayed.append(dead)
            if dry_run:
                continue
            headers = {k: v for k, v in (message.headers or {}).items() if k not in REASON_HEADERS}
            headers["x-replayed"] = True
            if dead.callback:  # through the default exchange, as the ledger writer queues it
                exchange, routing_key = "", services.topology.callback_queue
            else:
                headers[REPLAYED_AT] = datetime.now(UTC).isoformat()  # the ledger's "queued again"
                exchange, routing_key = services.topology.work, services.topology.work_queue(dead.channel)
            await services.publisher.publish(
                message.body,
                message_id=message.message_id or "",
                exchange=exchange,
                routing_key=routing_key,
                headers=headers,
            )
            await message.ack()
            if message.message_id and not dead.callback:
                with contextlib.suppress(StoreUnavailable):  # the worker writes the next status
                    await services.store.put_status(DeliveryStatus(id=message.message_id, status="queued"))
    if stranded:
        raise UserError(
            f"replayed {len(replayed)}; left in {services.topology.dead}: "
            + ", ".join(f"{m.id} ({why})" for m, why in stranded)
        )
    return replayed


def _stranded(services: Services, dead: DeadMessage) -> str | None:
    """Why a dead message cannot go back now, or None."""
    if dead.callback:
        if services.topology.callbacks:
            return None
        return "a status callback; callbacks are off here: GATEWAY_CALLBACK_SECRET is not set, or WA_LEDGER=false"
    if dead.channel in services.topology.channels:
        return None
    return f"channel {dead.channel!r} is not in WA_CHANNELS"


async def purge(services: Services) -> int:
    async with connected_or_fail(services):
        channel = await services.broker.channel()
        try:
            queue = await channel.declare_queue(services.topology.dead, durable=True)
            result = await queue.purge()
            return result.message_count or 0
        finally:
            await channel.close()


def table(messages: list[DeadMessage]) -> str:
    rows = [("id", "target", "attempts", "first failure", "reason")]
    rows += [(m.id, m.target, str(m.attempts), m.first_failed_at, m.reason) for m in messages]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True)) + "  " + row[4]
        for row in rows
    )


def handle(settings: Settings, args: argparse.Namespace) -> int:
    if args.dlq_command == "replay" and not args.all and not args.id:
        raise UserError("say which messages: --id ID (repeatable) or --all")
    if args.dlq_command == "purge" and not args.yes:
        raise UserError("purge deletes every dead message for good; add --yes to do it")
    services = command_services(settings, args.plugins, "wa-gateway dlq")
    if args.dlq_command == "list":
        messages = asyncio.run(list_dead(services))
        print(table(messages) if messages else f"{services.topology.dead} is empty")
    elif args.dlq_command == "replay":
        ids = None if args.all else set(args.id)
        done = asyncio.run(replay(services, ids, dry_run=args.dry_run))
        verb = "would replay" if args.dry_run else "replayed"
        print(f"{verb} {len(done)} message(s)")
        for m in done:
            print(f"  {m.id}  {m.target}  ({m.reason})")
        missing = (ids or set()) - {m.id for m in done}
        if missing:
            raise UserError(f"not in {services.topology.dead}: {', '.join(sorted(missing))}")
    elif args.dlq_command == "purge":
        print(f"purged {asyncio.run(purge(services))} message(s)")
    return 0


@hookimpl
def register_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dlq = commands.add_parser("dlq", help="list, replay or purge dead messages")
    dlq.set_defaults(handler=handle)
    sub = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    sub.add_parser("list", help="show dead messages (the queue stays as it was)")
    rep = sub.add_parser("replay", help="send dead messages back to the work queue (callbacks: to the callback queue)")
    rep.add_argument("--id", action="append", help="a message id (repeatable)")
    rep.add_argument("--all", action="store_true", help="every dead message")
    rep.add_argument("--dry-run", action="store_true", help="show what would be replayed")
    pur = sub.add_parser("purge", help="delete every dead message")
    pur.add_argument("--yes", action="store_true", help="confirm")
