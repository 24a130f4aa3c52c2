"""Turning what a caller wrote in `to` into a Target: aliases, E.164 numbers, group ids.

Validation happens here, at the gateway, so that a bad target is a 422 to the caller
and never a message that can only die in the queue.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .models import Target

GROUP_ID = re.compile(r"[0-9]{5,40}(-[0-9]{1,20})?@g\.us")  # ASCII digits; used with fullmatch
_PHONE_PUNCTUATION = re.compile(r"[\s\-.()/]")
_MIN_DIGITS, _MAX_DIGITS = 8, 15  # E.164: at most 15 digits including the country code


class InvalidTarget(ValueError):
    """The `to` value names nothing we can send to; the message says why."""


def normalise_phone(raw: str, default_country: str) -> str:
    """Return E.164 with '+' from '+62 812-3456', '0812…' (national), '0062…' or '62812…'."""
    compact = _PHONE_PUNCTUATION.sub("", raw.strip())
    if compact.startswith("+"):
        digits = compact[1:]
    elif compact.startswith("00"):
        digits = compact[2:]
    elif compact.startswith("0"):
        digits = default_country + compact[1:]
    else:
        digits = compact
    if not digits.isascii() or not digits.isdigit():
        raise InvalidTarget(f"{raw!r} is not a phone number")
    if digits.startswith("0"):
        raise InvalidTarget(f"{raw!r} has no valid country code")
    if not _MIN_DIGITS <= len(digits) <= _MAX_DIGITS:
        raise InvalidTarget(f"{raw!r} is not an E.164 number ({_MIN_DIGITS}-{_MAX_DIGITS} digits)")
    return "+" + digits


def is_group_id(value: str) -> bool:
    return GROUP_ID.fullmatch(value) is not None


def resolve_target(
    to: str,
    aliases: Mapping[str, str],
    *,
    allow_raw: bool,
    default_country: str,
    people: Mapping[str, str] | None = None,
) -> Target:
    """Resolve a group alias or a person alias (case-insensitive), or a raw number /
    group id when allowed. `people` maps person aliases to numbers already in E.164."""
    alias = to.strip().lower()
    group_id = aliases.get(alias)
    if group_id is not None:
        return Target(kind="group", address=group_id)
    number = (people or {}).get(alias)
    if number is not None:
        return Target(kind="phone", address=number)
    if not allow_raw:
        known = ", ".join(sorted({*aliases, *(people or {})})) or "none configured"
        raise InvalidTarget(
            f"unknown alias {to!r} (known: {known}); raw numbers and group ids are off "
            "(WA_ALLOW_RAW_TARGETS=false)"
        )
    candidate = to.strip()
    if candidate.endswith("@g.us"):
        if not is_group_id(candidate):
            raise InvalidTarget(f"{to!r} is not a WhatsApp group id ('<digits>@g.us')")
        return Target(kind="group", address=candidate)
    return Target(kind="phone", address=normalise_phone(candidate, default_country))
