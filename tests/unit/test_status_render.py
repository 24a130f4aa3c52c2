"""`wa-gateway status` rendering: queues grouped by channel, breakers by channel name."""

from __future__ import annotations

from typing import Any

from wa_gateway.commands.status import channel_queues, render
from wa_gateway.plugins import make_plugin_manager
from wa_gateway.services import Services
from wa_gateway.settings import load_settings

OPEN = {"state": "open", "consecutive_failures": 5, "retry_in": 30.0}


def report(raw_env: dict[str, str], breakers: dict[str, Any], **settings: Any) -> dict[str, Any]:
    services = Services(load_settings(None, raw_env=raw_env, **settings), make_plugin_manager(load_entry_points=False))
    queues = {name: (index, 1) for index, name in enumerate(services.topology.all_queues())}
    return {"queues": queues, "breakers": breakers, "channels": channel_queues(services)}


def blocks(text: str) -> list[list[str]]:
    return [block.splitlines() for block in text.split("\n\n")]


def test_each_channel_lists_its_own_queues_and_breaker() -> None:
    raw_env = {
        "WA_CHANNELS": "groups,people",
        "WA_CHANNEL_GROUPS_PROVIDER": "log",
        "WA_CHANNEL_PEOPLE_PROVIDER": "fake",
        "WA_CHANNEL_PEOPLE_FALLBACK": "groups",
    }
    text = render(report(raw_env, {"people": OPEN}, wa_retry_delays=[5, 30]))
    head, groups, people = blocks(text)

    assert head[0].split() == ["queue", "ready", "consumers"]
    assert [line.split()[0] for line in head[1:]] == ["wa.dead", "wa.ledger"]
    assert groups[0] == "channel groups (log)"
    assert [line.split()[0] for line in groups[1:4]] == ["wa.notify.groups", "wa.retry.groups.5s", "wa.retry.groups.30s"]
    assert groups[4] == "breaker groups: no change reported (closed, as far as the workers said)"
    assert people[0] == "channel people (fake, fallback groups)"
    assert [line.split()[0] for line in people[1:4]] == ["wa.notify.people", "wa.retry.people.5s", "wa.retry.people.30s"]
    assert people[4].startswith("breaker people: open (failures in a row: 5")
    # rows stay "<queue> <ready> <consumers>", whatever the name's length
    assert all(len(line.split()) == 3 for block in (groups, people) for line in block[1:4])


def test_legacy_channel_keeps_its_queues_and_the_fallback_has_none() -> None:
    text = render(report({}, {"default": OPEN, "meta": OPEN}, wa_fallback_provider="fake"))

    assert "channel default (log, fallback fallback)\nwa.notify " in text
    assert "breaker default: open" in text
    assert "channel fallback (fake, no queue: a fallback only)\nbreaker fallback: no change reported" in text
    # a breaker named by a release before channels (the provider's name) is not hidden
    assert text.endswith(
        "reported for no configured channel (a removed channel, or a release before channels):\n"
        "breaker meta: open (failures in a row: 5, retry in 30.0 s)"
    )


def test_no_breaker_reported() -> None:
    text = render(report({}, {}))
    assert text.endswith("\n\nbreakers: no worker has reported (REDIS_URL shares breaker state between processes)")
    assert "no change reported" not in text
