"""`wa-gateway status`: queue depths and consumers from RabbitMQ, breakers from the store."""

from __future__ import annotations

from wa_gateway.commands.status import collect, render
from wa_gateway.provider import TransientError
from wa_gateway.services import Services

from ..conftest import finish, output, spawn, wait_for


async def test_status_shows_breaker_opened_by_a_worker_in_another_process(
    make_settings, start_gateway, start_worker, scripted, redis_url, plugins
):
    settings = make_settings(wa_provider="scripted", redis_url=redis_url, wa_breaker_threshold=2, wa_breaker_cooldown=60)
    client, services = await start_gateway(settings)
    await start_worker(services)
    scripted.script = [TransientError("down")] * 10
    for _ in range(3):
        await client.post("/notify", json={"to": "logistic", "text": "x"})
    await wait_for(lambda: services.breaker("default").state.value == "open")

    other_process = Services(settings, plugins)  # what `wa-gateway status` builds

    async def reported():
        report = await collect(other_process)
        return report if report["breakers"].get("default", {}).get("state") == "open" else None

    report = await wait_for(reported)
    text = render(report)
    assert "breaker default: open" in text  # breakers are per channel
    assert f"{settings.wa_queue_prefix}.notify" in text


async def test_status_command_prints_depths_and_consumers(make_settings, start_gateway, process_env, prefix):
    client, _ = await start_gateway(make_settings())
    for _ in range(2):
        await client.post("/notify", json={"to": "logistic", "text": "x"})

    process = await spawn("status", process_env())
    code, err = await finish(process, sig=None, timeout=30)
    out, _ = output(process)

    assert code == 0, err
    assert err.strip() == ""  # quiet: no log lines for a one-shot command
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.startswith(prefix)}
    assert rows[f"{prefix}.notify"] == ["2", "0"]
    assert rows[f"{prefix}.dead"] == ["0", "0"]
    assert f"{prefix}.retry.0.2s" in rows
