"""Settings from the environment and a `.env` file (environment wins).

Every mistake an operator can make here ends start-up with one line that names the
variable and says what is wrong; `load_settings` raises ConfigError for that.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from dotenv import dotenv_values
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .broker import amqp_urls
from .errors import ConfigError  # raised here; `from wa_gateway.settings import ConfigError` works
from .ledger.urls import DEFAULT_DATABASE_URL, async_database_url
from .provider import ProviderConfig
from .targets import is_group_id

MIN_ADMIN_KEY_LENGTH = 16
"""An admin key opens the console (replay, purge): long enough not to be guessed."""

_ALIAS_VARIABLE = re.compile(r"^WA_GROUP_([A-Z0-9_]+)_ID$", re.IGNORECASE)


class Settings(BaseSettings):
    """All settings; the names are the environment variables in upper case."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    wa_provider: str = "log"
    wa_api_key: SecretStr | None = None
    wa_api_url: str | None = None
    wa_provider_connect_timeout: float = Field(5.0, gt=0)
    wa_provider_timeout: float = Field(15.0, gt=0)
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    wa_queue_prefix: str = Field("wa", pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(8080, ge=0, le=65535)
    gateway_reuse_port: bool = False
    """Let several `serve` processes listen on one port (SO_REUSEPORT): one per core."""
    gateway_processes: int = Field(1, ge=1, le=256)
    """`serve` runs this many gateway processes on one port under a parent; 1 = no parent."""
    gateway_api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    gateway_admin_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    """Keys that sign in to the operator console at /admin; empty: the console is off (404)."""
    gateway_rate_limit: float = Field(100.0, ge=0)
    """Requests per second per API key (per client address without keys); 0 turns it off."""
    gateway_rate_burst: int = Field(200, ge=1)
    gateway_header_timeout: float = Field(10.0, gt=0)
    """Seconds a client has to send a complete request head: from connecting, or on a
    kept-alive connection from the first byte of the next request."""
    gateway_keepalive_timeout: float = Field(15.0, gt=0)
    """Seconds an idle kept-alive connection stays open after a response."""
    gateway_max_connections: int = Field(1000, ge=1)
    """Open HTTP connections per process; more are answered 503 and closed."""
    wa_metrics_port: int = Field(0, ge=0, le=65535)
    """Port where a worker-only process serves /metrics and probes; 0 = none."""
    wa_allow_raw_targets: bool = False
    wa_allow_http_media: bool = False
    """Let `media.url` be http:// (tests, a local file server); https:// only otherwise."""
    wa_worker_prefetch: int = Field(64, ge=1, le=65535)
    wa_retry_delays: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [5.0, 30.0, 120.0, 600.0, 3600.0]
    )
    wa_log_outbox: str | None = None
    wa_default_country: str = Field("62", pattern=r"^[1-9]\d{0,2}$")
    wa_templates: str | None = None
    redis_url: str | None = None
    wa_fallback_provider: str | None = None
    wa_fallback_api_key: SecretStr | None = None
    wa_fallback_api_url: str | None = None
    wa_send_rate: float | None = Field(None, gt=0)
    wa_shutdown_timeout: float = Field(10.0, gt=0)
    wa_breaker_threshold: int = Field(5, ge=1)
    wa_breaker_cooldown: float = Field(30.0, gt=0)
    wa_publish_timeout: float = Field(5.0, gt=0)
    database_url: str = DEFAULT_DATABASE_URL
    """The ledger: sqlite:///<path> (default, in the working directory) or postgresql://…"""
    wa_ledger_retention_days: int = Field(90, ge=1)
    """`wa-gateway db prune` deletes notifications older than this many days."""
    wa_ledger: bool = True
    """Keep every notification's life in the ledger; false turns writing and the
    ledger's endpoints off (statuses then live in the store only)."""
    gateway_callback_url: str | None = None
    """Where each status change of every notification is POSTed, unless the request
    names its own `callback_url`."""
    gateway_callback_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Hosts a request's `callback_url` may name (GATEWAY_CALLBACK_URL's is always allowed)."""
    gateway_callback_secret: SecretStr | None = None
    """The Standard Webhooks secret (`whsec_` + base64) every callback is signed with."""
    gateway_public_url: str | None = None
    """The gateway's address as providers reach it from the internet (https://…): the
    receipts webhooks are GATEWAY_PUBLIC_URL + /webhooks/<channel>."""

    group_aliases: dict[str, str] = Field(default_factory=dict, repr=False)
    """alias -> group id, from WA_GROUP_<NAME>_ID (filled by load_settings)."""
    raw_env: dict[str, str] = Field(default_factory=dict, repr=False)
    """Every variable (.env under environment) for provider-specific settings."""

    @field_validator("gateway_api_keys", "gateway_admin_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @field_validator("gateway_admin_keys")
    @classmethod
    def _long_admin_keys(cls, value: list[SecretStr]) -> list[SecretStr]:
        if any(len(key.get_secret_value()) < MIN_ADMIN_KEY_LENGTH for key in value):
            raise ValueError(
                f"each admin key needs at least {MIN_ADMIN_KEY_LENGTH} characters "
                "(e.g. python3 -c \"import secrets; print(secrets.token_urlsafe(24))\")"
            )
        return value

    @field_validator("wa_retry_delays", mode="before")
    @classmethod
    def _split_delays(cls, value: Any) -> Any:
        if isinstance(value, str):
            parts = [part.strip() for part in value.split(",") if part.strip()]
            if not parts:
                raise ValueError("give at least one delay in seconds, e.g. 5,30,120")
            return parts
        return value

    @field_validator("wa_retry_delays")
    @classmethod
    def _positive_delays(cls, value: list[float]) -> list[float]:
        if not value or any(delay <= 0 for delay in value):
            raise ValueError("every delay must be a positive number of seconds")
        return value

    @field_validator("gateway_callback_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [host.strip().lower().rstrip(".") for host in value.split(",") if host.strip()]
        return value

    @field_validator("gateway_callback_url")
    @classmethod
    def _callback_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        refusal = callback_url_refusal(value.strip())
        if refusal:
            raise ValueError(refusal)
        return value.strip()

    @field_validator("gateway_callback_secret")
    @classmethod
    def _callback_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        refusal = callback_secret_refusal(value.get_secret_value().strip())
        if refusal:
            raise ValueError(refusal)
        return SecretStr(value.get_secret_value().strip())

    @model_validator(mode="after")
    def _callbacks_need_a_secret(self) -> Settings:
        if self.gateway_callback_url and self.gateway_callback_secret is None:
            raise ValueError(
                "GATEWAY_CALLBACK_URL is set but GATEWAY_CALLBACK_SECRET is not: callbacks are "
                "signed (a Standard Webhooks secret, whsec_…)"
            )
        return self

    @property
    def callbacks(self) -> bool:
        """Status callbacks are configured (they need the ledger's statuses)."""
        return self.gateway_callback_secret is not None and self.wa_ledger

    def callback_hosts(self) -> set[str]:
        hosts = set(self.gateway_callback_hosts)
        if self.gateway_callback_url:
            hosts.add((urlsplit(self.gateway_callback_url).hostname or "").lower())
        return hosts

    @field_validator("gateway_public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError("expected the gateway's public address, like https://wa.example.com")
        return value.strip().rstrip("/")

    def webhook_url(self, channel: str) -> str | None:
        """Where the provider of `channel` sends its receipts; None without GATEWAY_PUBLIC_URL."""
        if self.gateway_public_url is None:
            return None
        return f"{self.gateway_public_url}/webhooks/{channel}"

    @field_validator("amqp_url")
    @classmethod
    def _amqp_url(cls, value: str) -> str:
        """One node, or several of one cluster separated by commas (broker.amqp_urls):
        one line naming the bad node. The short form (`amqp://u:p@h1,h2/v`) is kept as
        full URLs, one per node, which every reader of AMQP_URL can split on commas."""
        urls = amqp_urls(value)
        return ",".join(urls) if len(urls) > 1 else value

    @field_validator("wa_api_url", "wa_fallback_api_url", "redis_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https", "redis", "rediss", "unix") or not (
            parts.hostname or parts.scheme == "unix"
        ):
            raise ValueError(f"{value!r} is not a URL")
        return value.strip().rstrip("/")

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        value = value.strip() or DEFAULT_DATABASE_URL
        try:
            async_database_url(value)
        except ConfigError as exc:  # its message names DATABASE_URL already
            raise ValueError(str(exc).removeprefix("DATABASE_URL ")) from None
        return value

    @field_validator("wa_provider", "wa_fallback_provider")
    @classmethod
    def _provider_name(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return value.strip().lower()

    @field_validator("group_aliases")
    @classmethod
    def _group_ids(cls, value: dict[str, str]) -> dict[str, str]:
        for alias, group_id in value.items():
            if not is_group_id(group_id):
                raise ValueError(
                    f"WA_GROUP_{alias.upper()}_ID={group_id!r} is not a WhatsApp group id "
                    "('<digits>@g.us')"
                )
        return value

    @property
    def api_keys(self) -> list[str]:
        return [key.get_secret_value() for key in self.gateway_api_keys]

    @property
    def admin_keys(self) -> list[str]:
        return [key.get_secret_value() for key in self.gateway_admin_keys]

    def provider_config(self, *, fallback: bool = False) -> ProviderConfig:
        """The ProviderConfig for the primary provider, or for the fallback one."""
        key = self.wa_fallback_api_key if fallback else self.wa_api_key
        return ProviderConfig(
            api_key=key.get_secret_value() if key else None,
            api_url=self.wa_fallback_api_url if fallback else self.wa_api_url,
            connect_timeout=self.wa_provider_connect_timeout,
            total_timeout=self.wa_provider_timeout,
            settings=self.raw_env,
            api_key_variable="WA_FALLBACK_API_KEY" if fallback else "WA_API_KEY",
            api_url_variable="WA_FALLBACK_API_URL" if fallback else "WA_API_URL",
        )


MAX_CALLBACK_URL = 2048


def callback_url_refusal(url: str) -> str | None:
    """Why `url` cannot take callbacks, or None: http(s), a host, at most 2,048 characters."""
    if len(url) > MAX_CALLBACK_URL:
        return f"a callback URL has at most {MAX_CALLBACK_URL} characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return "not a URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "a callback URL is http:// or https:// with a host"
    if parts.username or parts.password:
        return "a callback URL carries no credentials (callbacks are signed instead)"
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        return "a callback URL has no spaces or control characters"
    return None


def callback_secret_refusal(secret: str) -> str | None:
    """A Standard Webhooks secret: `whsec_` and the base64 of 24 to 64 random bytes."""
    if not secret.startswith("whsec_"):
        return "GATEWAY_CALLBACK_SECRET must start with whsec_ (a Standard Webhooks secret)"
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (ValueError, binascii.Error):
        return "GATEWAY_CALLBACK_SECRET is not whsec_ followed by base64"
    if not 24 <= len(key) <= 64:
        return f"GATEWAY_CALLBACK_SECRET holds {len(key)} bytes; use 24 to 64 random bytes"
    return None


def _merged_environment(env_file: str | Path | None) -> dict[str, str]:
    merged: dict[str, str] = {}
    if env_file is not None and Path(env_file).is_file():
        merged.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    merged.update(os.environ)
    return merged


def _aliases(environment: Mapping[str, str]) -> dict[str, str]:
    aliases: dict[str, str] = {}
    for name, value in environment.items():
        match = _ALIAS_VARIABLE.match(name)
        if match and value.strip():
            aliases[match.group(1).lower()] = value.strip()
    return aliases


def describe_validation_error(error: ValidationError) -> str:
    """One line naming each bad variable and what is wrong with it."""
    parts = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"])
        name = field.upper() if field != "group_aliases" else "WA_GROUP_*_ID"
        message = item["msg"].removeprefix("Value error, ")
        parts.append(f"{name}: {message}" if field else message)  # a rule across settings names them
    return "invalid setting " + "; ".join(parts)


def load_settings(env_file: str | Path | None = ".env", **overrides: Any) -> Settings:
    """Read the environment and `.env`; raise ConfigError with one line when wrong."""
    environment = _merged_environment(env_file)
    overrides.setdefault("group_aliases", _aliases(environment))
    overrides.setdefault("raw_env", environment)
    try:
        return Settings(_env_file=env_file, **overrides)  # type: ignore[call-arg]
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None
