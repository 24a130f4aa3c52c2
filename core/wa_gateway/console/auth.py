"""Who may use the console: sign-in with an admin key, signed sessions, CSRF tokens, and
a limit on failed sign-ins per client address.

Sessions are stateless, so every gateway process accepts a session another one gave out:
the cookie says which admin key signed in (by an HMAC fingerprint, never the key), until
when, and a random nonce, signed with a key derived from that admin key. Removing the key
from GATEWAY_ADMIN_KEYS leaves its sessions with no key to check them against: they end.
The CSRF token of a session is an HMAC of its nonce; the sign-in form, before any session,
carries one tied to a random cookie of its own (a signed double submit).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import secrets
import time
from collections import OrderedDict, deque
from dataclasses import dataclass

SESSION_COOKIE = "wa_console"
SIGN_IN_COOKIE = "wa_console_sign_in"
SESSION_SECONDS = 12 * 3600
"""A session lasts 12 hours; then the operator signs in again."""
SIGN_IN_FORM_SECONDS = 3600
"""How long a sign-in form (its cookie) stays usable."""
MAX_COOKIE = 512
"""Longer cookie values are not ours: refused before any HMAC is computed."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _hmac(key: bytes, *parts: str) -> bytes:
    return hmac.new(key, "\x00".join(parts).encode("utf-8", "surrogateescape"), hashlib.sha256).digest()


@dataclass(frozen=True)
class _AdminKey:
    key: bytes
    kid: str
    """A fingerprint that names the key in a cookie without revealing it."""
    signing: bytes

    @classmethod
    def of(cls, key: str) -> _AdminKey:
        raw = key.encode("utf-8", "surrogateescape")
        return cls(raw, _b64(_hmac(raw, "wa-gateway console key id"))[:16], _hmac(raw, "wa-gateway console session"))


@dataclass(frozen=True)
class Session:
    kid: str
    expires: int
    nonce: str
    csrf: str
    """The token every form of this session carries."""


class Sessions:
    """Signs and checks session cookies and CSRF tokens for a set of admin keys."""

    def __init__(self, keys: list[str], *, lifetime: int = SESSION_SECONDS) -> None:
        if not keys:
            raise ValueError("the console needs at least one admin key")
        self._keys = [_AdminKey.of(key) for key in keys]
        self._by_kid = {key.kid: key for key in self._keys}
        self.lifetime = lifetime
        joined = b"".join(len(k.key).to_bytes(4, "big") + k.key for k in sorted(self._keys, key=lambda k: k.key))
        self._form_key = hmac.new(joined, b"wa-gateway console sign-in form", hashlib.sha256).digest()

    def matching_key(self, candidate: str) -> _AdminKey | None:
        """The admin key equal to `candidate`, compared in constant time against every
        key (no early exit: timing reveals neither a key nor which one matched)."""
        given = candidate.encode("utf-8", "surrogateescape")
        found = None
        for key in self._keys:
            if hmac.compare_digest(given, key.key):
                found = key
        return found

    def issue(self, key: _AdminKey, *, now: float | None = None) -> str:
        expires = int((time.time() if now is None else now) + self.lifetime)
        nonce = secrets.token_urlsafe(16)
        body = f"v1.{key.kid}.{expires}.{nonce}"
        return f"{body}.{_b64(_hmac(key.signing, body))}"

    def check(self, cookie: str | None, *, now: float | None = None) -> Session | None:
        """The session a cookie holds, or None: malformed, forged, expired, or signed by a
        key that is no longer configured."""
        if not cookie or len(cookie) > MAX_COOKIE:
            return None
        parts = cookie.split(".")
        if len(parts) != 5 or parts[0] != "v1" or not parts[2].isdigit():
            return None
        _, kid, expires, nonce, signature = parts
        key = self._by_kid.get(kid)
        if key is None:
            return None
        body = ".".join(parts[:4])
        if not hmac.compare_digest(signature.encode("ascii", "replace"), _b64(_hmac(key.signing, body)).encode()):
            return None
        if int(expires) <= (time.time() if now is None else now):
            return None
        return Session(kid, int(expires), nonce, _b64(_hmac(key.signing, "csrf", nonce))[:32])

    def sign_in_nonce(self) -> str:
        return secrets.token_urlsafe(16)

    def sign_in_token(self, nonce: str) -> str:
        """The CSRF token of a sign-in form whose cookie holds `nonce`."""
        return _b64(hmac.new(self._form_key, nonce.encode("utf-8", "surrogateescape"), hashlib.sha256).digest())[:32]


def tokens_match(given: str | None, expected: str) -> bool:
    if not given:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode("ascii"))


class SignInLimiter:
    """At most `attempts` failed sign-ins per client address in a sliding `window` of
    seconds; then every attempt from that address, right key or not, waits. Per process,
    bounded: the addresses idle longest are forgotten first."""

    def __init__(self, attempts: int = 5, window: float = 60.0, max_clients: int = 10_000) -> None:
        self.attempts, self.window, self.max_clients = attempts, window, max_clients
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def wait(self, client: str, *, now: float | None = None) -> int:
        """0 when `client` may try now, else whole seconds until it may."""
        now = time.monotonic() if now is None else now
        failures = self._failures.get(client)
        if failures is None:
            return 0
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if len(failures) < self.attempts:
            return 0
        return max(1, math.ceil(failures[0] + self.window - now))

    def failed(self, client: str, *, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        failures = self._failures.setdefault(client, deque(maxlen=self.attempts))
        failures.append(now)
        self._failures.move_to_end(client)
        while len(self._failures) > self.max_clients:
            self._failures.popitem(last=False)
