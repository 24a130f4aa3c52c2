"""Masking secrets in text: whole values only, and only values long enough to be secrets.

One rule for the log masker (logs.py) and for the errors providers raise
(HttpProvider.redact). Standard library only, so a provider plugin does not pull in
the logging stack for it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

MIN_SECRET_LENGTH = 8
"""Shorter values are never masked. Every real credential here (API keys, tokens,
Twilio's 32-character auth token, Meta's access token) is far longer, while a short
value such as a placeholder `WA_API_KEY=x` in a test setup would be "found" inside
ordinary words and ids ("une***pected") and garble every reason and log line; and a
value that short is guessable anyway, so hiding it protects nothing."""

MASK = "***"

_TOKEN_CHARS = "A-Za-z0-9_-"
"""Characters that make up one token (keys, ids, words): a secret is masked only where
it is not part of a longer run of these."""
_TOKEN_CHAR = re.compile(f"[{_TOKEN_CHARS}]")


def _pattern(value: str) -> str:
    """`value` as a whole token: not preceded or followed by a token character where the
    value itself begins or ends with one (a value ending in '=' may be followed by
    anything; 'q8/Zr+Tb0Kw=' is still whole in 'key=q8/Zr+Tb0Kw=&a=1')."""
    before = f"(?<![{_TOKEN_CHARS}])" if _TOKEN_CHAR.match(value[0]) else ""
    after = f"(?![{_TOKEN_CHARS}])" if _TOKEN_CHAR.match(value[-1]) else ""
    return before + re.escape(value) + after


class Redactor:
    """Replaces each secret with `***` where it stands as a whole token.

    A secret is also found percent-encoded (as in a URL query or a form body). Secrets
    shorter than MIN_SECRET_LENGTH are ignored; where secrets overlap, the longest wins.
    """

    def __init__(self, secrets: Iterable[str], *, mask: str = MASK) -> None:
        values = {s.strip() for s in secrets if s and len(s.strip()) >= MIN_SECRET_LENGTH}
        forms = set(values)
        for value in values:
            forms.update((quote(value, safe=""), quote_plus(value, safe="")))
        self.secrets = tuple(sorted(values, key=len, reverse=True))
        self.mask = mask
        self._regex = (
            re.compile("|".join(_pattern(f) for f in sorted(forms, key=len, reverse=True)))
            if forms
            else None
        )

    def __call__(self, text: str) -> str:
        if self._regex is None:
            return text
        return self._regex.sub(self.mask, text)


@functools.lru_cache(maxsize=64)
def _redactor(secrets: tuple[str, ...]) -> Redactor:
    return Redactor(secrets)


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret of at least MIN_SECRET_LENGTH characters, standing as a
    whole token, replaced by `***`."""
    return _redactor(tuple(secrets))(text)
