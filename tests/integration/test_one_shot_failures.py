"""A one-shot command (`send`, `status`, `dlq …`) that cannot use RabbitMQ or Redis ends
with ONE line on stderr, `wa-gateway: error: …`, and exit status 2: no traceback, and
none of the connection log records aiormq and the broker write while they retry.

Every case runs the command line as a subprocess with a clean environment in an empty
directory. The processes start together (a module fixture); the ones aimed at a closed
port run `main()` with CONNECT_TIMEOUT shortened from 10 s to WAIT, so they give up
sooner, having gone through the same reconnecting (and the same log records) meanwhile.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest

from wa_gateway.topology import Topology

from ..conftest import AMQP_URL, delete_topology

TIMEOUT = 25
"""Seconds a command may take at most: a wait for RabbitMQ, start-up, a loaded machine."""
WAIT = 3
"""Seconds the closed-port cases wait for RabbitMQ: a few connection attempts, each logged."""
WITH_SHORT_WAIT = (
    "import sys; from wa_gateway.commands import connect; "
    f"connect.CONNECT_TIMEOUT = {WAIT}; from wa_gateway.cli import main; sys.exit(main())"
)

COMMANDS = {
    "send": ("send", "--to", "+6281234567890", "--text", "hi"),
    "status": ("status",),
    "dlq_list": ("dlq", "list"),
    "dlq_replay": ("dlq", "replay", "--all"),
    "dlq_purge": ("dlq", "purge", "--yes"),
}


def _free_port() -> int:
    """A local port nobody listens on: connecting to it is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


_BROKER = urlsplit(AMQP_URL)
CLOSED_PORT_URL = f"amqp://guest:guest@127.0.0.1:{_free_port()}/"
WRONG_PASSWORD = "wrong"
WRONG_PASSWORD_URL = f"amqp://guest:{WRONG_PASSWORD}@{_BROKER.hostname}:{_BROKER.port or 5672}/"


@dataclass(frozen=True)
class Outcome:
    code: int
    stdout: str
    stderr: str


MODULE = ("-m", "wa_gateway.cli")
"""Each case's arguments start with how python runs the command line: two arguments."""
CASES: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {}
for _name, _args in COMMANDS.items():
    CASES[f"closed_port-{_name}"] = (("-c", WITH_SHORT_WAIT, *_args), {"AMQP_URL": CLOSED_PORT_URL})
    CASES[f"wrong_password-{_name}"] = ((*MODULE, *_args), {"AMQP_URL": WRONG_PASSWORD_URL})
CASES["redis_down-status"] = (
    (*MODULE, "status"), {"AMQP_URL": AMQP_URL, "REDIS_URL": f"redis://127.0.0.1:{_free_port()}/0"}
)
PREFIX = f"t{uuid.uuid4().hex[:12]}"
"""The queue prefix of every case; only `redis_down` reaches RabbitMQ and declares them."""


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    clean = {name: os.environ[name] for name in ("PATH", "HOME") if name in os.environ}
    directories = {name: tmp_path_factory.mktemp(name) for name in CASES}  # not thread-safe

    def run(name: str, args: tuple[str, ...], env: dict[str, str]) -> Outcome:
        result = subprocess.run(
            [sys.executable, *args[:2], "--env-file", "", *args[2:]],
            env={**clean, "WA_ALLOW_RAW_TARGETS": "true", "WA_QUEUE_PREFIX": PREFIX, **env},
            cwd=directories[name],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        return Outcome(result.returncode, result.stdout, result.stderr)

    try:
        with concurrent.futures.ThreadPoolExecutor(len(CASES)) as pool:
            running = {name: pool.submit(run, name, *case) for name, case in CASES.items()}
            return {name: future.result() for name, future in running.items()}
    finally:
        asyncio.run(delete_topology(Topology(prefix=PREFIX)))




def one_error_line(outcome: Outcome) -> str:
    """The only thing on stderr: one line, no traceback, no log record."""
    assert outcome.code == 2, outcome.stderr
    lines = outcome.stderr.splitlines()
    assert len(lines) == 1, outcome.stderr
    assert lines[0].startswith("wa-gateway: error: ")
    assert outcome.stdout == ""
    return lines[0]


@pytest.mark.parametrize("command", COMMANDS)
def test_unreachable_rabbitmq_is_one_line_naming_it_without_the_password(
    outcomes: dict[str, Outcome], command: str
) -> None:
    outcome = outcomes[f"closed_port-{command}"]
    line = one_error_line(outcome)
    port = urlsplit(CLOSED_PORT_URL).port
    assert f"RabbitMQ at amqp://guest:***@127.0.0.1:{port}/ did not answer within {WAIT} s" in line
    assert "guest:guest" not in line


@pytest.mark.parametrize("command", COMMANDS)
def test_refused_password_is_one_line_at_once(outcomes: dict[str, Outcome], command: str) -> None:
    """At once: a command that waited out the timeout would say "did not answer" instead."""
    line = one_error_line(outcomes[f"wrong_password-{command}"])
    assert "refused the user name or password" in line
    assert "did not answer" not in line
    assert f"AMQP_URL is {WRONG_PASSWORD_URL.replace(WRONG_PASSWORD, '***')}" in line


def test_status_with_redis_down_is_one_line_about_redis(outcomes: dict[str, Outcome]) -> None:
    line = one_error_line(outcomes["redis_down-status"])
    assert "Redis" in line and "REDIS_URL" in line
