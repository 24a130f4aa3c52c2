"""The OpenAPI document, generated from the pydantic models the handlers use.

Nothing here is written by hand except the list of routes and their answers, so the
schema cannot drift from what the gateway validates and returns.
"""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from . import __version__
from .http_body import BODY_TIMEOUT, MAX_BODY
from .models import DeliveryStatus, ErrorAnswer, NotifyRequest, Queued

_REF = "#/components/schemas/{model}"


def _json(model: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": _REF.format(model=model)}}}


def _error(description: str, headers: tuple[str, ...] = ()) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description, "content": _json("ErrorAnswer")}
    if headers:
        answer["headers"] = {h: {"schema": {"type": "string"}, "description": "seconds"} for h in headers}
    return answer


def build_openapi(*, auth: bool) -> dict[str, Any]:
    _, definitions = models_json_schema(
        [(m, "validation" if m is NotifyRequest else "serialization")
         for m in (NotifyRequest, Queued, ErrorAnswer, DeliveryStatus)],
        ref_template=_REF,
    )
    errors = {
        "400": _error("Malformed JSON, invalid UTF-8, a corrupt compressed body or a bad Idempotency-Key"),
        "401": _error("Missing or wrong bearer token"),
        "408": _error(f"The announced body did not arrive within {BODY_TIMEOUT:g} s"),
        "413": _error(f"Body larger than {MAX_BODY} bytes"),
        "415": _error("Not application/json (UTF-8), or a Content-Encoding other than gzip/deflate"),
        "417": _error("An Expect header other than 100-continue"),
        "422": _error("A field is invalid: unknown alias or event, empty or too long text, "
                      "a target the provider cannot serve, missing event data"),
        "429": _error("Over this API key's rate limit", ("Retry-After",)),
        "503": _error("Nothing was queued (RabbitMQ unreachable or blocked by an alarm, the "
                      "gateway stopping, the store down for an Idempotency-Key), or RabbitMQ did "
                      "not confirm in time and the message may or may not be queued: retry with "
                      "the same Idempotency-Key", ("Retry-After",)),
    }
    security: list[dict[str, list[str]]] = [{"bearer": []}] if auth else []
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "wa-gateway",
            "version": __version__,
            "description": "WhatsApp notification gateway: POST a notification, it is queued "
                           "durably in RabbitMQ and sent by a worker through the configured provider.",
        },
        "paths": {
            "/notify": {
                "post": {
                    "summary": "Queue a notification ({to, text} or {event, data})",
                    "operationId": "notify",
                    "security": security,
                    "parameters": [{
                        "name": "Idempotency-Key", "in": "header", "required": False,
                        "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                        "description": "Same key within 24 h: the first answer, sent once",
                    }],
                    "requestBody": {"required": True, "content": _json("NotifyRequest")},
                    "responses": {
                        "202": {"description": "Queued (RabbitMQ confirmed the persistent message)",
                                "content": _json("Queued"),
                                "headers": {"Idempotent-Replayed": {
                                    "schema": {"type": "string", "enum": ["true"]},
                                    "description": "present when this is the first answer to an earlier request with the same Idempotency-Key"}}},
                        **errors,
                    },
                }
            },
            "/notify/{id}": {
                "get": {
                    "summary": "Delivery status of a notification",
                    "operationId": "status",
                    "security": security,
                    "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
                    "responses": {
                        "200": {"description": "queued, retrying, sent or dead", "content": _json("DeliveryStatus")},
                        "401": errors["401"],
                        "404": _error("Unknown id"),
                    },
                }
            },
            "/healthz": {"get": {"summary": "The process is up", "operationId": "healthz", "security": [],
                                 "responses": {"200": {"description": "up"}}}},
            "/readyz": {"get": {"summary": "Broker connected and provider configured", "operationId": "readyz",
                                "security": [],
                                "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}}}},
            "/openapi.json": {"get": {"summary": "This document", "operationId": "openapi", "security": [],
                                      "responses": {"200": {"description": "OpenAPI 3.1",
                                                            "content": {"application/json": {"schema": {"type": "object"}}}}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "operationId": "metrics", "security": [],
                                 "responses": {"200": {"description": "text exposition format",
                                                       "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        },
        "components": {
            "schemas": definitions["$defs"],
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
