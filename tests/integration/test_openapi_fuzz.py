"""Schemathesis against a running `wa-gateway serve`: no 5xx, every answer as documented.

The schema is the one the gateway serves at /openapi.json (generated from the pydantic
models). Hypothesis generates schema-valid (positive) and schema-invalid (negative)
requests for each operation, deterministically (derandomized, no example database);
every answer must pass these checks:

- not_a_server_error            no 5xx
- status_code_conformance       the status is documented for the operation
- content_type_conformance      the Content-Type is the documented one
- response_schema_conformance   the body matches the documented schema
- response_headers_conformance  documented headers (Retry-After) are well-formed
- negative_data_rejection       a schema-invalid request is refused with a 4xx

Explicit valid requests (202, an idempotent replay, the status of a queued id) also go
through `ignored_auth`, which repeats them without and with a wrong bearer token and
expects a refusal. Failures are collected (not shrunk) and reported together.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from ..conftest import queue_size
from ..live_gateway import free_port, spawn_live

KEY = "fuzz-key-3f9a1c77e2"
AUTH = {"Authorization": f"Bearer {KEY}"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
]
PLAN = [  # (path, method, mode, max_examples)
    ("/notify", "POST", GenerationMode.POSITIVE, 150),
    ("/notify", "POST", GenerationMode.NEGATIVE, 150),
    ("/notify/{id}", "GET", GenerationMode.POSITIVE, 40),
    ("/notify/{id}", "GET", GenerationMode.NEGATIVE, 40),
    ("/healthz", "GET", GenerationMode.POSITIVE, 5),
    ("/readyz", "GET", GenerationMode.POSITIVE, 5),
    ("/metrics", "GET", GenerationMode.POSITIVE, 5),
]


@dataclass
class Report:
    statuses: Counter[tuple[str, str]] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    @property
    def cases(self) -> int:
        return sum(self.statuses.values())

    def statuses_of(self, label: str) -> set[int]:
        return {int(status) for (where, status) in self.statuses if where.startswith(label)}


def _run(report: Report, label: str, case: Any, session: requests.Session, checks: list[Any]) -> Any:
    try:
        response = case.call_and_validate(headers=AUTH, checks=checks, session=session, timeout=10)
    except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - a failed check is the finding
        status = getattr(getattr(exc, "response", None), "status_code", "?")
        body = case.body if not isinstance(case.body, (bytes, str)) else case.body[:200]
        report.statuses[(label, str(status))] += 1
        report.failures.append(f"{label}: body={body!r} headers={dict(case.headers or {})!r}\n{str(exc)[:1500]}")
        return None
    report.statuses[(label, str(response.status_code))] += 1
    return response


def _explore(report: Report, label: str, operation: Any, mode: GenerationMode, examples: int,
             session: requests.Session) -> None:
    @settings(max_examples=examples, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate], print_blob=False)
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        _run(report, label, case, session, CHECKS)

    run()


def fuzz(base: str) -> Report:
    """Everything in PLAN plus the explicit valid cases; runs in a thread (requests is sync)."""
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json", timeout=10)
    report = Report()
    with requests.Session() as session:
        for path, method, mode, examples in PLAN:
            _explore(report, f"{method} {path} {mode.value}", schema[path][method], mode, examples, session)

        notify, status = schema["/notify"]["POST"], schema["/notify/{id}"]["GET"]
        valid = {"to": "logistic", "text": "🆕 *REQUEST BARU*\nID: 42\nOleh: Budi"}
        checks = [*CHECKS, ignored_auth]
        queued = _run(report, "explicit POST /notify", notify.Case(body=valid, media_type="application/json"),
                      session, checks)
        event = {"event": "new_request", "data": {"id": 42, "requester": "Budi"}}
        _run(report, "explicit POST /notify event", notify.Case(body=event, media_type="application/json"),
             session, checks)
        first, again = (
            _run(report, "explicit POST /notify idempotent",
                 notify.Case(body=valid, media_type="application/json", headers={"Idempotency-Key": "fuzz-1"}),
                 session, checks)
            for _ in range(2)
        )
        if first is not None and again is not None and (
            again.json() != first.json() or again.headers.get("idempotent-replayed") != ["true"]
        ):
            report.failures.append(f"the idempotent retry was not a replay: {first.json()} then {again.json()}")
        if queued is not None:
            _run(report, "explicit GET /notify/{id}", status.Case(path_parameters={"id": queued.json()["id"]}),
                 session, checks)
    return report


async def test_fuzzed_requests_get_documented_answers_and_never_a_5xx(process_env, prefix, tmp_path, amqp):
    port = free_port()
    live = await spawn_live(
        "serve", process_env(GATEWAY_API_KEYS=KEY, GATEWAY_RATE_LIMIT="0"), tmp_path / "serve.log", port=port
    )
    try:
        await live.wait_ready()
        report = await asyncio.to_thread(fuzz, live.base)
        queued = await queue_size(amqp, f"{prefix}.notify")
    finally:
        code, _ = await live.stop()

    assert not report.failures, f"{len(report.failures)} of {report.cases} cases failed:\n\n" + "\n\n".join(
        report.failures[:20]
    )
    assert report.cases >= 380, report.statuses
    # the fuzz reached the validation, not only the auth check: both kinds of refusal
    assert {400, 422} <= report.statuses_of("POST /notify negative")
    assert 422 in report.statuses_of("POST /notify positive")
    assert report.statuses_of("GET /notify/{id}") >= {404}
    assert report.statuses_of("explicit POST") == {202} and report.statuses_of("explicit GET") == {200}
    assert queued == 3  # the valid request, the event and the first idempotent one; the replay queued nothing
    assert code == 0
    stderr = live.stderr()
    assert "Traceback" not in stderr and "unexpected error" not in stderr, stderr[-3000:]
