"""Status changes into `wa.ledger`, confirmed: how the worker and the webhooks feed the ledger.

Nobody here waits for the database. A change is published to RabbitMQ with a confirm
before the message it describes is acked (the worker) or the provider is answered (a
webhook), and the ledger writer takes it from there; while the database is down the
changes wait in the queue. While RabbitMQ itself does not take the change (an alarm, a
reconnect), the publish is tried again, holding the message it describes: a change is
never dropped for an outage.
"""

from __future__ import annotations

import logging

from .ledger.changes import LEDGER_CHANGE_TYPE, NotificationFacts, StatusChange, change_key
from .models import Notification
from .publisher import Publisher, UntilTaken
from .topology import Topology

log = logging.getLogger(__name__)

KIND_HEADER = "x-kind"


def facts_of(notification: Notification) -> NotificationFacts:
    return NotificationFacts(
        to=notification.to,
        channel=notification.channel,
        target_kind=notification.target.kind,
        target_address=notification.target.address,
        event=notification.event,
        created_at=notification.created_at,
        callback_url=notification.callback_url,
        body=notification.to_bytes().decode("utf-8") if notification.templates and not notification.use_template else None,
    )


def change_of(
    notification: Notification,
    status: str,
    *,
    attempt: int | None = None,
    generation: str = "",
    **fields: str | int | None,
) -> StatusChange:
    """A worker's change about `notification`, keyed so that every copy of it is one."""
    return StatusChange(
        key=change_key(notification.id, status, attempt, generation),
        id=notification.id,
        status=status,  # type: ignore[arg-type]
        channel=notification.channel,
        attempt=attempt,
        facts=facts_of(notification),
        **fields,  # type: ignore[arg-type]
    )


class LedgerFeed:
    def __init__(self, publisher: Publisher, topology: Topology) -> None:
        self.publisher = publisher
        self.topology = topology
        self._until_taken = UntilTaken("status changes for the ledger")

    @property
    def enabled(self) -> bool:
        return self.topology.ledger

    async def publish(self, change: StatusChange) -> None:
        """Return once RabbitMQ confirmed the change; try again while it cannot take it."""
        if not self.enabled:
            return
        await self._until_taken.run(lambda: self.try_publish(change))

    async def try_publish(self, change: StatusChange) -> None:
        """One confirmed publish: BrokerUnavailable or PublishUncertain when it failed."""
        await self.publisher.publish(
            change.to_bytes(),
            message_id=change.key,
            exchange="",
            routing_key=self.topology.ledger_queue,
            headers={KIND_HEADER: LEDGER_CHANGE_TYPE},
        )
