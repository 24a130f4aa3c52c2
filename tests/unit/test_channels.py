"""Channels (issue 11) without any service: reading WA_CHANNELS and WA_CHANNEL_<NAME>_*,
person aliases and pins, the start-up errors (one line naming the variable, also as
`wa-gateway serve` exiting 2), and routing at POST (pinned alias > the event's channel >
the first channel that can serve the target).

Services are only constructed here: they connect to nothing until opened.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from wa_gateway.channels import DEFAULT, LEGACY_FALLBACK, ChannelPlan, read_channels
from wa_gateway.compose import InvalidNotification, build_notifications, parse_request
from wa_gateway.errors import ConfigError
from wa_gateway.models import Notification
from wa_gateway.plugins import PluginSet
from wa_gateway.provider import ProviderConfigError
from wa_gateway.services import Services
from wa_gateway.settings import Settings, load_settings
from wa_gateway.topology import Topology

from ..conftest import communicate_all

LOGISTIC = "120363195657916590@g.us"
PURCHASE = "120363195657916591@g.us"
BUDI = "+6281234567890"
PHONE_NUMBER_ID = "106540352242922"

# Groups through Watzap, people through Meta: people first, so a person goes to Meta
# and a group (which Meta cannot serve) to Watzap without any pin.
TWO_CHANNELS = {
    "WA_CHANNELS": "people,groups",
    "WA_CHANNEL_GROUPS_PROVIDER": "watzap",
    "WA_CHANNEL_GROUPS_API_KEY": "watzap-api-key",
    "WA_CHANNEL_GROUPS_WATZAP_NUMBER_KEY": "watzap-number-key",
    "WA_CHANNEL_PEOPLE_PROVIDER": "meta",
    "WA_CHANNEL_PEOPLE_API_KEY": "meta-token",
    "WA_CHANNEL_PEOPLE_META_PHONE_NUMBER_ID": PHONE_NUMBER_ID,
    "WA_GROUP_LOGISTIC_ID": LOGISTIC,
    "WA_CONTACT_BUDI_NUMBER": BUDI,
}


def make(env: dict[str, str], **fields: Any) -> Settings:
    """Settings from `env` (what plugins and channels read) plus typed fields; group
    aliases from `env`'s WA_GROUP_<ALIAS>_ID, as load_settings reads them."""
    fields.setdefault("group_aliases", {
        name[len("WA_GROUP_"):-len("_ID")].lower(): value
        for name, value in env.items() if name.startswith("WA_GROUP_") and name.endswith("_ID")
    })
    return load_settings(None, raw_env=env, **fields)


def plan(env: dict[str, str], **fields: Any) -> ChannelPlan:
    return read_channels(make(env, **fields))


def one_line_error(env: dict[str, str], plugins: PluginSet, **fields: Any) -> str:
    """The ConfigError that constructing Services raises: one line."""
    with pytest.raises(ConfigError) as caught:
        Services(make(env, **fields), plugins)
    message = str(caught.value)
    assert "\n" not in message and "\r" not in message, f"not one line: {message!r}"
    return message


def route(services: Services, body: dict[str, Any]) -> list[Notification]:
    return build_notifications(services, parse_request(body))


def channel_of(services: Services, to: str, text: str = "hi") -> str:
    [notification] = route(services, {"to": to, "text": text})
    return notification.channel


def refusal(services: Services, body: dict[str, Any]) -> str:
    with pytest.raises(InvalidNotification) as caught:
        route(services, body)
    return str(caught.value)


# --- the first release's settings: one channel named default --------------------------


def test_legacy_settings_mean_one_default_channel_with_the_first_releases_queues(installed_plugins):
    settings = make({}, wa_provider="watzap", wa_api_key="k", wa_api_url="https://example.test/v1/",
                    wa_send_rate=2.0)
    channels = read_channels(settings)

    assert channels.legacy
    assert channels.routable == (DEFAULT,)
    assert list(channels.senders) == [DEFAULT]
    default = channels.channel(DEFAULT)
    assert (default.provider, default.fallback, default.queue, default.send_rate) == ("watzap", None, True, 2.0)
    assert default.config.api_key == "k"
    assert default.config.api_url == "https://example.test/v1"
    assert default.config.api_key_variable == "WA_API_KEY"
    assert default.config.setting_prefix == ""

    services = Services(settings, installed_plugins)
    assert services.topology.channels == (DEFAULT,)
    assert services.topology.work_queue(DEFAULT) == "wa.notify"
    assert services.topology.all_queues() == Topology(ledger=True).all_queues()


def test_legacy_fallback_is_a_sender_without_a_queue(installed_plugins):
    settings = make({}, wa_provider="watzap", wa_api_key="primary", wa_fallback_provider="meta",
                    wa_fallback_api_key="second", wa_fallback_api_url="https://graph.example.test")
    channels = read_channels(settings)

    assert channels.legacy
    assert channels.routable == (DEFAULT,)
    assert channels.channel(DEFAULT).fallback == LEGACY_FALLBACK
    fallback = channels.channel(LEGACY_FALLBACK)
    assert (fallback.provider, fallback.queue, fallback.fallback) == ("meta", False, None)
    assert fallback.config.api_key == "second"
    assert fallback.config.api_url == "https://graph.example.test"
    assert fallback.config.api_key_variable == "WA_FALLBACK_API_KEY"
    # nothing is routed to it and it has no queue
    services = Services(settings, installed_plugins)
    assert services.topology.channels == (DEFAULT,)
    assert LEGACY_FALLBACK not in services.topology.all_queues()


def test_without_a_fallback_provider_there_is_no_fallback_sender():
    channels = plan({}, wa_provider="log")
    assert list(channels.senders) == [DEFAULT]
    assert channels.channel(DEFAULT).fallback is None


def test_legacy_messages_go_to_the_default_channel(installed_plugins):
    services = Services(make({"WA_GROUP_LOGISTIC_ID": LOGISTIC}, wa_provider="watzap"), installed_plugins)
    assert channel_of(services, "logistic") == DEFAULT


# --- WA_CHANNELS and WA_CHANNEL_<NAME>_* -----------------------------------------------


def test_wa_channels_names_the_channels_in_routing_order_case_and_blanks_ignored():
    env = {
        "WA_CHANNELS": " People , GROUPS,, ",
        "WA_CHANNEL_GROUPS_PROVIDER": "Watzap",
        "WA_CHANNEL_PEOPLE_PROVIDER": "meta",
    }
    channels = plan(env)
    assert channels.routable == ("people", "groups")
    assert not channels.legacy
    assert channels.channel("groups").provider == "watzap"


def test_each_channel_has_its_own_credentials_url_rate_fallback_and_provider_settings():
    env = {
        **TWO_CHANNELS,
        "WA_CHANNEL_GROUPS_API_URL": "https://watzap.example.test/v1/",
        "WA_CHANNEL_GROUPS_SEND_RATE": "0.5",
        "WA_CHANNEL_GROUPS_FALLBACK": "People",
        "WATZAP_NUMBER_KEY": "global-number-key",
    }
    channels = plan(env)

    groups, people = channels.channel("groups"), channels.channel("people")
    assert (groups.provider, groups.send_rate, groups.fallback, groups.queue) == ("watzap", 0.5, "people", True)
    assert groups.config.api_key == "watzap-api-key"
    assert groups.config.api_url == "https://watzap.example.test/v1"
    assert groups.config.api_key_variable == "WA_CHANNEL_GROUPS_API_KEY"
    assert groups.config.setting_prefix == "WA_CHANNEL_GROUPS_"
    # the channel's own provider setting wins over the global one, under the plugin's name
    assert groups.config.settings["WATZAP_NUMBER_KEY"] == "watzap-number-key"
    assert (people.provider, people.send_rate, people.fallback) == ("meta", None, None)
    assert people.config.api_key == "meta-token"
    assert people.config.settings["META_PHONE_NUMBER_ID"] == PHONE_NUMBER_ID


def test_two_channels_may_use_one_provider_with_different_credentials(installed_plugins):
    env = {
        "WA_CHANNELS": "one,two",
        "WA_CHANNEL_ONE_PROVIDER": "watzap",
        "WA_CHANNEL_ONE_API_KEY": "api-one",
        "WA_CHANNEL_ONE_WATZAP_NUMBER_KEY": "number-one",
        "WA_CHANNEL_TWO_PROVIDER": "watzap",
        "WA_CHANNEL_TWO_API_KEY": "api-two",
        "WA_CHANNEL_TWO_WATZAP_NUMBER_KEY": "number-two",
    }
    services = Services(make(env), installed_plugins)
    keys = {}
    for name in ("one", "two"):
        sender = services.channels.channel(name)
        provider = installed_plugins.create(sender.provider, sender.config)
        keys[name] = (provider.api_key, provider.number_key)  # type: ignore[attr-defined]
    assert keys == {"one": ("api-one", "number-one"), "two": ("api-two", "number-two")}


def test_a_missing_provider_setting_names_the_channels_variable(installed_plugins):
    env = {**TWO_CHANNELS}
    del env["WA_CHANNEL_PEOPLE_META_PHONE_NUMBER_ID"]
    sender = plan(env).channel("people")
    with pytest.raises(ProviderConfigError, match="WA_CHANNEL_PEOPLE_META_PHONE_NUMBER_ID is not set"):
        installed_plugins.create(sender.provider, sender.config)
    del env["WA_CHANNEL_PEOPLE_API_KEY"]
    sender = plan(env).channel("people")
    with pytest.raises(ProviderConfigError, match="WA_CHANNEL_PEOPLE_API_KEY is not set"):
        installed_plugins.create(sender.provider, sender.config)


def test_every_channel_gets_a_work_queue_and_retry_tiers_the_default_one_keeps_wa_notify(installed_plugins):
    env = {
        "WA_CHANNELS": "default,people",
        "WA_CHANNEL_DEFAULT_PROVIDER": "watzap",
        "WA_CHANNEL_PEOPLE_PROVIDER": "meta",
    }
    services = Services(make(env, wa_retry_delays=[5, 30]), installed_plugins)
    topology = services.topology
    assert not services.channels.legacy  # WA_CHANNELS=default... uses WA_CHANNEL_DEFAULT_*
    assert topology.work_queues() == ("wa.notify", "wa.notify.people")
    assert topology.retry_queues_of("default") == ("wa.retry.5s", "wa.retry.30s")
    assert topology.retry_queues_of("people") == ("wa.retry.people.5s", "wa.retry.people.30s")
    assert topology.retry_arguments(5, "people")["x-dead-letter-routing-key"] == "wa.notify.people"
    assert set(topology.all_queues()) == {
        "wa.dead", "wa.ledger", "wa.notify", "wa.notify.people",
        "wa.retry.5s", "wa.retry.30s", "wa.retry.people.5s", "wa.retry.people.30s",
    }


def test_person_aliases_are_normalised_like_raw_numbers():
    env = {
        "WA_CONTACT_BUDI_NUMBER": "0812-3456-7890",  # national: the default country applies
        "WA_CONTACT_ANI_NUMBER": "+62 811 1111 1111",
        "WA_CONTACT_EMPTY_NUMBER": " ",
    }
    assert plan(env).people == {"budi": BUDI, "ani": "+6281111111111"}


# --- start-up errors: one line naming the variable ------------------------------------


@pytest.mark.parametrize(
    ("change", "variable", "says"),
    [
        ({"WA_CHANNELS": "people,gr-oups"}, "WA_CHANNELS", "'gr-oups' is not a channel name"),
        ({"WA_CHANNELS": "people,9groups"}, "WA_CHANNELS", "'9groups' is not a channel name"),
        ({"WA_CHANNELS": "people,groups,People"}, "WA_CHANNELS", "'people' is named twice"),
        ({"WA_CHANNELS": ","}, "WA_CHANNELS", "names no channel"),
        ({"WA_CHANNEL_GROUPS_PROVIDER": ""}, "WA_CHANNEL_GROUPS_PROVIDER", "needs a provider"),
        ({"WA_CHANNEL_GROUPS_PROVIDER": "nope"}, "WA_CHANNEL_GROUPS_PROVIDER", "unknown provider 'nope'"),
        ({"WA_CHANNEL_GROUPS_FALLBACK": "nope"}, "WA_CHANNEL_GROUPS_FALLBACK", "names no channel"),
        ({"WA_CHANNEL_GROUPS_FALLBACK": "groups"}, "WA_CHANNEL_GROUPS_FALLBACK", "the channel itself"),
        ({"WA_GROUP_LOGISTIC_CHANNEL": "nope"}, "WA_GROUP_LOGISTIC_CHANNEL", "names no channel"),
        ({"WA_GROUP_LOGISTIC_CHANNEL": "people"}, "WA_GROUP_LOGISTIC_CHANNEL",
         "channel 'people' (meta) cannot send to WhatsApp groups"),
        ({"WA_CONTACT_BUDI_CHANNEL": "nope"}, "WA_CONTACT_BUDI_CHANNEL", "names no channel"),
        ({"WA_GROUP_NOPE_CHANNEL": "groups"}, "WA_GROUP_NOPE_CHANNEL", "there is no alias 'nope'"),
        ({"WA_CHANNEL_NOPE_API_KEY": "x"}, "WA_CHANNEL_NOPE_API_KEY", "has no channel 'nope'"),
        ({"WA_CHANNEL_GROUPS_SEND_RATE": "fast"}, "WA_CHANNEL_GROUPS_SEND_RATE", "not a positive number"),
        ({"WA_CHANNEL_GROUPS_API_URL": "watzap.example"}, "WA_CHANNEL_GROUPS_API_URL", "is not a URL"),
        ({"WA_CONTACT_BUDI_NUMBER": "12345"}, "WA_CONTACT_BUDI_NUMBER", "not an E.164 number"),
        ({"WA_CONTACT_BUDI_NUMBER": "budi"}, "WA_CONTACT_BUDI_NUMBER", "not a phone number"),
        ({"WA_CONTACT_LOGISTIC_NUMBER": BUDI}, "WA_CONTACT_LOGISTIC_NUMBER", "also a group"),
    ],
)
def test_each_channel_mistake_stops_start_up_with_one_line_naming_the_variable(
    change, variable, says, installed_plugins
):
    message = one_line_error({**TWO_CHANNELS, **change}, installed_plugins)
    assert message.startswith(variable), message
    assert says in message


def test_a_channel_setting_without_wa_channels_is_an_error_not_ignored(installed_plugins):
    message = one_line_error({"WA_CHANNEL_PEOPLE_PROVIDER": "meta"}, installed_plugins)
    assert message.startswith("WA_CHANNEL_PEOPLE_PROVIDER is set, but WA_CHANNELS is not")


def test_an_empty_channel_setting_is_not_given():
    assert plan({"WA_CHANNEL_PEOPLE_PROVIDER": ""}).legacy
    assert plan({**TWO_CHANNELS, "WA_CHANNEL_NOPE_API_KEY": ""}).routable == ("people", "groups")


@pytest.mark.parametrize(
    ("fields", "variable"),
    [({"wa_provider": "nope"}, "WA_PROVIDER"), ({"wa_fallback_provider": "nope"}, "WA_FALLBACK_PROVIDER")],
)
def test_legacy_unknown_providers_name_their_own_variable(fields, variable, installed_plugins):
    message = one_line_error({}, installed_plugins, **fields)
    assert message.startswith(f"{variable}: unknown provider 'nope'")


def test_wa_channels_default_alone_names_the_channels_variable(installed_plugins):
    env = {"WA_CHANNELS": "default", "WA_CHANNEL_DEFAULT_PROVIDER": "nope"}
    assert one_line_error(env, installed_plugins).startswith("WA_CHANNEL_DEFAULT_PROVIDER: unknown provider")


def test_an_event_naming_an_unknown_channel_stops_start_up(tmp_path: Path, installed_plugins):
    events = tmp_path / "events.toml"
    events.write_text('[ping]\nto = ["budi"]\ntemplate = "hi"\nchannel = "nope"\n', encoding="utf-8")
    message = one_line_error(TWO_CHANNELS, installed_plugins, wa_templates=str(events))
    assert "[ping] channel 'nope' is not in WA_CHANNELS (people, groups)" in message


def test_an_event_whose_channel_cannot_serve_one_of_its_aliases_stops_start_up(tmp_path: Path, installed_plugins):
    events = tmp_path / "events.toml"
    events.write_text('[ping]\nto = ["budi", "logistic"]\ntemplate = "hi"\nchannel = "people"\n', encoding="utf-8")
    message = one_line_error(TWO_CHANNELS, installed_plugins, wa_templates=str(events))
    assert "[ping] sends to 'logistic'" in message
    assert "channel 'people' (meta) cannot send to WhatsApp groups" in message
    # pinned elsewhere, the alias does not go through the event's channel: fine
    Services(make({**TWO_CHANNELS, "WA_GROUP_LOGISTIC_CHANNEL": "groups"}, wa_templates=str(events)),
             installed_plugins)


# --- routing at POST --------------------------------------------------------------------


@pytest.fixture
def two_channels(installed_plugins) -> Services:
    return Services(make(TWO_CHANNELS), installed_plugins)


def test_a_group_alias_goes_to_watzap_and_a_person_alias_to_meta(two_channels):
    [group] = route(two_channels, {"to": "logistic", "text": "hi"})
    [person] = route(two_channels, {"to": "BUDI", "text": "hi"})
    assert (group.channel, group.target.kind, group.target.address) == ("groups", "group", LOGISTIC)
    assert (person.channel, person.target.kind, person.target.address) == ("people", "phone", BUDI)
    # the queued message carries its channel
    assert Notification.from_bytes(person.to_bytes()).channel == "people"


def test_first_capable_channel_follows_the_order_of_wa_channels(installed_plugins):
    services = Services(make({**TWO_CHANNELS, "WA_CHANNELS": "groups,people"}), installed_plugins)
    assert channel_of(services, "logistic") == "groups"
    assert channel_of(services, "budi") == "groups"  # Watzap sends to people too


def test_person_alias_works_without_raw_targets(two_channels):
    assert not two_channels.settings.wa_allow_raw_targets
    assert channel_of(two_channels, "budi") == "people"
    assert "raw numbers and group ids are off" in refusal(two_channels, {"to": BUDI, "text": "hi"})


def test_a_pinned_alias_beats_the_events_channel_which_beats_the_first_capable(tmp_path: Path, installed_plugins):
    events = tmp_path / "events.toml"
    events.write_text(
        '[to_budi]\nto = ["budi"]\ntemplate = "hi {{ name }}"\nchannel = "groups"\n'
        '[to_budi_plain]\nto = ["budi"]\ntemplate = "hi"\n',
        encoding="utf-8",
    )
    data = {"name": "Budi"}

    services = Services(make(TWO_CHANNELS, wa_templates=str(events)), installed_plugins)
    assert [n.channel for n in route(services, {"event": "to_budi_plain", "data": {}})] == ["people"]
    assert [n.channel for n in route(services, {"event": "to_budi", "data": data})] == ["groups"]
    assert channel_of(services, "budi") == "people"  # the event's channel is the event's only

    pinned = Services(make({**TWO_CHANNELS, "WA_CONTACT_BUDI_CHANNEL": "People"}, wa_templates=str(events)),
                      installed_plugins)
    assert pinned.channels.pins == {"budi": "people"}
    assert [n.channel for n in route(pinned, {"event": "to_budi", "data": data})] == ["people"]

    pinned_group = Services(make({**TWO_CHANNELS, "WA_CONTACT_BUDI_CHANNEL": "groups"}), installed_plugins)
    assert channel_of(pinned_group, "budi") == "groups"


def test_a_target_no_channel_can_serve_is_refused_naming_it_and_why(installed_plugins):
    env = {
        "WA_CHANNELS": "people,sms",
        "WA_CHANNEL_PEOPLE_PROVIDER": "meta",
        "WA_CHANNEL_SMS_PROVIDER": "twilio",
        "WA_GROUP_LOGISTIC_ID": LOGISTIC,
        "WA_CONTACT_BUDI_NUMBER": BUDI,
        "WA_CONTACT_BUDI_CHANNEL": "sms",
    }
    services = Services(make(env), installed_plugins)

    message = refusal(services, {"to": "logistic", "text": "hi"})
    assert message.startswith("to: no channel can send to 'logistic': ")
    assert "channel 'people' (meta) cannot send to WhatsApp groups" in message
    assert "channel 'sms' (twilio) cannot send to WhatsApp groups" in message

    message = refusal(services, {"to": "budi", "text": "x" * 2000})  # pinned to Twilio: 1600 at most
    assert message == (
        "text: no channel can send to 'budi': channel 'sms' (twilio) the text has 2000 characters; "
        "it accepts at most 1600"
    )


def test_one_legacy_channel_keeps_the_first_releases_words(installed_plugins):
    services = Services(make({"WA_GROUP_LOGISTIC_ID": LOGISTIC}, wa_provider="meta"), installed_plugins)
    assert refusal(services, {"to": "logistic", "text": "hi"}) == "to: provider 'meta' cannot send to WhatsApp groups"


# --- `wa-gateway serve` with each bad configuration: exit 2, one stderr line ----------

CLI_CASES = {
    "invalid_name": ({"WA_CHANNELS": "people,Gr_oups"}, "WA_CHANNELS"),
    "duplicate_name": ({"WA_CHANNELS": "people,groups,groups"}, "WA_CHANNELS"),
    "no_provider": ({"WA_CHANNEL_GROUPS_PROVIDER": ""}, "WA_CHANNEL_GROUPS_PROVIDER"),
    "unknown_provider": ({"WA_CHANNEL_GROUPS_PROVIDER": "nope"}, "WA_CHANNEL_GROUPS_PROVIDER"),
    "fallback_unknown": ({"WA_CHANNEL_PEOPLE_FALLBACK": "sms"}, "WA_CHANNEL_PEOPLE_FALLBACK"),
    "fallback_itself": ({"WA_CHANNEL_PEOPLE_FALLBACK": "people"}, "WA_CHANNEL_PEOPLE_FALLBACK"),
    "pin_unknown_channel": ({"WA_CONTACT_BUDI_CHANNEL": "sms"}, "WA_CONTACT_BUDI_CHANNEL"),
    "pin_incapable": ({"WA_GROUP_LOGISTIC_CHANNEL": "people"}, "WA_GROUP_LOGISTIC_CHANNEL"),
    "setting_for_no_channel": ({"WA_CHANNEL_NOPE_API_KEY": "secret-nope"}, "WA_CHANNEL_NOPE_API_KEY"),
    "number_not_e164": ({"WA_CONTACT_BUDI_NUMBER": "12345"}, "WA_CONTACT_BUDI_NUMBER"),
    "missing_credential": ({"WA_CHANNEL_PEOPLE_META_PHONE_NUMBER_ID": ""}, "WA_CHANNEL_PEOPLE_META_PHONE_NUMBER_ID"),
}
LEGACY_CLI_CASES = {
    "channel_without_wa_channels": ({"WA_CHANNEL_PEOPLE_PROVIDER": "meta"}, "WA_CHANNEL_PEOPLE_PROVIDER"),
    "legacy_unknown_fallback": ({"WA_FALLBACK_PROVIDER": "nope"}, "WA_FALLBACK_PROVIDER"),
}


@pytest.fixture(scope="module")
def serve_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess[str]]:
    """`wa-gateway serve` per case, all started at once (each spends a second importing).
    Every case fails before connecting: no broker needed (AMQP_URL points nowhere)."""
    clean = {name: os.environ[name] for name in ("PATH", "HOME") if name in os.environ}
    clean["AMQP_URL"] = "amqp://guest:guest@127.0.0.1:1/"
    cases = {name: {**TWO_CHANNELS, **change} for name, (change, _) in CLI_CASES.items()}
    cases.update({name: change for name, (change, _) in LEGACY_CLI_CASES.items()})
    running = {}
    for name, env in cases.items():
        command = [sys.executable, "-m", "wa_gateway.cli", "--env-file", "", "serve"]
        process = subprocess.Popen(
            command, env={**clean, **env}, cwd=tmp_path_factory.mktemp(name),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        running[name] = (command, process)
    return communicate_all(running, 60)


@pytest.mark.parametrize("case", [*CLI_CASES, *LEGACY_CLI_CASES])
def test_serve_with_a_bad_channel_configuration_exits_2_with_one_line(case, serve_results):
    result = serve_results[case]
    variable = {**CLI_CASES, **LEGACY_CLI_CASES}[case][1]
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("wa-gateway: error: "), lines[0]
    assert variable in lines[0]
    assert "secret-nope" not in lines[0] and "meta-token" not in lines[0]


def test_first_release_sender_settings_beside_wa_channels_are_named_in_one_warning(caplog):
    import logging

    from wa_gateway.channels import read_channels
    from wa_gateway.settings import load_settings

    caplog.set_level(logging.WARNING, logger="wa_gateway.channels")
    settings = load_settings(None, raw_env={
        "WA_CHANNELS": "people", "WA_CHANNEL_PEOPLE_PROVIDER": "log",
        "WA_PROVIDER": "meta", "WA_API_KEY": "secret-token-1234",
    })
    plan = read_channels(settings)
    assert plan.routable == ("people",)
    [record] = [r for r in caplog.records if r.name == "wa_gateway.channels"]
    assert record.getMessage().startswith("WA_PROVIDER, WA_API_KEY ignored: WA_CHANNELS names the senders")
    assert "secret-token-1234" not in record.getMessage()
