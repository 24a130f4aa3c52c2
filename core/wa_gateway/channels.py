"""Channels: several senders in one deployment, read from the environment.

A channel is one configured sender: a provider with its own credentials, breaker,
pacing, work queue and fallback. `WA_CHANNELS=groups,people` names them in routing
order, each configured by `WA_CHANNEL_<NAME>_*`; without `WA_CHANNELS` the first
release's settings (`WA_PROVIDER`, `WA_API_KEY`, `WA_API_URL`, `WA_FALLBACK_*`,
`WA_SEND_RATE`) mean one channel named `default`, so every existing .env keeps its
meaning. Its legacy fallback provider becomes a sender named `fallback` that is used
only as `default`'s fallback: it has no queue of its own and nothing is routed to it.

People get aliases too (`WA_CONTACT_<ALIAS>_NUMBER`), and any alias may be pinned to a
channel (`WA_GROUP_<ALIAS>_CHANNEL`, `WA_CONTACT_<ALIAS>_CHANNEL`). Every mistake is
one ConfigError line naming the variable.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit, urlunsplit

from .errors import ConfigError
from .provider import ProviderConfig
from .settings import Settings
from .targets import InvalidTarget, normalise_phone

log = logging.getLogger(__name__)

DEFAULT = "default"
LEGACY_FALLBACK = "fallback"
CHANNEL_NAME = re.compile(r"[a-z][a-z0-9]{0,31}")
"""Lower-case letters and digits: `WA_CHANNEL_<NAME>_<SETTING>` must split one way only."""

_CHANNEL_VARIABLE = re.compile(r"^WA_CHANNEL_([A-Z0-9]+)_(.+)$", re.IGNORECASE)
_CONTACT_NUMBER = re.compile(r"^WA_CONTACT_([A-Z0-9_]+)_NUMBER$", re.IGNORECASE)
_PIN = re.compile(r"^WA_(GROUP|CONTACT)_([A-Z0-9_]+)_CHANNEL$", re.IGNORECASE)
_FIRST_RELEASE_SENDER = (
    "WA_PROVIDER", "WA_API_KEY", "WA_API_URL", "WA_FALLBACK_PROVIDER", "WA_FALLBACK_API_KEY", "WA_FALLBACK_API_URL",
)
"""The first release's sender settings: with WA_CHANNELS they mean nothing (a warning says so)."""
_OWN_SETTINGS = ("PROVIDER", "API_KEY", "API_URL", "SEND_RATE", "FALLBACK")


@dataclass(frozen=True)
class Channel:
    """One sender. `queue` is False for the legacy fallback, which is only a fallback."""

    name: str
    provider: str
    config: ProviderConfig
    send_rate: float | None = None
    fallback: str | None = None
    queue: bool = True

    def pace(self, inherited: float | None, declared: float, *, legacy: bool) -> tuple[float, str]:
        """Messages a second the worker sends at, and the setting that decided it: the
        channel's own rate, else WA_SEND_RATE (`inherited`), else the provider's `declared`."""
        if self.send_rate and not legacy:
            return self.send_rate, f"WA_CHANNEL_{self.name.upper()}_SEND_RATE"
        if self.send_rate or inherited:
            return (self.send_rate or inherited or declared), "WA_SEND_RATE"
        return declared, "the provider's"


def describe_pace(rate: float, source: str) -> str:
    """A channel's pace as `channels` and the console show it."""
    if math.isinf(rate):
        return f"unlimited ({source})"
    return f"{rate:g} message{'' if rate == 1 else 's'} a second ({source})"


def shown_url(url: str | None) -> str:
    """A provider's URL without user, password, query or fragment (where a credential
    could hide), as `channels` and the console show it."""
    if not url:
        return "the provider's own"
    try:
        parts = urlsplit(url)
        netloc = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    except ValueError:
        return "(not shown: not a URL)"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@dataclass(frozen=True)
class ChannelPlan:
    """Every sender, the routable ones in routing order, and the alias directory."""

    senders: dict[str, Channel]
    routable: tuple[str, ...]
    people: dict[str, str] = field(default_factory=dict)
    """alias -> +E.164, from WA_CONTACT_<ALIAS>_NUMBER."""
    pins: dict[str, str] = field(default_factory=dict)
    """alias -> channel name, from WA_GROUP_/WA_CONTACT_<ALIAS>_CHANNEL."""
    legacy: bool = True
    """One `default` channel from the first release's settings (WA_CHANNELS unset); a
    plan from WA_CHANNELS is never legacy, not even `WA_CHANNELS=default`, whose
    provider is WA_CHANNEL_DEFAULT_PROVIDER."""

    def channel(self, name: str) -> Channel:
        return self.senders[name]


def read_channels(settings: Settings) -> ChannelPlan:
    """The channels the settings describe; ConfigError (one line) for any mistake."""
    env = {name.upper(): value for name, value in settings.raw_env.items()}
    names = _channel_names(env.get("WA_CHANNELS", ""))
    senders = _legacy(settings, env) if names is None else _named(settings, env, names)
    ignored = [name for name in _FIRST_RELEASE_SENDER if names is not None and env.get(name, "").strip()]
    if ignored:
        log.warning("%s ignored: WA_CHANNELS names the senders (set WA_CHANNEL_<NAME>_* instead)",
                    ", ".join(ignored))
    routable = tuple(name for name, sender in senders.items() if sender.queue)
    for sender in senders.values():
        if sender.fallback is not None and sender.fallback not in senders:
            raise ConfigError(
                f"WA_CHANNEL_{sender.name.upper()}_FALLBACK={sender.fallback!r} names no channel "
                f"(channels: {', '.join(routable)})"
            )
        if sender.fallback == sender.name:
            raise ConfigError(f"WA_CHANNEL_{sender.name.upper()}_FALLBACK names the channel itself")
    people = _people(env, settings.wa_default_country, settings.group_aliases)
    pins = _pins(env, routable, settings.group_aliases, people)
    return ChannelPlan(senders=senders, routable=routable, people=people, pins=pins, legacy=names is None)


def _channel_names(value: str) -> list[str] | None:
    if not value.strip():
        return None
    names = [part.strip().lower() for part in value.split(",") if part.strip()]
    if not names:
        raise ConfigError(f"WA_CHANNELS={value!r} names no channel (e.g. WA_CHANNELS=groups,people)")
    seen: set[str] = set()
    for name in names:
        if not CHANNEL_NAME.fullmatch(name):
            raise ConfigError(
                f"WA_CHANNELS: {name!r} is not a channel name (lower-case letters and digits, "
                "starting with a letter, at most 32)"
            )
        if name in seen:
            raise ConfigError(f"WA_CHANNELS: {name!r} is named twice")
        seen.add(name)
    return names


def _legacy(settings: Settings, env: Mapping[str, str]) -> dict[str, Channel]:
    for variable in sorted(env):
        match = _CHANNEL_VARIABLE.match(variable)
        # e.g. WA_CHANNEL_PEOPLE_PROVIDER without WA_CHANNELS: never silently ignored
        if match and env[variable].strip():
            raise ConfigError(
                f"{variable} is set, but WA_CHANNELS is not: there is no channel "
                f"{match.group(1).lower()!r} (set WA_CHANNELS to name the channels)"
            )
    fallback = settings.wa_fallback_provider
    senders = {
        DEFAULT: Channel(
            DEFAULT, settings.wa_provider, replace(settings.provider_config(), webhook_url=settings.webhook_url(DEFAULT)),
            settings.wa_send_rate,
            LEGACY_FALLBACK if fallback else None,
        )
    }
    if fallback:
        senders[LEGACY_FALLBACK] = Channel(
            LEGACY_FALLBACK, fallback,
            replace(settings.provider_config(fallback=True), webhook_url=settings.webhook_url(LEGACY_FALLBACK)),
            settings.wa_send_rate,
            queue=False,
        )
    return senders


def _named(settings: Settings, env: Mapping[str, str], names: list[str]) -> dict[str, Channel]:
    own: dict[str, dict[str, str]] = {name: {} for name in names}
    for variable, value in env.items():
        match = _CHANNEL_VARIABLE.match(variable)
        if not match or not value.strip():  # set to nothing: not given
            continue
        name, setting = match.group(1).lower(), match.group(2).upper()
        if name not in own:
            raise ConfigError(
                f"{variable} is set, but WA_CHANNELS ({', '.join(names)}) has no channel {name!r}"
            )
        own[name][setting] = value.strip()
    senders = {}
    for name in names:
        values = own[name]
        prefix = f"WA_CHANNEL_{name.upper()}_"
        provider = values.get("PROVIDER", "").lower()
        if not provider:
            raise ConfigError(f"{prefix}PROVIDER is not set: channel {name!r} needs a provider")
        provider_settings = {**settings.raw_env}
        provider_settings.update({k: v for k, v in values.items() if k not in _OWN_SETTINGS})
        config = replace(
            settings.provider_config(),
            api_key=values.get("API_KEY") or None,
            api_url=_url(prefix, values.get("API_URL")),
            settings=provider_settings,
            api_key_variable=f"{prefix}API_KEY",
            api_url_variable=f"{prefix}API_URL",
            setting_prefix=prefix,
            webhook_url=settings.webhook_url(name),
        )
        senders[name] = Channel(
            name, provider, config, _rate(prefix, values.get("SEND_RATE")),
            (values.get("FALLBACK") or "").lower() or None,
        )
    return senders


def _url(prefix: str, value: str | None) -> str | None:
    """As WA_API_URL: an http(s) URL with a host, without the trailing slash."""
    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{prefix}API_URL={value!r} is not a URL (expected http:// or https://)")
    return value.rstrip("/")


def _rate(prefix: str, value: str | None) -> float | None:
    if not value:
        return None
    try:
        rate = float(value)
    except ValueError:
        rate = 0.0
    if not rate > 0:
        raise ConfigError(f"{prefix}SEND_RATE={value!r} is not a positive number of messages per second")
    return rate


def _people(env: Mapping[str, str], default_country: str, groups: Mapping[str, str]) -> dict[str, str]:
    people = {}
    for variable, value in env.items():
        match = _CONTACT_NUMBER.match(variable)
        if not match or not value.strip():
            continue
        alias = match.group(1).lower()
        if alias in groups:
            raise ConfigError(f"{variable}: alias {alias!r} is also a group (WA_GROUP_{alias.upper()}_ID)")
        try:
            people[alias] = normalise_phone(value, default_country)
        except InvalidTarget as exc:
            raise ConfigError(f"{variable}: {exc}") from None
    return people


def _pins(
    env: Mapping[str, str], routable: tuple[str, ...], groups: Mapping[str, str], people: Mapping[str, str]
) -> dict[str, str]:
    pins = {}
    for variable, value in env.items():
        match = _PIN.match(variable)
        if not match or not value.strip():
            continue
        kind, alias, channel = match.group(1).upper(), match.group(2).lower(), value.strip().lower()
        known = groups if kind == "GROUP" else people
        if alias not in known:
            what = f"WA_{kind}_{alias.upper()}_{'ID' if kind == 'GROUP' else 'NUMBER'}"
            raise ConfigError(f"{variable}: there is no alias {alias!r} ({what} is not set)")
        if channel not in routable:
            raise ConfigError(f"{variable}={value.strip()!r} names no channel (channels: {', '.join(routable)})")
        pins[alias] = channel
    return pins
