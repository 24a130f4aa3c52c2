"""Reading a request body strictly: bounded in size and time, inflated here, strict JSON.

Every way a body can be wrong is a 4xx with one sentence (413, 408, 415, 400 or 422),
never a 500 and never a handler held for ever; the limits are what openapi.py documents.
"""

from __future__ import annotations

import asyncio
import json
import math
import zlib

from aiohttp import HttpVersion11, web
from aiohttp.web_protocol import RequestPayloadError

from .api_errors import ApiError, error_response

MAX_BODY = 64 * 1024
BODY_TIMEOUT = 10.0
TOO_LARGE = f"the body is larger than {MAX_BODY} bytes"


async def read_json_object(request: web.Request) -> dict:
    """The body as a JSON object, or the right 4xx: 415, 413, 400 or 422."""
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send Content-Type: application/json")
    charset = request.charset
    if charset is not None and charset.lower().replace("_", "-") not in ("utf-8", "utf8"):
        raise ApiError(415, "unsupported_media_type", "the body must be UTF-8")
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip", "x-gzip", "deflate"):
        raise ApiError(415, "unsupported_media_type", f"Content-Encoding {encoding!r} is not supported")
    if _announces_too_much(request):
        raise ApiError(413, "body_too_large", TOO_LARGE)
    raw = await _read_body(request)
    if encoding != "identity":
        raw = _inflate(raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid UTF-8 (byte {exc.start})") from None
    return parse_json_object(text)


def _announces_too_much(request: web.Request) -> bool:
    """Content-Length over MAX_BODY: refuse before reading (or inviting) the body."""
    return request.content_length is not None and request.content_length > MAX_BODY


async def _read_body(request: web.Request) -> bytes:
    """The raw body, read within BODY_TIMEOUT: a client that announces a body and never
    sends it must not hold a handler for ever. A body that has arrived whole (a small one
    comes in the same packets as the head) is read without arming the deadline."""
    try:
        if request.content.is_eof():  # nothing to wait for: the body is all buffered
            return await request.read()
        async with asyncio.timeout(BODY_TIMEOUT):
            return await request.read()
    except TimeoutError:
        raise ApiError(408, "body_timeout", f"the body did not arrive within {BODY_TIMEOUT:g} s") from None
    except RequestPayloadError as exc:
        raise ApiError(400, "invalid_body", f"the body could not be read ({exc})") from None


def _inflate(raw: bytes) -> bytes:
    """gzip / zlib-deflate bodies, decompressed here (not by aiohttp) so that a bomb stops
    at MAX_BODY and a corrupt body is a 400, not a 500."""
    decompressor = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header
    try:
        body = decompressor.decompress(raw, MAX_BODY + 1)
    except zlib.error as exc:
        raise ApiError(400, "invalid_body", f"the body is not what its Content-Encoding says ({exc})") from None
    if len(body) > MAX_BODY or decompressor.unconsumed_tail:
        raise ApiError(413, "body_too_large", f"the decompressed body is larger than {MAX_BODY} bytes")
    if not decompressor.eof:
        raise ApiError(400, "invalid_body", "the compressed body is truncated")
    return body


def parse_json_object(text: str) -> dict:
    """Strict JSON: no NaN/Infinity, no number beyond a double, no duplicate keys (a
    proxy that reads the first and we the last would disagree), no lone surrogates."""
    try:
        body = _DECODER.decode(text)
    except _OutOfRange as exc:
        raise ApiError(422, "invalid_field", str(exc)) from None
    except ValueError as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, "invalid_json", "the body is nested too deeply") from None
    if "\\u" in text:  # only \u escapes can smuggle in a lone surrogate
        try:
            json.dumps(body, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(400, "invalid_json", "the body contains a lone surrogate, which is not Unicode") from None
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_field", "the body must be a JSON object")
    return body


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


class _OutOfRange(ValueError):
    """Valid JSON, but a number no double can hold: a wrong value (422), not bad syntax."""


def _finite_float(literal: str) -> float:
    value = float(literal)
    if math.isinf(value):
        raise _OutOfRange(f"the number {literal[:20]} is out of range")
    return value


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    body = dict(pairs)
    if len(body) != len(pairs):
        seen: set[str] = set()
        duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))  # type: ignore[func-returns-value]
        raise ValueError(f"the key {duplicate!r} appears twice")
    return body


_DECODER = json.JSONDecoder(
    parse_constant=_refuse_constant, parse_float=_finite_float, object_pairs_hook=_unique_keys
)
"""Built once: json.loads with hooks builds a decoder and its scanner on every call."""


async def expect_continue(request: web.Request) -> web.StreamResponse | None:
    """Answer `Expect:` as the rest of the API does: in JSON, and 413 before the body
    is sent (aiohttp's default handler runs before the middlewares, in plain text)."""
    if request.version != HttpVersion11:
        return None
    if request.headers.get("Expect", "").lower() != "100-continue":
        return error_response(417, "expectation_failed", "only 'Expect: 100-continue' is supported")
    if _announces_too_much(request):
        return error_response(413, "body_too_large", TOO_LARGE)
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # the interim answer is not part of the response
    return None
