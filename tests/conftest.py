"""Shared fixtures: a real RabbitMQ, a topology of its own per test, scripted providers.

Every test gets a unique queue prefix (`t<hex>.notify`, `t<hex>.dead` …) and deletes
its queues afterwards, so tests never see each other's messages nor the real `wa.*`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import aiormq
import pytest

from wa_gateway import hookimpl
from wa_gateway.channels import read_channels
from wa_gateway.errors import ConfigError
from wa_gateway.gateway import SERVER_OPTIONS, make_app
from wa_gateway.logs import CONNECTION_LOGGERS
from wa_gateway.models import Notification
from wa_gateway.plugins import PluginSet, make_plugin_manager
from wa_gateway.provider import Capabilities, Provider, ProviderConfig, Receipt
from wa_gateway.services import Services
from wa_gateway.settings import Settings, load_settings
from wa_gateway.topology import Topology
from wa_gateway.worker import Worker

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
LOGISTIC = "120363195657916590@g.us"
BLUEPRINT_TEXT = "🆕 *REQUEST BARU*\nID: 42\nOleh: Budi Śantoso"
_OWN_PREFIXES = ("WA_", "GATEWAY_", "AMQP_", "REDIS_", "DATABASE_", "WATZAP_", "META_", "TWILIO_")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A developer's own settings or .env never leak into a test."""
    for name in list(os.environ):
        if name.startswith(_OWN_PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def amqp() -> AsyncIterator[aio_pika.abc.AbstractRobustConnection]:
    """A plain connection for the test itself: inspect queues, publish garbage."""
    connection = await aio_pika.connect_robust(AMQP_URL)
    yield connection
    await connection.close()


@pytest.fixture
async def cleanup_topology(prefix: str) -> AsyncIterator[list[Topology]]:
    """Topologies the test used; their queues and exchanges are deleted afterwards."""
    used: list[Topology] = [Topology(prefix=prefix)]
    yield used
    for topology in used:
        await delete_topology(topology)


async def delete_topology(topology: Topology) -> None:
    """Delete every queue and exchange of a test's topology."""
    connection = await aio_pika.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        for name in (*topology.all_queues(), topology.ledger_queue, topology.callback_queue,
                     *topology.callback_retry_queues()):
            await channel.queue_delete(name)
        for name in (topology.work, topology.dead):
            await channel.exchange_delete(name)
    finally:
        await connection.close()


@pytest.fixture
def installed_plugins() -> PluginSet:
    """The machine's installed plugins, for tests that ask for them: the three of this repo."""
    plugins = make_plugin_manager(load_entry_points=True)
    missing = {"watzap", "meta", "twilio"} - set(plugins.providers)
    assert not missing, f"install the plugins (make install): {missing}"
    return plugins


@pytest.fixture
def make_settings(
    prefix: str, cleanup_topology: list[Topology], tmp_path: Path
) -> Callable[..., Settings]:
    def factory(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "amqp_url": AMQP_URL,
            "wa_queue_prefix": prefix,
            "wa_retry_delays": [0.2, 0.4],
            "wa_log_outbox": str(tmp_path / "outbox.jsonl"),
            "group_aliases": {"logistic": LOGISTIC},
            "wa_breaker_cooldown": 0.5,
        }
        values.update(overrides)
        raw_env = {"WA_LOG_OUTBOX": values["wa_log_outbox"] or "", **values.pop("raw_env", {})}
        settings = load_settings(None, raw_env=raw_env, **values)
        cleanup_topology.append(topology_of(settings))
        return settings

    return factory


class ScriptedProvider(Provider):
    """A provider whose outcomes a test scripts: each call pops the next one.

    An outcome is an exception instance (raised), a float (seconds to take, then
    succeed) or None (succeed at once). When the script is empty it succeeds.
    """

    name = "scripted"
    capabilities = Capabilities(groups=True, max_text_length=4096, send_rate=float("inf"))
    script: list[Any] = []
    calls: list[Notification] = []
    in_flight = 0
    max_in_flight = 0
    entered: asyncio.Event | None = None

    def __init__(self, config: ProviderConfig) -> None:
        super().__init__(config)
        self.closed = False

    async def send(self, message: Notification) -> Receipt:
        cls = type(self)
        cls.calls.append(message)
        cls.in_flight += 1
        cls.max_in_flight = max(cls.max_in_flight, cls.in_flight)
        if cls.entered is not None:
            cls.entered.set()
        try:
            outcome = cls.script.pop(0) if cls.script else None
            if isinstance(outcome, BaseException):
                raise outcome
            if isinstance(outcome, (int, float)):
                await asyncio.sleep(outcome)
            return Receipt(provider=self.name, provider_message_id=f"scripted-{len(cls.calls)}")
        finally:
            cls.in_flight -= 1

    async def close(self) -> None:
        self.closed = True


class _ScriptedPlugin:
    @hookimpl
    def register_providers(self, register: Any) -> None:
        register("scripted", ScriptedProvider)


@pytest.fixture
def scripted() -> type[ScriptedProvider]:
    """The scripted provider class, reset for this test."""
    ScriptedProvider.script = []
    ScriptedProvider.calls = []
    ScriptedProvider.in_flight = 0
    ScriptedProvider.max_in_flight = 0
    ScriptedProvider.entered = asyncio.Event()
    return ScriptedProvider


@pytest.fixture
def plugins() -> PluginSet:
    """Built-ins plus the scripted provider; none of the machine's installed plugins."""
    return make_plugin_manager(load_entry_points=False, extra_plugins=[_ScriptedPlugin()])


@pytest.fixture
def start_gateway(aiohttp_client: Any, plugins: PluginSet) -> Callable[..., Any]:
    """Start the gateway app for some settings; returns (client, services)."""

    async def start(settings: Settings, *, wait_broker: bool = True) -> tuple[Any, Services]:
        services = Services(settings, plugins)
        await services.check_ledger()  # as a process does at start: SQLite is migrated here
        client = await aiohttp_client(make_app(services), server_kwargs=dict(SERVER_OPTIONS))
        if wait_broker:
            await services.broker.wait_connected(timeout=10)
        return client, services

    return start


@pytest.fixture
async def start_worker() -> AsyncIterator[Callable[..., Any]]:
    """Start a worker on (possibly shared) services; stopped when the test ends."""
    running: list[tuple[Worker, Any]] = []

    async def start(services: Services, provider: str | None = None, fallback: str | None = None) -> Worker:
        stack = services.opened()
        await stack.__aenter__()
        settings, plugins = services.settings, services.plugins
        if not services.channels.legacy:  # several channels: every sender as configured
            providers = {name: plugins.create(sender.provider, sender.config)
                         for name, sender in services.channels.senders.items()}
            worker = Worker(services, providers=providers)
        else:
            primary = plugins.create(provider or settings.wa_provider, settings.provider_config())
            second = plugins.create(fallback, settings.provider_config(fallback=True)) if fallback else None
            worker = Worker(services, primary, fallback=second)
        await asyncio.wait_for(worker.start(), 10)
        running.append((worker, stack))
        return worker

    yield start
    for worker, stack in reversed(running):
        await worker.stop(timeout=5)
        await stack.__aexit__(None, None, None)


async def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll until predicate() (sync or async) is truthy; fail the test on timeout."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


async def queue_size(connection: aio_pika.abc.AbstractConnection, name: str) -> int:
    channel = await connection.channel()
    try:
        queue = await channel.declare_queue(name, passive=True)
        return int(queue.declaration_result.message_count)
    except aiormq.exceptions.ChannelNotFoundEntity:
        return 0
    finally:
        if not channel.is_closed:
            await channel.close()


async def get_all(connection: aio_pika.abc.AbstractConnection, name: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Take every message of a queue (acked: the test owns the queue)."""
    channel = await connection.channel()
    queue = await channel.declare_queue(name, passive=True)
    messages = []
    while (message := await queue.get(no_ack=True, fail=False)) is not None:
        messages.append(message)
    await channel.close()
    return messages


def outbox_lines(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def topology_of(settings: Settings) -> Topology:
    """The topology these settings declare, every channel's queues included."""
    try:
        channels = read_channels(settings).routable
    except ConfigError:  # a test of a wrong channel setting declares nothing
        channels = ("default",)
    return Topology(tuple(settings.wa_retry_delays), settings.wa_queue_prefix, channels, settings.wa_ledger,
                    settings.callbacks)


REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_ADMIN_URL = os.environ.get("POSTGRES_TEST_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
"""A role that may create databases, and a database to connect to while doing it."""


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A PostgreSQL database of this test's own, without schema; dropped afterwards."""
    import asyncpg

    name = f"wa_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(POSTGRES_ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield urlunsplit(urlsplit(POSTGRES_ADMIN_URL)._replace(path=f"/{name}"))
    admin = await asyncpg.connect(POSTGRES_ADMIN_URL)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def redis_url(prefix: str) -> AsyncIterator[str]:
    """The real Redis; this test's keys (prefixed like its queues) are deleted afterwards."""
    import redis.asyncio as redis

    yield REDIS_URL
    client = redis.Redis.from_url(REDIS_URL)
    keys = [key async for key in client.scan_iter(f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
def process_env(prefix, tmp_path, cleanup_topology):
    cleanup_topology.append(Topology((0.2, 0.4), prefix))  # the WA_RETRY_DELAYS below

    def env(**extra: str) -> dict[str, str]:
        values = {
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", str(tmp_path)),
            "AMQP_URL": AMQP_URL,
            "WA_QUEUE_PREFIX": prefix,
            "WA_GROUP_LOGISTIC_ID": LOGISTIC,
            "WA_LOG_OUTBOX": str(tmp_path / "outbox.jsonl"),
            "WA_RETRY_DELAYS": "0.2,0.4",
            "WA_SHUTDOWN_TIMEOUT": "5",
        }
        values.update(extra)
        return values

    return env


async def spawn(command: str, env: dict[str, str], *options: str) -> asyncio.subprocess.Process:
    """Start `wa-gateway <command>`; its output goes to files, so a chatty process never
    blocks on a full pipe. Read them with `finish()` / `output()`."""
    out = tempfile.NamedTemporaryFile(prefix=f"wa-{command}-", suffix=".out", delete=False)
    err = tempfile.NamedTemporaryFile(prefix=f"wa-{command}-", suffix=".err", delete=False)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wa_gateway.cli", "--env-file", "", *options, command,
        env=env, stdout=out, stderr=err,
    )
    out.close()
    err.close()
    _OUTPUT[process.pid] = (Path(out.name), Path(err.name))
    _SPAWNED.append(process)
    return process


_OUTPUT: dict[int, tuple[Path, Path]] = {}
_SPAWNED: list[asyncio.subprocess.Process] = []


@pytest.fixture(autouse=True)
def kill_leftover_processes():
    """A test that fails before it stops its processes must not leave them running."""
    yield
    while _SPAWNED:
        process = _SPAWNED.pop()
        if process.returncode is None:  # the loop is gone: signal by pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)


def output(process: asyncio.subprocess.Process) -> tuple[str, str]:
    """(stdout, stderr) of a spawned process so far."""
    out, err = _OUTPUT[process.pid]
    return out.read_text(encoding="utf-8", errors="replace"), err.read_text(encoding="utf-8", errors="replace")


async def finish(
    process: asyncio.subprocess.Process, sig: int | None = signal.SIGTERM, timeout: float = 15
) -> tuple[int, str]:
    """Signal the process (unless sig is None), wait for it; return (exit code, stderr)."""
    if sig is not None:
        process.send_signal(sig)
    await asyncio.wait_for(process.wait(), timeout)
    _, stderr = output(process)
    return process.returncode, stderr


async def wait_ready(port: int, timeout: float = 20) -> None:
    """Wait until a spawned gateway on `port` answers /readyz with 200."""
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async def ready() -> bool:
            try:
                async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                    return response.status == 200
            except aiohttp.ClientConnectionError:
                return False

        await wait_for(ready, timeout=timeout, interval=0.2)


SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/lib/rabbitmq/bin")


def sbin_tool(name: str) -> str:
    """The path of a server tool such as rabbitmqctl. Debian installs them in /usr/sbin,
    which a non-root user's PATH lacks; so look there too (as scripts/ensure-service.sh
    does). The bare name when it is nowhere, for subprocess to report."""
    import shutil

    return shutil.which(name) or shutil.which(name, path=os.pathsep.join(SBIN_DIRS)) or name


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """cli.main configures logging for the whole process; give the next test it back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in CONNECTION_LOGGERS}
    yield
    root.handlers = handlers
    root.setLevel(level)
    for name, saved in levels.items():
        logging.getLogger(name).setLevel(saved)


def communicate_all(
    running: dict[str, tuple[list[str], subprocess.Popen[str]]], timeout: float
) -> dict[str, subprocess.CompletedProcess[str]]:
    """Wait for processes started together (each spends a second importing); whatever is
    still running when the test gives up is killed."""
    done = {}
    try:
        for name, (command, process) in running.items():
            stdout, stderr = process.communicate(timeout=timeout)
            done[name] = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    finally:
        for _, process in running.values():
            if process.poll() is None:
                process.kill()
                process.communicate()
    return done
