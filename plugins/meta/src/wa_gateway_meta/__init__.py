"""Meta WhatsApp Cloud API provider for wa-gateway: `WA_PROVIDER=meta`."""

from __future__ import annotations

from typing import Any

from wa_gateway import hookimpl

from .provider import MetaProvider

__all__ = ["MetaProvider"]


@hookimpl
def register_providers(register: Any) -> None:
    register("meta", MetaProvider)
