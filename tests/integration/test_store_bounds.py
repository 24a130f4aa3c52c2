"""The in-process store is bounded, and keeps no statuses where nobody can ask for them
(issue 9, item 6: a worker-only process kept one per sent message, 142 MiB per 100,000)."""

from __future__ import annotations

import tracemalloc

from wa_gateway.models import DeliveryStatus
from wa_gateway.services import Services
from wa_gateway.store import MemoryStore


async def test_worker_only_process_keeps_no_statuses(make_settings, plugins):
    services = Services(make_settings(), plugins, serves_http=False)
    await services.store.put_status(DeliveryStatus(id="a", status="sent"))
    assert await services.store.get_status("a") is None


async def test_memory_store_keeps_at_most_its_bound_and_the_newest():
    store = MemoryStore(max_entries=1000)
    for n in range(1500):
        await store.put_status(DeliveryStatus(id=str(n), status="sent", provider="log"))
    assert await store.get_status("0") is None
    assert (await store.get_status("1499")).status == "sent"
    assert len(store._status) == 1000


async def test_a_kept_status_costs_well_under_a_kibibyte():
    store = MemoryStore(max_entries=10_000)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for n in range(10_000):
        await store.put_status(DeliveryStatus(
            id=f"4f0c2a9e-1b2c-4d5e-8f90-{n:012d}", status="sent", attempts=1, provider="meta",
            provider_message_id=f"wamid.HBgLNjI4MTIzNDU2Nzg5MBUCABIYFjNFQjA{n:08d}",
        ))
    grown = sum(stat.size_diff for stat in tracemalloc.take_snapshot().compare_to(before, "filename"))
    tracemalloc.stop()
    per_entry = grown / 10_000
    print(f"{per_entry:.0f} bytes per kept status")
    assert per_entry < 1024  # was ~1.5 KiB as pydantic objects
