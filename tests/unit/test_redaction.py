"""Secrets are masked as whole values only, and only values long enough to be secrets.

`WA_API_KEY=x` must not turn "unexpected" into "une***pected" in reasons and logs,
and a key must not be masked where it is only part of a longer word; a real token
is masked wherever it stands on its own: in a URL query, a JSON string, after
"Bearer ", percent-encoded in a URL.
"""

from __future__ import annotations

import pytest

from wa_gateway import HttpAnswer, HttpProvider, ProviderConfig
from wa_gateway.logs import Masker
from wa_gateway.redaction import MIN_SECRET_LENGTH, Redactor, redact

TOKEN = "EAAJB7x0test0ACCESS0TOKEN0ZDZD"
BASE64ISH = "q8/Zr+Tb0Kw=9x"  # secrets may hold characters outside [A-Za-z0-9_-]


class Bare(HttpProvider):
    name = "bare"

    async def send(self, message):  # pragma: no cover - not called
        raise NotImplementedError


def _masks():
    """Every way the code masks: the log processor and a provider's error redaction."""
    return [
        lambda secret, text: Masker([secret]).mask(text),
        lambda secret, text: Bare(ProviderConfig(api_key=secret)).redact(text),
        lambda secret, text: redact(text, [secret]),
    ]


@pytest.mark.parametrize("mask", _masks(), ids=["log-masker", "provider-redact", "redact"])
def test_a_one_letter_key_leaves_words_intact(mask):
    assert mask("x", "unexpected HTTP 200 answer: exit") == "unexpected HTTP 200 answer: exit"
    assert mask("x", "x") == "x"  # too short to be a secret at all


@pytest.mark.parametrize("mask", _masks(), ids=["log-masker", "provider-redact", "redact"])
@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (f"GET https://graph.example/v23.0/me?access_token={TOKEN}&fields=id",
         "GET https://graph.example/v23.0/me?access_token=***&fields=id"),
        (f'{{"api_key": "{TOKEN}", "number_key": "n"}}', '{"api_key": "***", "number_key": "n"}'),
        (f"Authorization: Bearer {TOKEN}", "Authorization: Bearer ***"),
        (f"{TOKEN}", "***"),
        (f"token {TOKEN}.", "token ***."),
    ],
    ids=["url-query", "json-string", "bearer", "alone", "end-of-sentence"],
)
def test_a_token_standing_on_its_own_is_masked(mask, text, masked):
    assert mask(TOKEN, text) == masked


@pytest.mark.parametrize("mask", _masks(), ids=["log-masker", "provider-redact", "redact"])
def test_a_key_inside_a_longer_word_is_not_masked_there(mask):
    key = "deadbeef42"
    text = f"id xdeadbeef42 or deadbeef42-suffix or deadbeef42_v2, but key={key}"
    assert mask(key, text) == "id xdeadbeef42 or deadbeef42-suffix or deadbeef42_v2, but key=***"


@pytest.mark.parametrize("mask", _masks(), ids=["log-masker", "provider-redact", "redact"])
def test_a_secret_with_slashes_pluses_and_equals_is_masked_whole_and_percent_encoded(mask):
    assert mask(BASE64ISH, f"secret={BASE64ISH}&a=1") == "secret=***&a=1"
    assert mask(BASE64ISH, "url ?k=q8%2FZr%2BTb0Kw%3D9x&a=1") == "url ?k=***&a=1"
    assert mask(BASE64ISH, f"not x{BASE64ISH}") == f"not x{BASE64ISH}"


def test_only_values_of_the_minimum_length_are_secrets():
    short, long_enough = "k" * (MIN_SECRET_LENGTH - 1), "k" * MIN_SECRET_LENGTH
    assert MIN_SECRET_LENGTH >= 8
    assert redact(f"a {short} b", [short]) == f"a {short} b"
    assert redact(f"a {long_enough} b", [long_enough]) == "a *** b"


def test_the_longest_of_overlapping_secrets_is_masked_whole():
    redactor = Redactor(["abcdefgh", "abcdefgh-ijklmnop"])
    assert redactor("abcdefgh-ijklmnop and abcdefgh") == "*** and ***"


def test_a_provider_error_keeps_words_around_a_one_letter_key():
    provider = Bare(ProviderConfig(api_key="x"))
    error = provider.failure(HttpAnswer(502, {}, "<html>unexpected proxy error</html>"))
    assert "unexpected proxy error" in str(error) and "***" not in str(error)


def test_the_log_masker_masks_every_string_value_of_a_line():
    masker = Masker(["x", TOKEN])
    line = masker(None, "info", {"event": f"sent with {TOKEN}", "reason": "unexpected", "n": 1})
    assert line == {"event": "sent with ***", "reason": "unexpected", "n": 1}
