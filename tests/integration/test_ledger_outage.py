"""A database outage stops neither acceptance nor delivery and loses no status change.

PostgreSQL is reached through a TCP proxy the test cuts: while it is cut, POSTs are
answered 202 and the worker sends, the changes wait in `wa.ledger`, and
GET /notify/{id} answers from the store; when the proxy is back, every change is
written, once.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from tests.conftest import wait_for
from tests.tcp_proxy import TcpProxy
from wa_gateway.ledger.engine import create_engine
from wa_gateway.ledger.schema import upgrade


async def _events(postgres_url: str) -> list[tuple[str, str]]:
    connection = await asyncpg.connect(postgres_url)
    try:
        rows = await connection.fetch("SELECT notification_id, status FROM notification_events")
    finally:
        await connection.close()
    return [(row["notification_id"], row["status"]) for row in rows]


async def _post_many(client, count: int, label: str) -> list[str]:
    async def one(index: int) -> str:
        answer = await client.post("/notify", json={"to": "logistic", "text": f"{label} #{index} 🚚 Budi"})
        assert answer.status == 202, await answer.text()
        return (await answer.json())["id"]

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def test_a_database_outage_loses_no_status_change(
    make_settings, start_gateway, start_worker, postgres_url
):
    engine = create_engine(postgres_url)
    await upgrade(engine, postgres_url)
    await engine.dispose()
    parts = urlsplit(postgres_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    through_proxy = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
    settings = make_settings(database_url=through_proxy)
    client, services = await start_gateway(settings)
    await start_worker(services)
    try:
        before = await _post_many(client, 20, "before")
        await wait_for(lambda: _all_sent(postgres_url, before), timeout=15)

        await proxy.cut()
        during = await _post_many(client, 100, "during")
        # delivery goes on: the store says sent for every one
        for notification_id in during:
            await wait_for(lambda i=notification_id: _store_says_sent(client, i), timeout=15)
        # nothing reached the database (read directly, not through the proxy): the
        # changes wait in RabbitMQ, held by the writer (unacked) or ready in the queue
        assert len(await _events(postgres_url)) == 2 * len(before)
        print(f"\n{len(during)} accepted and sent while the database was cut; "
              f"their {2 * len(during)} changes wait in {services.topology.ledger_queue}")

        await proxy.start()
        everyone = before + during
        await wait_for(lambda: _all_sent(postgres_url, everyone), timeout=30)
        events = await _events(postgres_url)
        assert sorted(events) == sorted({(i, s) for i in everyone for s in ("queued", "sent")})
        print(f"after the outage: {len(events)} events for {len(everyone)} notifications, no duplicate")
        body = await (await client.get(f"/notify/{during[0]}")).json()
        assert [e["status"] for e in body["events"]] == ["queued", "sent"]
    finally:
        await proxy.cut()


async def _all_sent(postgres_url: str, ids: list[str]) -> bool:
    sent = {i for i, status in await _events(postgres_url) if status == "sent"}
    return set(ids) <= sent


async def _store_says_sent(client, notification_id: str) -> bool:
    answer = await client.get(f"/notify/{notification_id}")
    return answer.status == 200 and (await answer.json())["status"] == "sent"
