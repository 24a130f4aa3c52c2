"""Hostile input: hundreds of named requests, each answered with a JSON 4xx, none queued.

The corpus is generated deterministically below; every case has a name. To stay fast,
each group of cases runs against one gateway, and one assertion lists every case that
was answered wrongly (by name), then the test checks that nothing reached the work
queue, that no request was counted as a 5xx, and that a valid request still gets 202.

An answer is right when it is a 4xx (the exact status where the contract names one)
with `Content-Type: application/json` and a body of exactly `{"error": str,
"detail": str}`, which echoes neither a configured API key nor the caller's token and
carries no header the caller smuggled in.

The group `found-here` holds the cases this corpus caught in the core (a 500, or a
202 for input that must be refused), kept as regressions.
Malformed HTTP (framing errors that aiohttp answers before the app sees a request)
and Content-Encoding run against a real `wa-gateway serve` at the end of this file.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import hmac
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from wa_gateway.testing import HOSTILE_BODIES

from ..conftest import LOGISTIC, get_all, queue_size
from ..live_gateway import free_port, spawn_live

KEY_A = "wa-key-Alpha-7d1c9e55"
KEY_B = "wa-key-Bravo-52aa04c3"
AUTH = f"Bearer {KEY_A}"
ALIASES = {
    "logistic": LOGISTIC,
    "purchase": "120363000000000001@g.us",
    "management": "120363000000000002@g.us",
}
VALID_SEND = {"to": "logistic", "text": "🆕 *REQUEST BARU*\nID: 42\nOleh: Budi"}
VALID_EVENT = {"event": "new_request", "data": {"id": 42, "requester": "Budi Śantoso"}}
MIB2 = 2 * 1024 * 1024


def js(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


def send_with(**changes: Any) -> dict[str, Any]:
    return {**VALID_SEND, **changes}


def event_data(**data: Any) -> dict[str, Any]:
    return {"event": "new_request", "data": {"id": 42, "requester": "Budi", **data}}


def purchase(**data: Any) -> dict[str, Any]:
    return {"event": "purchase_approved", "data": {"id": 7, "approver": "Sari", "total": 1500000, **data}}


@dataclass(frozen=True)
class Case:
    name: str
    body: bytes | None = None
    method: str = "POST"
    path: str = "/notify"
    content_type: str | None = "application/json"  # None: no Content-Type header at all
    headers: tuple[tuple[str, str], ...] = ()
    auth: str | None = AUTH  # the Authorization header; None: none
    chunked: bool = False  # the body in 64 KiB chunks, without Content-Length
    raw: bytes | None = None  # these exact bytes over a socket instead
    status: int | None = None  # the exact status, where the contract names one


def raw_request(
    method: str, target: str | bytes, headers: list[tuple[bytes, bytes]], body: bytes = b"", *, length: bool = True
) -> bytes:
    target = target.encode() if isinstance(target, str) else target
    lines = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1"]
    lines += [name + b": " + value for name, value in headers]
    if length and body:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


JSON_CT = (b"Content-Type", b"application/json")
RAW_AUTH = (b"Authorization", AUTH.encode())


# -- the corpus -------------------------------------------------------------------------


def truncated_send() -> list[Case]:
    body = js(VALID_SEND)  # the emoji makes some cuts invalid UTF-8 too
    return [Case(f"send-cut-at-byte-{i:03d}", body[:i], status=400) for i in range(len(body))]


def truncated_event() -> list[Case]:
    body = js(VALID_EVENT)
    return [Case(f"event-cut-at-byte-{i:03d}", body[:i], status=400) for i in range(len(body))]


def malformed_json() -> list[Case]:
    bad = {
        "whitespace-only": b" \n\t\r ",
        "single-quotes": b"{'to': 'logistic', 'text': 'hi'}",
        "trailing-comma-in-object": b'{"to": "logistic", "text": "hi",}',
        "trailing-comma-in-array": b'{"to": ["logistic",], "text": "hi"}',
        "unquoted-keys": b'{to: "logistic", text: "hi"}',
        "block-comment": b'{"to": "logistic", /* c */ "text": "hi"}',
        "line-comment": b'// c\n{"to": "logistic", "text": "hi"}',
        "trailing-garbage": b'{"to": "logistic", "text": "hi"} x',
        "two-objects": b'{"to":"logistic","text":"a"}{"to":"logistic","text":"b"}',
        "ndjson": b'{"to":"logistic","text":"a"}\n{"to":"logistic","text":"b"}\n',
        "unterminated-string": b'{"to": "logistic, "text": "hi"}',
        "raw-newline-in-string": b'{"to": "logistic", "text": "a\nb"}',
        "raw-tab-in-string": b'{"to": "logistic", "text": "a\tb"}',
        "raw-nul-in-string": b'{"to": "logistic", "text": "a\x00b"}',
        "nul-between-tokens": b'{"to": "logistic",\x00 "text": "hi"}',
        "bad-escape": b'{"to": "logistic", "text": "\\x41"}',
        "short-unicode-escape": b'{"to": "logistic", "text": "\\u12"}',
        "hex-number": b'{"to": "logistic", "text": "hi", "n": 0x10}',
        "leading-zero": b'{"to": "logistic", "text": "hi", "n": 012}',
        "plus-sign": b'{"to": "logistic", "text": "hi", "n": +1}',
        "bare-decimal-point": b'{"to": "logistic", "text": "hi", "n": .5}',
        "missing-colon": b'{"to" "logistic", "text": "hi"}',
        "missing-value": b'{"to": , "text": "hi"}',
        "bare-word": b"logistic",
        "jsonp": b'callback({"to": "logistic", "text": "hi"})',
        "xml": b'<?xml version="1.0"?><notify><to>logistic</to><text>hi</text></notify>',
        "yaml": b"to: logistic\ntext: hi\n",
        "form-encoded": b"to=logistic&text=hi",
        "python-literal": b"{'to': 'logistic', 'text': None}",
        "capitalised-true": b'{"to": "logistic", "text": True}',
        "undefined": b'{"to": undefined, "text": "hi"}',
        "unclosed-array": b'[{"to": "logistic", "text": "hi"}',
        "only-closing": b"}",
    }
    cases = [Case(f"malformed-{name}", body, status=400) for name, body in bad.items()]
    not_an_object = {
        "null": b"null", "true": b"true", "number": b"42", "string": b'"hi"',
        "batch-array": js([VALID_SEND]), "empty-array": b"[]", "empty-object": b"{}",
    }
    cases += [Case(f"json-{name}", body, status=422) for name, body in not_an_object.items()]
    return cases


WRONG = {
    "zero": 0, "negative": -1, "float": 1.5, "true": True, "false": False, "empty-array": [],
    "array": ["logistic"], "empty-object": {}, "object": {"to": "logistic"}, "null": None,
}


def wrong_types() -> list[Case]:
    cases = []
    for label, value in WRONG.items():
        cases.append(Case(f"to-is-{label}", js(send_with(to=value)), status=422))
        cases.append(Case(f"text-is-{label}", js(send_with(text=value)), status=422))
        cases.append(Case(f"event-is-{label}", js({"event": value, "data": {"id": 1, "requester": "x"}}), status=422))
        cases.append(Case(f"data-is-{label}", js({"event": "new_request", "data": value}), status=422))
        cases.append(Case(f"data-requester-is-{label}", js(event_data(requester=value)), status=422))
        if not isinstance(value, int) or isinstance(value, bool):
            cases.append(Case(f"data-id-is-{label}", js(event_data(id=value)), status=422))
    for label, value in {"numeric-string": "42", "integral-float": 42.0, "template": "{{ 7*7 }}"}.items():
        cases.append(Case(f"data-id-is-{label}", js(event_data(id=value)), status=422))
    for label in ("empty-array", "empty-object", "object", "null"):
        cases.append(Case(f"data-total-is-{label}", js(purchase(total=WRONG[label])), status=422))
    cases.append(Case("data-total-is-a-word", js(purchase(total="banyak")), status=422))
    cases.append(Case("data-amount-is-a-word", js({"event": "budget_exceeded", "data": {
        "id": 1, "requester": "x", "amount": "abc", "budget": 5}}), status=422))
    return cases


BIG_INT = "1" + "0" * 400  # 10**400 written out
HUGE_INT = "9" * 5000  # more digits than Python's int parser allows (4300)


def huge_numbers() -> list[Case]:
    send = b'{"to": "logistic", "text": "hi"'
    return [
        Case("to-is-1e400", b'{"to": 1e400, "text": "hi"}', status=422),
        Case("text-is-1e400", b'{"to": "logistic", "text": 1e400}', status=422),
        Case("text-is-minus-1e400", b'{"to": "logistic", "text": -1e400}', status=422),
        Case("text-is-1e308", b'{"to": "logistic", "text": 1e308}', status=422),
        Case("text-is-10-pow-400", b'{"to": "logistic", "text": ' + BIG_INT.encode() + b"}", status=422),
        Case("text-is-5000-digits", b'{"to": "logistic", "text": ' + HUGE_INT.encode() + b"}", status=400),
        Case("event-is-10-pow-400", b'{"event": ' + BIG_INT.encode() + b"}", status=422),
        Case("data-is-1e400", b'{"event": "new_request", "data": 1e400}', status=422),
        Case("data-id-is-1e400", b'{"event": "new_request", "data": {"id": 1e400, "requester": "x"}}', status=422),
        Case("data-id-is-1e-400", b'{"event": "new_request", "data": {"id": 1e-400, "requester": "x"}}', status=422),
        Case("data-id-is-5000-digits",
             b'{"event": "new_request", "data": {"id": ' + HUGE_INT.encode() + b', "requester": "x"}}', status=400),
        Case("data-requester-is-10-pow-400",
             b'{"event": "new_request", "data": {"id": 1, "requester": ' + BIG_INT.encode() + b"}}", status=422),
        Case("data-total-is-10-pow-400",
             b'{"event": "purchase_approved", "data": {"id": 1, "approver": "x", "total": '
             + BIG_INT.encode() + b"}}", status=422),
        Case("unknown-field-1e400", send + b', "n": 1e400}', status=422),
        Case("unknown-field-10-pow-400", send + b', "n": ' + BIG_INT.encode() + b"}", status=422),
        # Python's json reads these non-standard tokens; either 400 or 422 is right
        Case("text-is-NaN-token", b'{"to": "logistic", "text": NaN}'),
        Case("to-is-Infinity-token", b'{"to": Infinity, "text": "hi"}'),
        Case("unknown-field-minus-Infinity", send + b', "n": -Infinity}'),
        Case("body-is-NaN-token", b"NaN"),
    ]


def nested(depth: int, leaf: bytes = b"1", kind: str = "array") -> bytes:
    if kind == "array":
        return b"[" * depth + leaf + b"]" * depth
    if kind == "object":
        return b'{"a":' * depth + leaf + b"}" * depth
    return b'[{"a":' * (depth // 2) + leaf + b"}]" * (depth // 2)


def deep_nesting() -> list[Case]:
    send = b'{"to": "logistic", "text": '
    event = b'{"event": "new_request", "data": {"id": 1, "requester": "x", "n": '
    return [
        Case("arrays-10k-deep", nested(10_000), status=400),
        Case("objects-10k-deep", nested(10_000, kind="object"), status=400),
        Case("arrays-and-objects-10k-deep", nested(10_000, kind="mixed"), status=400),
        Case("arrays-100k-deep-over-the-size-limit", nested(100_000), status=413),
        Case("text-is-arrays-10k-deep", send + nested(10_000) + b"}", status=400),
        Case("to-is-objects-5k-deep", b'{"text": "hi", "to": ' + nested(5_000, kind="object") + b"}", status=400),
        Case("data-field-is-objects-10k-deep", event + nested(10_000, kind="object") + b"}}", status=400),
        Case("unknown-field-arrays-10k-deep", b'{"to": "logistic", "text": "hi", "n": ' + nested(10_000) + b"}",
             status=400),
        Case("text-is-arrays-200-deep", send + nested(200) + b"}", status=422),
        Case("unknown-field-objects-200-deep", b'{"to": "logistic", "text": "hi", "n": '
             + nested(200, kind="object") + b"}", status=422),
        Case("data-is-arrays-200-deep", b'{"event": "new_request", "data": ' + nested(200) + b"}", status=422),
    ]


INVALID_UTF8 = {
    "ff-byte": b"\xff",
    "fe-ff-bytes": b"\xfe\xff",
    "overlong-slash-2-bytes": b"\xc0\xaf",
    "overlong-nul-2-bytes": b"\xc0\x80",
    "overlong-slash-3-bytes": b"\xe0\x80\xaf",
    "overlong-slash-4-bytes": b"\xf0\x80\x80\xaf",
    "cesu-lone-surrogate": b"\xed\xa0\x80",
    "cesu-surrogate-pair": b"\xed\xa0\xbd\xed\xb8\x80",
    "above-u10ffff": b"\xf4\x90\x80\x80",
    "five-byte-form": b"\xf8\x88\x80\x80\x80",
    "six-byte-form": b"\xfc\x84\x80\x80\x80\x80",
    "truncated-sequence": b"\xe2\x82",
    "lone-continuation": b"\x80",
    "latin1-e-acute": b"\xe9",
}


def encodings() -> list[Case]:
    cases = [
        Case(f"invalid-utf8-{name}-in-text", b'{"to": "logistic", "text": "a' + raw + b'b"}', status=400)
        for name, raw in INVALID_UTF8.items()
    ]
    valid = json.dumps(VALID_SEND)
    cases += [
        Case("invalid-utf8-in-a-key", b'{"t\xffo": "logistic", "text": "hi"}', status=400),
        Case("utf8-bom-then-json", b"\xef\xbb\xbf" + valid.encode(), status=400),
        Case("two-utf8-boms-then-json", b"\xef\xbb\xbf\xef\xbb\xbf" + valid.encode(), status=400),
        Case("utf16-with-bom", valid.encode("utf-16"), status=400),
        Case("utf16-be-without-bom", valid.encode("utf-16-be"), status=400),
        Case("utf32-with-bom", valid.encode("utf-32"), status=400),
    ]
    surrogates = {  # not Unicode: refused as a malformed body (400) or as an invalid field (422)
        "text-lone-high-surrogate": b'{"to": "logistic", "text": "a\\ud800b"}',
        "text-lone-low-surrogate": b'{"to": "logistic", "text": "a\\udfffb"}',
        "text-reversed-surrogate-pair": b'{"to": "logistic", "text": "\\udc00\\ud800"}',
        "to-lone-surrogate": b'{"to": "logistic\\ud800", "text": "hi"}',
        "event-lone-surrogate": b'{"event": "new_request\\ud800", "data": {}}',
        "unknown-key-lone-surrogate": b'{"to": "logistic", "text": "hi", "\\ud800": 1}',
    }
    cases += [Case(f"escaped-{name}", body) for name, body in surrogates.items()]
    escaped = {
        "text-escaped-nul": b'{"to": "logistic", "text": "a\\u0000b"}',
        "text-only-nul": b'{"to": "logistic", "text": "\\u0000"}',
        "to-escaped-nul": b'{"to": "logistic\\u0000", "text": "hi"}',
        "event-escaped-nul": b'{"event": "new_request\\u0000", "data": {"id": 1, "requester": "x"}}',
        "unknown-key-nul": b'{"to": "logistic", "text": "hi", "\\u0000": 1}',
        "text-only-unicode-spaces": b'{"to": "logistic", "text": "\\u00a0\\u3000\\u2003"}',
    }
    cases += [Case(f"escaped-{name}", body, status=422) for name, body in escaped.items()]
    return cases


async def _chunks(body: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(body), 65536):
        yield body[start:start + 65536]


def sizes() -> list[Case]:
    big_text = b'{"to": "logistic", "text": "' + b"a" * MIB2 + b'"}'
    return [
        Case("body-2MiB-with-content-length", big_text, status=413),
        Case("body-2MiB-chunked", big_text, chunked=True, status=413),
        Case("body-2MiB-of-x-chunked", b"x" * MIB2, chunked=True, status=413),
        Case("body-2MiB-text-plain", big_text, content_type="text/plain", status=415),
        Case("body-2MiB-text-plain-chunked", big_text, content_type="text/plain", chunked=True, status=415),
        Case("body-64KiB-plus-one", b" " * (64 * 1024 + 1), status=413),
        Case("body-64KiB-plus-one-chunked", b" " * (64 * 1024 + 1), chunked=True, status=413),
        Case("text-4097-chars", js(send_with(text="x" * 4097)), status=422),
        Case("text-4097-emoji", js(send_with(text="🆕" * 4097)), status=422),
        Case("to-257-chars", js(send_with(to="l" * 257)), status=422),
        Case("event-129-chars", js({"event": "e" * 129, "data": {}}), status=422),
        Case("rendered-text-over-4096", js(event_data(requester="B" * 5000)), status=422),
        Case("5000-unknown-fields", js({**VALID_SEND, **{f"k{i}": 0 for i in range(5000)}}), status=422),
    ]


MULTIPART = (
    b'--XyZ\r\nContent-Disposition: form-data; name="to"\r\n\r\nlogistic\r\n'
    b'--XyZ\r\nContent-Disposition: form-data; name="text"\r\n\r\nhi\r\n--XyZ--\r\n'
)


def content_types() -> list[Case]:
    valid = js(VALID_SEND)
    types = {
        "text-plain": "text/plain", "text-json": "text/json", "text-html": "text/html",
        "application-xml": "application/xml", "octet-stream": "application/octet-stream",
        "jsonp": "application/jsonp", "x-json": "application/x-json", "javascript": "application/javascript",
        "json-patch": "application/json-patch+json", "merge-patch": "application/merge-patch+json",
        "problem-json": "application/problem+json", "vnd-api-json": "application/vnd.api+json",
        "ld-json": "application/ld+json", "wildcard": "*/*", "semicolons": ";;;", "bare-json": "json",
        "application-slash": "application/", "json-with-suffix-path": "application/json/x",
        "charset-latin-1": "application/json; charset=latin-1",
        "charset-iso-8859-1": "application/json; charset=iso-8859-1",
        "charset-us-ascii": "application/json; charset=us-ascii",
        "charset-utf-16": "application/json; charset=utf-16",
        "charset-cp1252": "application/json; charset=windows-1252",
    }
    cases = [Case(f"content-type-{name}", valid, content_type=value, status=415) for name, value in types.items()]
    cases += [
        Case("content-type-missing", valid, content_type=None, status=415),
        Case("content-type-form-with-form-body", b"to=logistic&text=hi",
             content_type="application/x-www-form-urlencoded", status=415),
        Case("content-type-multipart-with-multipart-body", MULTIPART,
             content_type="multipart/form-data; boundary=XyZ", status=415),
        Case("content-type-utf16-charset-with-utf16-body", json.dumps(VALID_SEND).encode("utf-16"),
             content_type="application/json; charset=utf-16", status=415),
    ]
    return cases


def authorization() -> list[Case]:
    basic = base64.b64encode(f"{KEY_A}:".encode()).decode()
    wrong = {
        "missing": None,
        "empty": "",
        "scheme-only": "Bearer",
        "wrong-key": "Bearer wrong-key-0000000000",
        "key-prefix": f"Bearer {KEY_A[:-1]}",
        "key-with-suffix": f"Bearer {KEY_A}x",
        "key-upper-case": f"Bearer {KEY_A.upper()}",
        "key-reversed": f"Bearer {KEY_A[::-1]}",
        "basic-scheme": f"Basic {basic}",
        "token-scheme": f"Token {KEY_A}",
        "no-scheme": KEY_A,
        "both-keys-comma-joined": f"Bearer {KEY_A},{KEY_B}",
        "both-keys-space-joined": f"Bearer {KEY_A} {KEY_B}",
        "8000-char-token": "Bearer " + "A" * 8000,
        "non-ascii-utf8-token": "Bearer kéy-ünïcode-ключ",
        "digest": 'Digest username="admin", response="x"',
        "null-token": "Bearer null",
        "star-token": "Bearer *",
        "percent-encoded-nul": "Bearer %00",
        "json-token": 'Bearer {"key": "x"}',
    }
    valid = js(VALID_SEND)
    cases = [Case(f"authorization-{name}", valid, auth=value, status=401) for name, value in wrong.items()]
    cases += [
        Case("api-key-in-x-api-key-header", valid, auth=None, headers=(("X-Api-Key", KEY_A),), status=401),
        Case("api-key-in-query-string", valid, auth=None, path=f"/notify?api_key={KEY_A}", status=401),
        Case("status-without-authorization", None, method="GET",
             path="/notify/00000000-0000-0000-0000-000000000000", auth=None, status=401),
        Case("status-with-wrong-key", None, method="GET",
             path="/notify/00000000-0000-0000-0000-000000000000", auth="Bearer wrong-key-0000000000", status=401),
        Case("authorization-non-ascii-utf8-raw", raw=raw_request(
            "POST", "/notify", [JSON_CT, (b"Authorization", "Bearer kéy".encode())], valid), status=401),
    ]
    return cases


def fields_and_targets() -> list[Case]:
    unknown = {
        "x": 1, "__proto__": {"admin": True}, "constructor": {"prototype": {}}, "TO": "logistic",
        "Text": "hi", "id": "00000000-0000-0000-0000-000000000000", "ids": ["a"],
        "target": {"kind": "phone", "address": "+6281234567890"}, "v": 2, "created_at": "2020-01-01T00:00:00Z",
        "status": "sent", "provider": "twilio", "callback_url": "http://169.254.169.254/", "": "empty key",
        "to ": "trailing space",
    }
    cases = [Case(f"unknown-field-{name or 'empty'}".replace(" ", "-"), js(send_with(**{name: value})), status=422)
             for name, value in unknown.items()]
    forms = {
        "to-only": {"to": "logistic"},
        "text-only": {"text": "hi"},
        "to-text-and-event": {**VALID_SEND, "event": "new_request"},
        "event-and-to": {"event": "new_request", "to": "logistic", "data": {"id": 1, "requester": "x"}},
        "event-and-text": {"event": "new_request", "text": "hi", "data": {"id": 1, "requester": "x"}},
        "to-text-and-data": {**VALID_SEND, "data": {"id": 1}},
        "data-without-event": {"data": {"id": 1, "requester": "x"}},
        "all-null": {"to": None, "text": None, "event": None, "data": None},
    }
    cases += [Case(f"form-{name}", js(body), status=422) for name, body in forms.items()]
    targets = {
        "unknown-alias": "nobody", "empty": "", "blank": "   ", "raw-e164-number": "+6281234567890",
        "raw-national-number": "081234567890", "raw-group-id": "120363195657916590@g.us",
        "dot-dot-slash": "../logistic", "alias-path": "logistic/../purchase", "star": "*", "percent": "%",
        "two-aliases-comma": "logistic,purchase", "bare-group-suffix": "@g.us", "sql": "' OR 1=1 --",
        "template": "{{ 7*7 }}", "crlf-header-injection": "logistic\r\nX-Injected: 1",
        "url": "http://127.0.0.1:15672/api/queues",
    }
    cases += [Case(f"to-{name}", js(send_with(to=value)), status=422) for name, value in targets.items()]
    texts = {"empty": "", "blank": "   ", "whitespace-controls": "\n\t\r\x0b\x0c"}
    cases += [Case(f"text-{name}", js(send_with(text=value)), status=422) for name, value in texts.items()]
    # Duplicate keys whose last value is invalid too (last-wins or refusal: both 4xx)
    cases += [
        Case("duplicate-to-both-unknown", b'{"to": "nobody", "to": "nowhere", "text": "hi"}'),
        Case("duplicate-text-last-empty", b'{"to": "logistic", "text": "hi", "text": ""}'),
    ]
    return cases


def event_requests() -> list[Case]:
    names = {
        "unknown": "no_such_event", "upper-case": "NEW_REQUEST", "trailing-space": "new_request ",
        "dunder-init": "__init__", "dunder-class": "__class__", "path": "../events.toml",
        "template": "{{ 7*7 }}", "crlf-header-injection": "new_request\r\nX-Injected: 1\r\n\r\n", "empty": "",
    }
    cases = [Case(f"event-name-{name}", js({"event": value, "data": {"id": 1, "requester": "x"}}), status=422)
             for name, value in names.items()]
    bodies = {
        "without-data": {"event": "new_request"},
        "data-missing-requester": {"event": "new_request", "data": {"id": 1}},
        "data-missing-id": {"event": "new_request", "data": {"requester": "x"}},
        "id-is-a-template": event_data(id="{{ 7*7 }}"),
        "id-is-a-jinja-loop": event_data(id="{% for i in range(10**9) %}x{% endfor %}"),
        "requester-is-an-object-with-dunder": event_data(requester={"__class__": "{{ 7*7 }}"}),
        "requester-is-a-list-of-templates": event_data(requester=["{{ 7*7 }}"]),
        "requester-rendering-over-4096": event_data(requester="{{ x }}" * 700),
        "purchase-total-is-a-template": purchase(total="{{ 7*7 }}"),
        "budget-without-data": {"event": "budget_exceeded"},
    }
    cases += [Case(f"event-{name}", js(body), status=422) for name, body in bodies.items()]
    return cases


def header_values() -> list[Case]:
    valid = js(VALID_SEND)  # a valid body: only the header is wrong, so 400 proves the header check
    keys = {
        "256-chars": "k" * 256, "1000-chars": "k" * 1000, "8000-chars": "k" * 8000, "empty": "",
        "tab-inside": "key\twith-tab", "non-ascii": "kunci-ключ-🔑",
    }
    cases = [Case(f"idempotency-key-{name}", valid, headers=(("Idempotency-Key", value),), status=400)
             for name, value in keys.items()]
    cases += [
        Case("idempotency-key-invalid-utf8-raw", raw=raw_request(
            "POST", "/notify", [JSON_CT, RAW_AUTH, (b"Idempotency-Key", b"\xff\xfe")], valid), status=400),
        Case("idempotency-key-latin1-raw", raw=raw_request(
            "POST", "/notify", [JSON_CT, RAW_AUTH, (b"Idempotency-Key", "clé".encode("latin-1"))], valid), status=400),
        Case("expect-100-continue-with-2MiB-length", raw=raw_request(
            "POST", "/notify", [JSON_CT, RAW_AUTH, (b"Expect", b"100-continue"),
                                (b"Content-Length", str(MIB2).encode())], b"", length=False), status=413),
        Case("text-crlf-with-unknown-alias", js({"to": "nobody\r\nX-Injected: 1", "text": "a\r\nX-Injected: 1"}),
             status=422),
    ]
    return cases


NO_SUCH_ID = "00000000-0000-0000-0000-000000000000"


def other_routes() -> list[Case]:
    ids = {
        "unknown-uuid": NO_SUCH_ID, "not-a-uuid": "not-a-uuid", "percent-nul": "%00", "sql": "'%20OR%201=1%20--",
        "template": "%7B%7B7*7%7D%7D", "star": "*", "4000-chars": "i" * 4000, "unicode": "%C3%BCn%C3%AFc%C3%B6d%C3%A9",
        "invalid-utf8-percent": "%ff%fe", "dot-dot-encoded": "..%2f..%2fetc%2fpasswd",
    }
    cases = [Case(f"status-id-{name}", None, method="GET", path=f"/notify/{value}", content_type=None, status=404)
             for name, value in ids.items()]
    cases += [Case(f"status-raw-id-{name}", raw=raw_request("GET", f"/notify/{value}", [RAW_AUTH]), status=404)
              for name, value in {"dot-dot-encoded": "..%2f..%2f..%2fetc%2fpasswd",
                                  "double-encoded": "%252e%252e%252f", "semicolon": "x;y=1",
                                  "backslashes": "..%5c..%5cwindows"}.items()]
    wrong_method = [
        ("GET", "/notify"), ("PUT", "/notify"), ("DELETE", "/notify"), ("PATCH", "/notify"),
        ("OPTIONS", "/notify"), ("POST", f"/notify/{NO_SUCH_ID}"), ("DELETE", f"/notify/{NO_SUCH_ID}"),
        ("PUT", f"/notify/{NO_SUCH_ID}"), ("POST", "/healthz"), ("POST", "/readyz"), ("POST", "/metrics"),
        ("DELETE", "/metrics"), ("POST", "/openapi.json"),
    ]
    cases += [Case(f"method-{method}-{path.strip('/').split('/')[0]}{'-id' if path.count('/') > 1 else ''}",
                   js(VALID_SEND), method=method, path=path, status=405)
              for method, path in wrong_method]
    missing = ["/nope", "/admin", "/.env", "/notify.json", "/notify/", "/notify/a/b", "/", "/api/notify",
               "/NOTIFY"]
    cases += [Case(f"route-{path.strip('/').replace('/', '-').replace('.', '') or 'root'}-missing", None,
                   method="GET", path=path, content_type=None, status=404) for path in missing]
    cases.append(Case("route-post-to-root", js(VALID_SEND), path="/", status=404))
    return cases


WEBHOOK_SECRET = "meta-app-secret-hostile-0001"
WEBHOOK_TOKEN = "meta-verify-token-hostile"


def signed(body: bytes, secret: str = WEBHOOK_SECRET) -> tuple[tuple[str, str], ...]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return (("X-Hub-Signature-256", f"sha256={digest}"),)


def webhooks() -> list[Case]:
    """Requests to /webhooks/<channel> from the internet: no API key, a Meta signature."""
    path = "/webhooks/default"
    cases = [Case(f"webhook-unsigned-{name}", body, path=path, auth=None, status=401)
             for name, body in HOSTILE_BODIES]
    shapes = {
        "not-json": b"{nope", "cut-json": b'{"object": "whatsapp_business_account", "entry": [{',
        "array": b"[]", "string": b'"x"', "entry-not-a-list": b'{"object": "whatsapp_business_account", "entry": 1}',
        "statuses-not-a-list": js({"object": "whatsapp_business_account", "entry": [{"changes": [
            {"field": "messages", "value": {"statuses": "delivered"}}]}]}),
        "status-id-missing": js({"object": "whatsapp_business_account", "entry": [{"changes": [
            {"field": "messages", "value": {"statuses": [{"status": "read"}]}}]}]}),
        "status-id-a-number": js({"object": "whatsapp_business_account", "entry": [{"changes": [
            {"field": "messages", "value": {"statuses": [{"id": 7, "status": "read"}]}}]}]}),
        "invalid-utf8": b'{"object": "whatsapp_business_account", "entry": [{"id": "\\xff\xff"}]}',
        "nested-5000": nested(5000),
    }
    cases += [Case(f"webhook-signed-{name}", body, path=path, auth=None, headers=signed(body), status=400)
              for name, body in shapes.items()]
    good = js({"object": "whatsapp_business_account", "entry": [{"changes": [{"field": "messages", "value": {
        "statuses": [{"id": "wamid.x", "status": "read", "timestamp": "1764320000"}]}}]}]})
    digest = signed(good)[0][1]
    wrong_signatures = {
        "other-secret": signed(good, "not-the-secret"), "other-body": signed(good + b" "),
        "sha1-scheme": (("X-Hub-Signature-256", digest.replace("sha256=", "sha1=")),),
        "no-scheme": (("X-Hub-Signature-256", digest.removeprefix("sha256=")),),
        "truncated": (("X-Hub-Signature-256", digest[:-2]),), "empty": (("X-Hub-Signature-256", ""),),
        "old-header-only": (("X-Hub-Signature", digest),),
        "not-hex": (("X-Hub-Signature-256", "sha256=" + "zz" * 32),),
    }
    cases += [Case(f"webhook-signature-{name}", good, path=path, auth=None, headers=headers, status=401)
              for name, headers in wrong_signatures.items()]
    cases += [
        Case("webhook-64KiB-plus-one", b" " * (64 * 1024 + 1), path=path, auth=None, status=413),
        Case("webhook-2MiB-chunked", b"x" * MIB2, path=path, auth=None, chunked=True, status=413),
        Case("webhook-unknown-channel", good, path="/webhooks/nosuch", auth=None, headers=signed(good), status=404),
        Case("webhook-channel-dot-dot", None, method="GET", path="/webhooks/..%2f..%2fadmin", auth=None,
             content_type=None, status=404),
        Case("webhook-no-channel", good, path="/webhooks/", auth=None, status=404),
        Case("webhook-put", good, method="PUT", path=path, auth=None, status=405),
        Case("webhook-handshake-wrong-token", None, method="GET", auth=None, content_type=None, status=403,
             path=f"{path}?hub.mode=subscribe&hub.verify_token=guess&hub.challenge=1"),
        Case("webhook-handshake-no-token", None, method="GET", auth=None, content_type=None, status=403,
             path=f"{path}?hub.mode=subscribe&hub.challenge=1"),
        Case("webhook-handshake-nothing", None, method="GET", path=path, auth=None, content_type=None),
    ]
    return cases


GROUPS: dict[str, list[Case]] = {
    "truncated-send": truncated_send(),
    "truncated-event": truncated_event(),
    "malformed-json": malformed_json(),
    "wrong-types": wrong_types(),
    "huge-numbers": huge_numbers(),
    "deep-nesting": deep_nesting(),
    "encodings-surrogates-nul": encodings(),
    "sizes": sizes(),
    "content-types": content_types(),
    "authorization": authorization(),
    "fields-and-targets": fields_and_targets(),
    "events": event_requests(),
    "headers": header_values(),
    "routes": other_routes(),
}

def found_here() -> list[Case]:
    """Cases this corpus caught in the core, kept as regressions (what they used to get)."""
    surrogate_note = b'{"event": "new_request", "data": {"id": 1, "requester": "x", "note": "\\ud800"}}'
    return [
        # 500: aiohttp decodes header bytes with surrogateescape, key_matches() did token.encode()
        Case("authorization-latin1-byte-raw", raw=raw_request(
            "POST", "/notify", [JSON_CT, (b"Authorization", "Bearer clé".encode("latin-1"))], js(VALID_SEND)),
            status=401),
        Case("authorization-invalid-utf8-raw", raw=raw_request(
            "POST", "/notify", [JSON_CT, (b"Authorization", b"Bearer \xff\xfe")], js(VALID_SEND)), status=401),
        # 500: a lone surrogate in event data reached the rendered text, Notification.to_bytes() failed
        Case("data-requester-lone-surrogate",
             b'{"event": "new_request", "data": {"id": 1, "requester": "a\\ud800b"}}'),
        # 202: a lone surrogate was refused in typed fields but queued inside event data
        Case("lone-surrogate-in-event-data", surrogate_note),
        # 500: idempotency.fingerprint() encoded json.dumps(ensure_ascii=False) as strict UTF-8
        Case("idempotency-key-with-lone-surrogate-in-event-data", surrogate_note,
             headers=(("Idempotency-Key", "surrogate-1"),)),
        # 202: the events "number" type was a lax float: NaN/Infinity/1e400 became nan/inf ("Rp inf") ...
        Case("data-total-is-NaN-token",
             b'{"event": "purchase_approved", "data": {"id": 1, "approver": "x", "total": NaN}}'),
        Case("data-total-is-Infinity-token",
             b'{"event": "purchase_approved", "data": {"id": 1, "approver": "x", "total": Infinity}}'),
        Case("data-total-is-1e400",
             b'{"event": "purchase_approved", "data": {"id": 1, "approver": "x", "total": 1e400}}'),
        Case("data-amount-is-minus-1e400", b'{"event": "budget_exceeded", "data": '
             b'{"id": 1, "requester": "x", "amount": -1e400, "budget": 5}}'),
        # ... and it took booleans and numeric strings ("int" and "bool" were already strict)
        Case("data-total-is-true", js(purchase(total=True)), status=422),
        Case("data-total-is-numeric-string", js(purchase(total="1500000")), status=422),
        # 202: NUL was refused in "text" but not in text rendered from event data
        Case("data-requester-contains-nul", js(event_data(requester="Budi\x00Santoso")), status=422),
        # text/plain 417 from aiohttp's default expect handler, which runs before the middlewares
        Case("expect-header-other-than-100-continue", js(VALID_SEND), headers=(("Expect", "200-ok"),), status=417),
        # 202: duplicate keys, the last one silently won (a proxy or WAF may read the first)
        Case("duplicate-to-last-valid", b'{"to": "nobody", "text": "hi", "to": "logistic"}'),
        Case("duplicate-text-first-empty", b'{"to": "logistic", "text": "", "text": "hi"}'),
    ]


GROUPS["found-here"] = found_here()
WEBHOOK_CASES = webhooks()


# -- sending and judging ----------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    body: bytes = b""


def parse_raw(raw: bytes, *, complete: bool = False) -> Answer | None:
    """The final answer in these bytes (an interim `100 Continue` is skipped); with
    `complete`, None until its whole body (per Content-Length) has arrived."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    while sep and re.match(rb"HTTP/1\.[01] 1\d\d ", head):
        head, sep, body = body.partition(b"\r\n\r\n")
    if not sep:
        return None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        length = int(headers["content-length"])
        if complete and len(body) < length:
            return None
        body = body[:length]
    elif complete:
        return None
    return Answer(int(parts[1]), headers, body)


async def exchange_raw(host: str, port: int, data: bytes, timeout: float = 5.0) -> Answer | None:
    """Write the bytes; read until a whole answer arrived or the server closed."""
    reader, writer = await asyncio.open_connection(host, port)
    received = b""
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                received += chunk
                if (answer := parse_raw(received, complete=True)) is not None:
                    return answer
    except (TimeoutError, ConnectionError):
        pass
    finally:
        writer.close()
    return parse_raw(received)


async def send(client: Any, case: Case) -> Answer | None:
    if case.raw is not None:
        return await exchange_raw(client.server.host, client.server.port, case.raw)
    headers = dict(case.headers)
    if case.auth is not None:
        headers["Authorization"] = case.auth
    if case.content_type is not None:
        headers["Content-Type"] = case.content_type
    data: Any = _chunks(case.body) if case.chunked and case.body is not None else case.body
    skip = () if case.content_type is not None else ("Content-Type",)
    async with client.request(case.method, case.path, data=data, headers=headers, skip_auto_headers=skip) as response:
        return Answer(response.status, {k.lower(): v for k, v in response.headers.items()}, await response.read())


def _secrets(case: Case) -> list[str]:
    secrets = [KEY_A, KEY_B]
    if case.auth:
        token = case.auth.partition(" ")[2] or case.auth
        if len(token) >= 8:
            secrets.append(token)
    return secrets


def problems(case: Case, answer: Answer | None) -> list[str]:
    """What is wrong with this answer (empty when it is right)."""
    if answer is None:
        return ["no answer (timeout or dropped connection)"]
    found = []
    if answer.status >= 500:
        found.append(f"server error {answer.status}")
    elif not 400 <= answer.status < 500:
        found.append(f"status {answer.status}, not a 4xx")
    elif case.status is not None and answer.status != case.status:
        found.append(f"status {answer.status}, expected {case.status}")
    content_type = answer.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        found.append(f"Content-Type {content_type!r}, not application/json")
    else:
        try:
            payload = json.loads(answer.body)
        except ValueError:
            found.append(f"the body is not JSON: {answer.body[:100]!r}")
        else:
            if not (
                isinstance(payload, dict) and set(payload) == {"error", "detail"}
                and all(isinstance(v, str) and v for v in payload.values())
            ):
                found.append(f"the body is not {{error, detail}}: {answer.body[:100]!r}")
    text = answer.body.decode("utf-8", "replace")
    if any(secret in text for secret in _secrets(case)):
        found.append("the answer echoes an API key or the Authorization value")
    if "x-injected" in answer.headers:
        found.append("a header smuggled in through the request appears in the answer")
    return found


def hostile_settings(make_settings: Any) -> Any:
    return make_settings(gateway_api_keys=[KEY_A, KEY_B], group_aliases=ALIASES, gateway_rate_limit=0)


async def server_errors_counted(client: Any) -> list[str]:
    text = await (await client.get("/metrics")).text()
    return [line for line in text.splitlines()
            if line.startswith("wa_http_requests_total{") and re.search(r'status="5\d\d"', line)]


async def valid_request_still_queued(client: Any, amqp: Any, work: str) -> list[str]:
    response = await client.post("/notify", json=VALID_SEND, headers={"Authorization": AUTH})
    if response.status != 202:
        return [f"a valid request after the corpus got {response.status}: {await response.text()}"]
    answer = await response.json()
    messages = await get_all(amqp, work)
    if [m.message_id for m in messages] != [answer["id"]]:
        return [f"after the valid request the queue holds {[m.message_id for m in messages]}, not [{answer['id']}]"]
    return []


# -- the tests --------------------------------------------------------------------------


def test_the_corpus_has_over_200_uniquely_named_cases():
    names = [case.name for cases in GROUPS.values() for case in cases]
    assert len(names) == len(set(names)), sorted({n for n in names if names.count(n) > 1})
    assert sum(len(cases) for cases in GROUPS.values()) >= 200
    assert all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name) for name in names)


@pytest.mark.parametrize("group", list(GROUPS))
async def test_hostile_requests_get_a_json_4xx_and_queue_nothing(group, make_settings, start_gateway, amqp):
    settings = hostile_settings(make_settings)
    client, _ = await start_gateway(settings)
    work = f"{settings.wa_queue_prefix}.notify"
    cases = GROUPS[group]

    failures = []
    for case in cases:
        failures += [f"{case.name}: {problem}" for problem in problems(case, await send(client, case))]
    queued = await queue_size(amqp, work)
    if queued:
        failures.append(f"{queued} message(s) reached the work queue")
    failures += [f"counted as a server error: {line}" for line in await server_errors_counted(client)]
    if not failures:
        failures += await valid_request_still_queued(client, amqp, work)

    assert not failures, f"{group}: {len(failures)} problem(s) over {len(cases)} cases:\n" + "\n".join(failures)


async def test_hostile_webhooks_get_a_json_4xx_and_record_nothing(
    make_settings, aiohttp_client, installed_plugins, amqp
):
    from wa_gateway.gateway import SERVER_OPTIONS, make_app
    from wa_gateway.services import Services

    settings = make_settings(
        wa_provider="meta", wa_api_key="meta-access-token", wa_api_url="http://127.0.0.1:9",
        raw_env={"META_PHONE_NUMBER_ID": "106540352242922", "META_APP_SECRET": WEBHOOK_SECRET,
                 "META_WEBHOOK_VERIFY_TOKEN": WEBHOOK_TOKEN},
        gateway_api_keys=[KEY_A], gateway_rate_limit=0,
    )
    services = Services(settings, installed_plugins)
    await services.check_ledger()
    client = await aiohttp_client(make_app(services), server_kwargs=dict(SERVER_OPTIONS))
    await services.broker.wait_connected(timeout=10)

    failures = []
    for case in WEBHOOK_CASES:
        failures += [f"{case.name}: {problem}" for problem in problems(case, await send(client, case))]
    recorded = await queue_size(amqp, services.topology.ledger_queue)
    if recorded:
        failures.append(f"{recorded} receipt(s) reached {services.topology.ledger_queue}")
    failures += [f"counted as a server error: {line}" for line in await server_errors_counted(client)]
    assert len(WEBHOOK_CASES) >= 40
    assert not failures, f"webhooks: {len(failures)} problem(s) over {len(WEBHOOK_CASES)} cases:\n" + "\n".join(failures)


TEMPLATE_PAYLOADS = [
    "{{ 7*7 }}",
    "{{ 7*'7' }}",
    "{% for i in range(3) %}x{% endfor %}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ config.items() }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ self._TemplateReference__context }}",
    "{# a comment #}",
    "{% raw %}{{ x }}{% endraw %}",
    "${7*7} #{7*7} <%= 7*7 %>",
    "{{",
    "}}{%",
]


async def test_template_syntax_in_event_data_is_sent_as_plain_text(make_settings, start_gateway, amqp):
    settings = hostile_settings(make_settings)
    client, _ = await start_gateway(settings)
    expected = {}
    for payload in TEMPLATE_PAYLOADS:
        response = await client.post(
            "/notify", json=event_data(id=7, requester=payload, note="{{ 7*7 }}"), headers={"Authorization": AUTH}
        )
        assert response.status == 202, (payload, await response.text())
        expected[(await response.json())["id"]] = f"🆕 *REQUEST BARU*\nID: 7\nOleh: {payload}"

    messages = await get_all(amqp, f"{settings.wa_queue_prefix}.notify")

    assert {m.message_id: json.loads(m.body)["text"] for m in messages} == expected


async def test_crlf_in_a_valid_text_is_text_never_a_header(make_settings, start_gateway, amqp):
    settings = hostile_settings(make_settings)
    client, _ = await start_gateway(settings)
    text = "ok\r\nX-Injected: 1\r\nSet-Cookie: a=b\r\n\r\nHTTP/1.1 200 OK\r\n"

    response = await client.post("/notify", json=send_with(text=text), headers={"Authorization": AUTH})

    assert response.status == 202
    assert "X-Injected" not in response.headers and "Set-Cookie" not in response.headers
    [message] = await get_all(amqp, f"{settings.wa_queue_prefix}.notify")
    assert json.loads(message.body)["text"] == text


# -- against a real `wa-gateway serve` --------------------------------------------------

# Framing errors: aiohttp's parser answers these itself (a plain-text 400) before any
# middleware runs, so they cannot be JSON; what must hold is: a 4xx, never a 5xx, an
# answer (or a closed connection) within seconds, and nothing queued.
MALFORMED_HTTP = {
    "garbage-request-line": b"GARBAGE\r\n\r\n",
    "tls-client-hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,
    "http-version-9-9": raw_request("POST", "/notify", [JSON_CT, RAW_AUTH], js(VALID_SEND)).replace(
        b"HTTP/1.1", b"HTTP/9.9", 1),
    "lower-case-method": raw_request("post", "/notify", [JSON_CT, RAW_AUTH], js(VALID_SEND)),
    "space-in-target": b"GET /notify/a b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    "raw-invalid-utf8-in-target": b"GET /notify/\xff\xfe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    "header-without-colon": raw_request("POST", "/notify", [JSON_CT, RAW_AUTH, (b"Broken", b"")], js(VALID_SEND))
    .replace(b"Broken: \r\n", b"Broken\r\n"),
    "space-in-header-name": raw_request("POST", "/notify", [JSON_CT, RAW_AUTH, (b"Bad Name", b"x")], js(VALID_SEND)),
    "obs-fold-continuation": raw_request(
        "POST", "/notify", [JSON_CT, (b"Authorization", AUTH.encode() + b"\r\n folded")], js(VALID_SEND)),
    "nul-in-header-value": raw_request(
        "POST", "/notify", [JSON_CT, RAW_AUTH, (b"Idempotency-Key", b"a\x00b")], js(VALID_SEND)),
    "del-in-header-value": raw_request(
        "POST", "/notify", [JSON_CT, RAW_AUTH, (b"Idempotency-Key", b"key\x7f")], js(VALID_SEND)),
    "bare-cr-in-header-value": raw_request(
        "POST", "/notify", [JSON_CT, RAW_AUTH, (b"Idempotency-Key", b"a\rX-Injected: 1")], js(VALID_SEND)),
    "negative-content-length": raw_request(
        "POST", "/notify", [JSON_CT, RAW_AUTH, (b"Content-Length", b"-1")], js(VALID_SEND), length=False),
    "non-numeric-content-length": raw_request(
        "POST", "/notify", [JSON_CT, RAW_AUTH, (b"Content-Length", b"abc")], js(VALID_SEND), length=False),
    "two-different-content-lengths": raw_request(
        "POST", "/notify", [JSON_CT, RAW_AUTH, (b"Content-Length", b"5"), (b"Content-Length", b"7")],
        js(VALID_SEND), length=False),
    "content-length-and-chunked": raw_request(
        "POST", "/notify", [JSON_CT, RAW_AUTH, (b"Transfer-Encoding", b"chunked")], js(VALID_SEND)),
    "bad-chunk-size": raw_request(
        "POST", "/notify", [JSON_CT, RAW_AUTH, (b"Transfer-Encoding", b"chunked")], b"zz\r\nabc\r\n0\r\n\r\n",
        length=False),
    "unknown-transfer-encoding": raw_request(
        "POST", "/notify", [JSON_CT, RAW_AUTH, (b"Transfer-Encoding", b"x-unknown")], b"{}", length=False),
    "request-line-over-8190": b"GET /notify/" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    "header-over-8190": raw_request(
        "POST", "/notify", [JSON_CT, (b"Authorization", b"Bearer " + b"z" * 9000)], js(VALID_SEND)),
    "idempotency-key-over-8190": raw_request(
        "POST", "/notify", [JSON_CT, RAW_AUTH, (b"Idempotency-Key", b"k" * 9000)], js(VALID_SEND)),
    "200-headers": raw_request(
        "POST", "/notify", [JSON_CT, RAW_AUTH] + [(f"X-H{i}".encode(), b"v") for i in range(200)], js(VALID_SEND)),
}


async def test_malformed_http_gets_a_4xx_from_a_real_server_and_queues_nothing(process_env, amqp, prefix, tmp_path):
    port = free_port()
    live = await spawn_live("serve", process_env(GATEWAY_API_KEYS=f"{KEY_A},{KEY_B}", GATEWAY_RATE_LIMIT="0"),
                            tmp_path / "serve.log", port=port)
    try:
        await live.wait_ready()
        failures = []
        for name, data in MALFORMED_HTTP.items():
            answer = await exchange_raw("127.0.0.1", port, data)
            if answer is None:
                failures.append(f"{name}: no answer within 5 s")
            elif not 400 <= answer.status < 500:
                failures.append(f"{name}: status {answer.status}")
            elif "x-injected" in answer.headers:
                failures.append(f"{name}: a smuggled header in the answer")
        # a body announced but never finished, then the client goes away: no answer is due
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(raw_request("POST", "/notify", [JSON_CT, RAW_AUTH, (b"Content-Length", b"100")],
                                 b'{"to": "logistic"', length=False))
        await writer.drain()
        writer.close()
        # two hostile requests pipelined on one connection: both answered, in order
        pipelined = (raw_request("POST", "/notify", [JSON_CT, RAW_AUTH], b"{").replace(b"Connection: close\r\n", b"")
                     + raw_request("POST", "/notify", [JSON_CT, RAW_AUTH], js(send_with(to="nobody"))))
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(pipelined)
        await writer.drain()
        both = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", both)
        if statuses != [b"400", b"422"]:
            failures.append(f"pipelined: statuses {statuses}")
        if await queue_size(amqp, f"{prefix}.notify"):
            failures.append("something reached the work queue")
        async with aiohttp.ClientSession() as http, http.post(
            f"{live.base}/notify", json=VALID_SEND, headers={"Authorization": AUTH}
        ) as response:
            if response.status != 202:
                failures.append(f"a valid request afterwards got {response.status}")
        assert not failures, "\n".join(failures)
    finally:
        code, _ = await live.stop()
    assert code == 0, live.stderr()[-3000:]


CONTENT_ENCODINGS = {
    "gzip-header-plain-body": ("gzip", js(VALID_SEND)),
    "deflate-header-plain-body": ("deflate", js(VALID_SEND)),
    "br-header-plain-body": ("br", js(VALID_SEND)),
    "zstd-header-plain-body": ("zstd", js(VALID_SEND)),
    "unknown-encoding-plain-body": ("x-unknown", js(VALID_SEND)),
    "gzip-twice-header-once-compressed": ("gzip, gzip", gzip.compress(js(VALID_SEND))),
    "gzip-bomb-2MiB": ("gzip", gzip.compress(b'{"to": "logistic", "text": "' + b"a" * MIB2 + b'"}')),
}


async def test_content_encodings_get_a_json_4xx_from_a_real_server_and_queue_nothing(
    process_env, amqp, prefix, tmp_path
):
    port = free_port()
    live = await spawn_live("serve", process_env(GATEWAY_API_KEYS=f"{KEY_A},{KEY_B}", GATEWAY_RATE_LIMIT="0"),
                            tmp_path / "serve.log", port=port)
    try:
        await live.wait_ready()
        failures = []
        for name, (coding, body) in CONTENT_ENCODINGS.items():
            case = Case(name, raw=raw_request("POST", "/notify", [JSON_CT, RAW_AUTH, (
                b"Content-Encoding", coding.encode())], body))
            answer = await exchange_raw("127.0.0.1", port, case.raw or b"")
            failures += [f"{name}: {problem}" for problem in problems(case, answer)]
        if await queue_size(amqp, f"{prefix}.notify"):
            failures.append("something reached the work queue")
        assert not failures, "\n".join(failures)
    finally:
        await live.stop()
