"""`wa-gateway channels` shows each channel's breaker as a worker in another process
reported it to Redis, without connecting to RabbitMQ."""

from __future__ import annotations

import re

from wa_gateway.commands.channels import channels_table, read_breakers
from wa_gateway.provider import TransientError
from wa_gateway.services import Services

from ..conftest import wait_for

TWO_CHANNELS = {
    "WA_CHANNELS": "groups,people",
    "WA_CHANNEL_GROUPS_PROVIDER": "scripted",
    "WA_CHANNEL_GROUPS_API_KEY": "groups-secret-key-0001",
    "WA_CHANNEL_PEOPLE_PROVIDER": "log",
}


def breaker_of(text: str, channel: str) -> str:
    match = re.search(rf"^channel {channel}\n(?:  .*\n)*?  breaker:\s+(.*)$", text, flags=re.MULTILINE)
    assert match, text
    return match.group(1)


async def test_channels_shows_the_breaker_a_worker_opened_read_from_redis(
    make_settings, start_gateway, start_worker, scripted, redis_url, plugins
):
    settings = make_settings(
        raw_env=TWO_CHANNELS, redis_url=redis_url, wa_breaker_threshold=2, wa_breaker_cooldown=60
    )
    client, services = await start_gateway(settings)
    await start_worker(services)
    scripted.script = [TransientError("down")] * 10
    for _ in range(3):
        response = await client.post("/notify", json={"to": "logistic", "text": "x"})
        assert response.status == 202
    await wait_for(lambda: services.breaker("groups").state.value == "open")

    # what `wa-gateway channels` builds: another process, and no RabbitMQ to ask
    offline = settings.model_copy(update={"amqp_url": "amqp://guest:guest@127.0.0.1:1/"})

    async def reported():
        command = Services(offline, plugins)
        text = channels_table(command, await read_breakers(command))
        return text if breaker_of(text, "groups").startswith("open") else None

    text = await wait_for(reported)
    assert breaker_of(text, "groups").startswith("open (failures in a row: ")
    assert breaker_of(text, "people") == "closed as far as known (no worker has reported a change)"
    assert "groups-secret-key-0001" not in text
