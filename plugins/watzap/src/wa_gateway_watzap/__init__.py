"""Watzap.id provider for wa-gateway: `WA_PROVIDER=watzap`."""

from __future__ import annotations

from typing import Any

from wa_gateway import hookimpl

from .provider import WatzapProvider

__all__ = ["WatzapProvider"]


@hookimpl
def register_providers(register: Any) -> None:
    register("watzap", WatzapProvider)
