"""What a provider's API must receive, written down, and the checks that compare a
recorded request with it: the same method, path, content type and body, and texts
that arrive as UTF-8, byte for byte, in order."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .fake_api import RecordedRequest

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class WireRequest:
    """A request exactly as the provider's API must receive it.

    `body` is compared with the recorded body decoded by `content_type`: for JSON the
    parsed value (`{"type": "image", "image": {...}}`), for a url-encoded form a dict of
    its fields, each once (`{"To": "whatsapp:+62…", "MediaUrl": "https://…"}`)."""

    path: str
    body: Any
    content_type: str = JSON
    method: str = "POST"


def decoded_body(request: RecordedRequest) -> Any:
    """The recorded body by its content type: JSON parsed, a form as a dict, else bytes."""
    if request.content_type == JSON:
        return request.json()
    if request.content_type == FORM:
        return request.form()
    return request.body


def check_wire(request: RecordedRequest, expected: WireRequest, what: str) -> None:
    """`request` is `expected`: method, path, content type and decoded body."""
    got = (request.method, request.path, request.content_type)
    want = (expected.method, expected.path, expected.content_type)
    assert got == want, f"{what}: {got} is not {want}"
    body = decoded_body(request)
    assert body == expected.body, f"{what}: the body\n  {body!r}\nis not\n  {expected.body!r}"


def check_texts_arrive_exactly(request: RecordedRequest, texts: Sequence[str], what: str) -> None:
    """Each of `texts` is in the body as UTF-8 (not `\\u` escapes, not another
    encoding), in this order: in the raw bytes of a JSON body, in the strictly decoded
    fields of a form (a JSON string inside a field counts, in its UTF-8 form)."""
    if request.content_type == FORM:
        haystack = "\n".join(request.form().values())
        needles = [_either(text, haystack) for text in texts]
    else:
        haystack = request.body.decode("utf-8", errors="strict")
        needles = [_json_string(text) if request.content_type == JSON else text for text in texts]
    position = 0
    for text, needle in zip(texts, needles, strict=True):
        found = haystack.find(needle, position)
        assert found >= 0, (
            f"{what}: {text!r} is not in the body as UTF-8 after position {position}: {haystack!r}"
        )
        position = found + len(needle)


def _json_string(text: str) -> str:
    """`text` as it stands inside a JSON string written with UTF-8, not ASCII escapes."""
    return json.dumps(text, ensure_ascii=False)[1:-1]


def _either(text: str, haystack: str) -> str:
    """`text` itself when the field holds it raw, else its JSON form (a JSON field)."""
    return text if text in haystack else _json_string(text)
