"""Connect a one-shot command (`send`, `status`, `dlq …`) to RabbitMQ, or fail with one line.

A long-running process waits for RabbitMQ as long as it takes; a command run by hand
must not: it waits CONNECT_TIMEOUT at most, gives up at once when the credentials are
refused, and turns every way of failing into a UserError that names what to fix.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from ..broker import CONNECTION_ERRORS, BrokerRefused, BrokerUnavailable, shown_amqp_url
from ..errors import UserError
from ..plugins import UnknownProvider
from ..services import Services
from ..store import StoreUnavailable
from ..topology import TopologyMismatch

if TYPE_CHECKING:
    from ..plugins import PluginSet
    from ..settings import Settings

CONNECT_TIMEOUT = 10.0
"""Seconds a one-shot command waits for RabbitMQ to answer (read at each call)."""


def command_services(settings: Settings, plugins: PluginSet, name: str) -> Services:
    """The Services of a one-shot command, named `name` in RabbitMQ's connection list."""
    try:
        return Services(settings, plugins, connection_name=name)
    except UnknownProvider as exc:
        raise UserError(f"WA_PROVIDER: {exc}") from None


@contextlib.asynccontextmanager
async def connected_or_fail(
    services: Services, *, timeout: float | None = None
) -> AsyncIterator[Services]:
    """Open `services`, wait until RabbitMQ answers (CONNECT_TIMEOUT by default), and run
    the body; a broker or store that fails, before or during the body, is a UserError of
    one line."""
    timeout = CONNECT_TIMEOUT if timeout is None else timeout
    url = shown_amqp_url(services.settings.amqp_url)
    async with services.opened():
        try:
            await services.broker.wait_connected(timeout, give_up_if_refused=True)
        except TimeoutError:
            last = services.broker.failure
            why = f" ({_first_line(last)})" if last is not None else ""
            raise UserError(f"RabbitMQ at {url} did not answer within {timeout:g} s{why}") from None
        except BrokerRefused as exc:
            raise UserError(f"{exc}; AMQP_URL is {url}") from None
        except TopologyMismatch as exc:
            raise UserError(str(exc)) from None
        try:
            yield services
        except StoreUnavailable as exc:
            raise UserError(f"{exc}; check REDIS_URL and that Redis is running") from None
        except BrokerUnavailable as exc:
            raise UserError(f"RabbitMQ at {url}: {_first_line(exc)}") from None
        except CONNECTION_ERRORS as exc:
            raise UserError(f"lost the connection to RabbitMQ at {url} ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    """The reason in one line; aiormq's connection errors are (errno, text): the text."""
    args = exc.args
    if len(args) == 2 and isinstance(args[0], int) and isinstance(args[1], str):
        text = args[1]
    else:
        text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
