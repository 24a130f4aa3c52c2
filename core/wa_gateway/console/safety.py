"""What the console may show: every text from outside passes through `Shown` first.

Phone numbers are masked as the logs mask them, and the process's secrets (API keys,
provider tokens, admin keys, passwords in DATABASE_URL, AMQP_URL or REDIS_URL, any
`*_KEY`, `*_TOKEN`, `*_SECRET`, `*_PASSWORD` or `*_DSN` setting) are replaced by `***`
wherever one stands as a whole value (wa_gateway.redaction). HTML escaping is Jinja2's
autoescape, on for every template.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from ..logs import mask_phone_numbers
from ..redaction import Redactor
from ..settings import Settings

_SECRET_SUFFIXES = ("_KEY", "_KEYS", "_TOKEN", "_SECRET", "_PASSWORD", "_DSN")


def secrets_of(settings: Settings) -> list[str]:
    """Every credential the settings hold (the log masker's list, and the admin keys)."""
    values = [*settings.api_keys, *settings.admin_keys]
    for secret in (settings.wa_api_key, settings.wa_fallback_api_key, settings.gateway_callback_secret):
        if secret is not None:
            values.append(secret.get_secret_value())
    for name, value in settings.raw_env.items():
        if name.upper().endswith(_SECRET_SUFFIXES) and value:
            values += [part.strip() for part in value.split(",")]
    for url in (*settings.amqp_url.split(","), settings.redis_url or "", settings.database_url):
        try:
            password = urlsplit(url).password
        except ValueError:
            password = None
        if password:
            values.append(password)
    return [value for value in values if value]


class Shown:
    """Text as the console shows it: secrets masked, then phone numbers."""

    def __init__(self, settings: Settings) -> None:
        self._redact = Redactor(secrets_of(settings))

    def __call__(self, text: Any) -> str | None:
        if text is None:
            return None
        return mask_phone_numbers(self._redact(str(text)))

    def notification(self, notification: dict[str, Any]) -> dict[str, Any]:
        """A ledger notification (queries.summary, with or without events) made safe."""
        copy = dict(notification)
        copy["to"] = self(copy.get("to"))
        if copy.get("error"):
            copy["error"] = {"code": self(copy["error"].get("code")), "message": self(copy["error"].get("message"))}
        for name in ("provider_message_id", "event"):
            copy[name] = self(copy.get(name))
        if "events" in copy:
            copy["events"] = [
                {**event, "code": self(event.get("code")), "message": self(event.get("message"))}
                for event in copy["events"]
            ]
        return copy
