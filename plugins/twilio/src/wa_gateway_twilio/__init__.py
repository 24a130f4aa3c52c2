"""Twilio WhatsApp provider for wa-gateway: `WA_PROVIDER=twilio`."""

from __future__ import annotations

from typing import Any

from wa_gateway import hookimpl

from .provider import TwilioProvider

__all__ = ["TwilioProvider"]


@hookimpl
def register_providers(register: Any) -> None:
    register("twilio", TwilioProvider)
