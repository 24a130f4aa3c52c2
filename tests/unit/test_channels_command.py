"""`wa-gateway channels`: the configuration view of every channel, without RabbitMQ or
Redis; credentials never printed. (The breaker read from Redis: tests/integration.)"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import pytest

from wa_gateway import cli, hookimpl
from wa_gateway.commands.channels import BreakerReport, channels_table, read_breakers
from wa_gateway.models import Notification
from wa_gateway.plugins import PluginSet, make_plugin_manager
from wa_gateway.provider import Capabilities, Provider, Receipt
from wa_gateway.services import Services
from wa_gateway.settings import Settings, load_settings
from wa_gateway.store import MemoryStore

LOGISTIC = "120363195657916590@g.us"
PURCHASE = "120363195657916591@g.us"
UNREACHABLE_AMQP = "amqp://guest:guest@127.0.0.1:1/"
SECRETS = {
    "WA_CHANNEL_GROUPS_API_KEY": "wz-secret-api-key-0001",
    "WA_CHANNEL_GROUPS_WATZAP_NUMBER_KEY": "wz-secret-number-key-0002",
    "WA_CHANNEL_PEOPLE_API_KEY": "meta-secret-token-0003",
    "WA_CHANNEL_PEOPLE_META_APP_SECRET": "meta-app-secret-0004",
}


class GroupSender(Provider):
    """Like Watzap: groups and phone numbers, one message a second."""

    name = "groupsender"
    capabilities = Capabilities(groups=True, max_text_length=4096, send_rate=1.0)

    async def send(self, message: Notification) -> Receipt:
        return Receipt(provider=self.name)


class PhoneSender(Provider):
    """Like Meta: phone numbers only."""

    name = "phonesender"
    capabilities = Capabilities(groups=False, max_text_length=1600, send_rate=80.0)

    async def send(self, message: Notification) -> Receipt:
        return Receipt(provider=self.name)


class _Senders:
    @hookimpl
    def register_providers(self, register: Any) -> None:
        register("groupsender", GroupSender)
        register("phonesender", PhoneSender)


@pytest.fixture
def plugins() -> PluginSet:
    return make_plugin_manager(load_entry_points=False, extra_plugins=[_Senders()])


def two_channels(tmp_path: Path, **extra: str) -> Settings:
    """People through the phone sender first, groups through the group sender."""
    events = tmp_path / "events.toml"
    events.write_text(
        '[stock_low]\nto = ["logistic"]\nchannel = "groups"\ntemplate = "stock low"\n'
        '[hello]\nto = ["budi"]\ntemplate = "hi"\n',
        encoding="utf-8",
    )
    raw_env = {
        "WA_CHANNELS": "people,groups",
        "WA_CHANNEL_GROUPS_PROVIDER": "groupsender",
        "WA_CHANNEL_GROUPS_SEND_RATE": "0.5",
        "WA_CHANNEL_PEOPLE_PROVIDER": "phonesender",
        "WA_CHANNEL_PEOPLE_FALLBACK": "groups",
        "WA_CHANNEL_PEOPLE_API_URL": "https://user:url-password-0005@graph.example.com/v23.0?access_token=qs-0006",
        "WA_CONTACT_BUDI_NUMBER": "081234567890",
        "WA_CONTACT_SUPPLIER_NUMBER": "+6281111111111",
        "WA_CONTACT_SUPPLIER_CHANNEL": "groups",
        **SECRETS,
        **extra,
    }
    return load_settings(
        None, raw_env=raw_env, group_aliases={"logistic": LOGISTIC, "purchase": PURCHASE},
        wa_templates=str(events), amqp_url=UNREACHABLE_AMQP,
    )


def section(text: str, channel: str) -> str:
    """The lines of one channel's block."""
    match = re.search(rf"^channel {channel}\n(?:  .*\n?)*", text, flags=re.MULTILINE)
    assert match, f"no block for channel {channel!r} in:\n{text}"
    return match.group(0)


def field(block: str, name: str) -> str:
    match = re.search(rf"^  {name}:\s+(.*)$", block, flags=re.MULTILINE)
    assert match, f"no {name!r} in:\n{block}"
    return match.group(1)


NOT_REPORTED = BreakerReport(None, "no worker has reported; REDIS_URL shares it")


def test_each_channel_shows_provider_capabilities_pacing_queue_fallback_and_its_aliases(
    tmp_path: Path, plugins: PluginSet
) -> None:
    services = Services(two_channels(tmp_path), plugins)
    text = channels_table(services, NOT_REPORTED)

    assert text.splitlines()[0] == "channels in routing order (WA_CHANNELS): people, groups"
    people, groups = section(text, "people"), section(text, "groups")
    assert text.index("channel people") < text.index("channel groups")

    assert field(people, "provider") == "phonesender"
    assert field(people, "can send to") == "groups no, phone numbers yes; text up to 1600 characters"
    assert field(people, "pacing") == "80 messages a second (the provider's)"
    assert field(people, "queue").startswith("wa.notify.people (retry tiers wa.retry.people.5s … ")
    assert field(people, "fallback") == "groups"
    # unpinned person: the first channel that can send to phones; groups skip it
    assert field(people, "aliases") == "budi (person)"
    assert field(people, "api url") == "https://graph.example.com/v23.0"

    assert field(groups, "provider") == "groupsender"
    assert field(groups, "can send to") == "groups yes, phone numbers yes; text up to 4096 characters"
    assert field(groups, "pacing") == "0.5 messages a second (WA_CHANNEL_GROUPS_SEND_RATE)"
    assert field(groups, "queue") == "wa.notify.groups (retry tiers wa.retry.groups.5s … wa.retry.groups.3600s)"
    assert field(groups, "fallback") == "none"
    assert field(groups, "fallback for") == "people"
    assert field(groups, "aliases") == "logistic (group), purchase (group), supplier (person, pinned)"
    assert field(groups, "events").startswith("stock_low ")
    assert field(groups, "own settings").startswith("WATZAP_NUMBER_KEY (set")
    assert field(groups, "api url") == "the provider's own"
    assert "aliases no channel can serve" not in text


def test_the_view_never_prints_a_credential(tmp_path: Path, plugins: PluginSet) -> None:
    services = Services(two_channels(tmp_path), plugins)
    text = channels_table(services, NOT_REPORTED)

    for variable, secret in SECRETS.items():
        assert secret not in text, variable
    assert "url-password-0005" not in text and "qs-0006" not in text and "user:" not in text
    assert field(section(text, "groups"), "api key") == "set (WA_CHANNEL_GROUPS_API_KEY)"
    assert field(section(text, "people"), "api key") == "set (WA_CHANNEL_PEOPLE_API_KEY)"
    assert field(section(text, "people"), "own settings").startswith("META_APP_SECRET (set; values not shown)")


def test_legacy_settings_are_channel_default_and_the_fallback_sender_without_a_queue(
    plugins: PluginSet,
) -> None:
    settings = load_settings(
        None, wa_provider="phonesender", wa_fallback_provider="groupsender", wa_send_rate=3,
        wa_api_key="legacy-secret-key-0007", group_aliases={"logistic": LOGISTIC}, amqp_url=UNREACHABLE_AMQP,
        raw_env={"WA_CONTACT_BUDI_NUMBER": "+6281234567890"},
    )
    text = channels_table(Services(settings, plugins), NOT_REPORTED)

    assert text.splitlines()[0].startswith("one channel, `default`")
    default, fallback = section(text, "default"), section(text, "fallback")
    assert field(default, "queue") == "wa.notify (retry tiers wa.retry.5s … wa.retry.3600s)"
    assert field(default, "fallback") == "fallback"
    assert field(default, "pacing") == "3 messages a second (WA_SEND_RATE)"
    assert field(default, "aliases") == "budi (person)"
    assert field(default, "api key") == "set (WA_API_KEY)"
    assert field(fallback, "provider") == "groupsender"
    assert field(fallback, "queue").startswith("none")
    assert field(fallback, "api key") == "not set (WA_FALLBACK_API_KEY)"
    assert "aliases" not in fallback
    # as at POST: the legacy channel checks the primary's capabilities only
    assert "aliases no channel can serve (POST /notify answers 422):\n  logistic: provider 'phonesender'" in text
    assert "legacy-secret-key-0007" not in text


def test_without_redis_the_breaker_is_unknown(tmp_path: Path, plugins: PluginSet) -> None:
    services = Services(two_channels(tmp_path), plugins)  # no REDIS_URL: this process's memory
    text = channels_table(services, asyncio.run(read_breakers(services)))
    for channel in ("people", "groups"):
        assert field(section(text, channel), "breaker") == "unknown (no worker has reported; REDIS_URL shares it)"


def test_breakers_reported_to_the_store_are_shown_by_channel(tmp_path: Path, plugins: PluginSet) -> None:
    store = MemoryStore()
    now = time.time()
    asyncio.run(store.put_breaker(
        "groups", {"state": "open", "consecutive_failures": 5, "retry_in": 30.0, "changed_at": now - 10}
    ))
    services = Services(two_channels(tmp_path), plugins, store=store)
    text = channels_table(services, asyncio.run(read_breakers(services)), now=now)

    assert field(section(text, "groups"), "breaker") == "open (failures in a row: 5, probe in 20 s, reported 10 s ago)"
    assert field(section(text, "people"), "breaker").startswith("closed as far as known")



def test_the_command_runs_without_rabbitmq_and_prints_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    restore_logging: None, plugins: PluginSet,
) -> None:
    monkeypatch.setattr(cli, "make_plugin_manager", lambda: plugins)
    env = tmp_path / "channels.env"
    settings = two_channels(tmp_path)
    lines = [f"{name}={value}" for name, value in settings.raw_env.items()]
    lines += [f"WA_GROUP_LOGISTIC_ID={LOGISTIC}", f"WA_TEMPLATES={settings.wa_templates}",
              f"AMQP_URL={UNREACHABLE_AMQP}"]
    env.write_text("\n".join(lines) + "\n", encoding="utf-8")

    started = time.monotonic()
    assert cli.main(["--env-file", str(env), "channels"]) == 0
    out, err = capsys.readouterr()
    assert time.monotonic() - started < 5  # never waited for RabbitMQ
    assert err == ""
    assert "channel people" in out and "channel groups" in out
    assert field(section(out, "groups"), "aliases") == "logistic (group), supplier (person, pinned)"
    for secret in SECRETS.values():
        assert secret not in out


def test_channels_is_a_built_in_command(plugins: PluginSet) -> None:
    registered = {impl.plugin_name for impl in plugins.manager.hook.register_commands.get_hookimpls()}
    assert "wa_gateway.commands.channels" in registered
