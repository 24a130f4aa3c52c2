"""The `wa-gateway` command. A mistake the user can fix is one line on stderr, exit 2."""

from __future__ import annotations

import argparse
import asyncio
import functools
import ipaddress
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from .channels import DEFAULT
from .commands.connect import connected_or_fail
from .compose import InvalidNotification, build_notifications, parse_request
from .errors import UserError
from .events import EventsFileError
from .gateway import SERVER_OPTIONS, STOPPING, make_app, make_probe_app
from .http_server import GatewayRunner, Limits, raise_fd_limit
from .logs import configure_logging
from .plugins import PluginSet, UnknownProvider, make_plugin_manager
from .provider import Provider, ProviderConfigError
from .services import Services
from .settings import ConfigError, Settings, load_settings
from .supervisor import serve_processes
from .topology import TopologyMismatch
from .worker import Worker

log = logging.getLogger("wa_gateway")

LONG_RUNNING = ("serve", "worker", "run")
"""Commands that run until stopped and log as they go. Every other command is one-shot:
it logs warnings only, and a failure is its one error line."""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _services(settings: Settings, plugins: PluginSet, name: str, *, serves_http: bool = True) -> Services:
    try:
        return Services(settings, plugins, connection_name=name, serves_http=serves_http)
    except UnknownProvider as exc:
        raise UserError(f"WA_PROVIDER: {exc}") from None


def _providers(services: Services) -> dict[str, Provider]:
    """Build every sender's provider now, so bad credentials stop start-up."""
    providers = {}
    for name, sender in services.channels.senders.items():
        if services.channels.legacy:  # the first release's variable names
            variable = "WA_PROVIDER" if name == DEFAULT else "WA_FALLBACK_PROVIDER"
            what = f"provider {sender.provider!r}" if name == DEFAULT else f"fallback provider {sender.provider!r}"
        else:
            variable = f"WA_CHANNEL_{name.upper()}_PROVIDER"
            what = f"channel {name!r} ({sender.provider})"
        try:
            providers[name] = services.plugins.create(sender.provider, sender.config)
        except UnknownProvider as exc:
            raise UserError(f"{variable}: {exc}") from None
        except ProviderConfigError as exc:
            raise UserError(f"{what}: {exc}") from None
    return providers


def _check_api_keys(settings: Settings) -> None:
    if not settings.api_keys and not _is_loopback(settings.gateway_host):
        raise UserError(
            f"GATEWAY_API_KEYS is empty but GATEWAY_HOST={settings.gateway_host} is not loopback; "
            "set API keys or listen on 127.0.0.1"
        )


async def run_process(settings: Settings, *, serve: bool, work: bool, plugins: PluginSet | None = None) -> None:
    """Run the gateway, the worker, or both, until SIGTERM/SIGINT; then stop cleanly."""
    if serve:
        _check_api_keys(settings)
    raise_fd_limit(settings.gateway_max_connections if serve or settings.wa_metrics_port else None)
    plugins = plugins if plugins is not None else make_plugin_manager()
    name = "wa-gateway " + "+".join(p for p, on in (("serve", serve), ("worker", work)) if on)
    services = _services(settings, plugins, name, serves_http=serve)
    providers = _providers(services)
    await services.check_ledger()
    if not work:
        for provider in providers.values():
            await provider.close()
    if settings.redis_url is None:
        level = logging.INFO if serve and work else logging.WARNING
        log.log(level, "REDIS_URL is not set: delivery status and idempotency keys live in this "
                "process only (right for `run`; set REDIS_URL when serve and worker run apart)")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    failure: list[BaseException] = []

    async with services.opened():
        watch = asyncio.create_task(_watch_broker(services, stop, failure))
        runner = None
        app = None
        if serve:
            app = make_app(services)
            runner = await _listen(app, settings, settings.gateway_port)
            log.info("gateway listening on http://%s:%s", settings.gateway_host, settings.gateway_port)
        elif settings.wa_metrics_port:
            app = make_probe_app(services)
            runner = await _listen(app, settings, settings.wa_metrics_port)
            log.info("metrics on http://%s:%s/metrics", settings.gateway_host, settings.wa_metrics_port)
        worker = Worker(services, providers=providers) if work else None
        worker_start = asyncio.create_task(worker.start()) if worker else None
        await stop.wait()
        log.info("stopping: no new requests, finishing in-flight work")
        # One deadline for the whole stop, whatever RabbitMQ does (stalled, blocked by an
        # alarm): each step gets what is left of it, and the connection is dropped at the
        # end if RabbitMQ does not answer, which gives back every message still held.
        stop_by = loop.time() + settings.wa_shutdown_timeout

        def left() -> float:
            return max(SHUTDOWN_STEP_MIN, stop_by - loop.time())

        if runner is not None and app is not None:
            app[STOPPING]["value"] = True
            await _bounded(runner.cleanup(), left(), "the HTTP server")
        if worker is not None and worker_start is not None:
            if not worker_start.done():
                worker_start.cancel()
            await asyncio.gather(worker_start, return_exceptions=True)
            await _bounded(worker.stop(left()), left() + SHUTDOWN_STEP_MIN, "the worker")
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)
        services.close_timeout = left()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(sig)
    if failure:
        raise UserError(str(failure[0]))
    log.info("stopped")


SHUTDOWN_STEP_MIN = 0.5
"""Seconds every stop step gets even when the deadline has passed: enough to close a
healthy connection cleanly, short enough that a stalled one cannot hold the exit."""


async def _bounded(step: Awaitable[object], timeout: float, what: str) -> None:
    try:
        await asyncio.wait_for(step, timeout)
    except TimeoutError:
        log.warning("%s did not stop within the shutdown timeout; going on", what)


async def _listen(app: web.Application, settings: Settings, port: int) -> web.AppRunner:
    runner = GatewayRunner(  # header/keep-alive deadlines, GATEWAY_MAX_CONNECTIONS
        app, limits=Limits.from_settings(settings), shutdown_timeout=settings.wa_shutdown_timeout,
        access_log=None, **SERVER_OPTIONS,
    )
    await runner.setup()
    try:
        await web.TCPSite(
            runner, settings.gateway_host, port, reuse_port=settings.gateway_reuse_port or None
        ).start()
    except OSError as exc:
        await runner.cleanup()
        raise UserError(f"cannot listen on {settings.gateway_host}:{port}: {exc.strerror}") from None
    return runner


async def _watch_broker(services: Services, stop: asyncio.Event, failure: list[BaseException]) -> None:
    """Stop the process with one line when the broker holds an incompatible topology."""
    try:
        await services.broker.wait_connected()
    except TopologyMismatch as exc:
        failure.append(exc)
        stop.set()


async def send_one(settings: Settings, to: str, text: str, plugins: PluginSet | None = None) -> str:
    plugins = plugins if plugins is not None else make_plugin_manager()
    services = _services(settings, plugins, "wa-gateway send")
    try:
        [notification] = build_notifications(services, parse_request({"to": to, "text": text}))
    except InvalidNotification as exc:
        raise UserError(str(exc)) from None
    async with connected_or_fail(services):
        await services.publisher.publish_notification(notification)
    return notification.id


def _global_options() -> argparse.ArgumentParser:
    """The options before the command; read first, because logging (and so the plugin
    manager, which logs broken plugins) is set up before the command line is parsed."""
    options = argparse.ArgumentParser(prog="wa-gateway", add_help=False)
    options.add_argument("--env-file", default=".env", help="settings file (default: .env)")
    options.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    options.add_argument("--log-json", action="store_true", help="JSON log lines even on a terminal")
    return options


def _parser(plugins: PluginSet) -> argparse.ArgumentParser:
    """The core commands, then every command a plugin adds (register_commands: the
    built-ins `providers`, `events`, `status`, `channels` and `dlq` first)."""
    parser = argparse.ArgumentParser(
        prog="wa-gateway", description="WhatsApp notification gateway", parents=[_global_options()]
    )
    parser.set_defaults(plugins=plugins, needs_settings=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, serve, work, text in (
        ("serve", True, False, "run the HTTP gateway"),
        ("worker", False, True, "run the consumer that sends messages"),
        ("run", True, True, "gateway and worker in one process"),
    ):
        command = commands.add_parser(name, help=text)
        command.set_defaults(handler=functools.partial(_run_process, serve=serve, work=work), processes=None)
        if name == "serve":
            command.add_argument(
                "--processes", type=_positive, metavar="N",
                help="N gateway processes on one port under a parent that restarts them "
                "(default: GATEWAY_PROCESSES, 1 = this process only)",
            )
    send = commands.add_parser("send", help="queue one message")
    send.add_argument("--to", required=True, help="alias, or number/group id when raw targets are allowed")
    send.add_argument("--text", required=True)
    send.set_defaults(handler=_send)
    plugins.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    options, rest = _global_options().parse_known_args(argv)
    try:
        settings, config_error = load_settings(options.env_file or None), None
    except ConfigError as exc:  # reported by _dispatch, unless the command needs no settings
        settings, config_error = None, exc
    command = next((arg for arg in rest if not arg.startswith("-")), None)
    configure_logging(
        verbose=options.verbose,
        quiet=command not in LONG_RUNNING,
        json_output=True if options.log_json else None,
        secrets=_secrets(settings) if settings is not None else (),
    )
    args = _parser(make_plugin_manager()).parse_args(argv)
    try:
        return _dispatch(args, settings, config_error)
    except (UserError, TopologyMismatch, EventsFileError) as exc:
        print(f"wa-gateway: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _dispatch(
    args: argparse.Namespace, settings: Settings | None, config_error: ConfigError | None
) -> int:
    """Run the command's handler; a command that set `needs_settings=False` (`providers`:
    it helps to fix them) runs with broken settings too, and gets None."""
    if settings is None and args.needs_settings:
        assert config_error is not None
        raise config_error
    handler: Callable[[Settings | None, argparse.Namespace], int] = args.handler
    return int(handler(settings, args))


def _run_process(settings: Settings, args: argparse.Namespace, *, serve: bool, work: bool) -> int:
    processes = args.processes or settings.gateway_processes
    if serve and not work and processes > 1:
        asyncio.run(_check_serve(settings, args.plugins))  # a mistake is one line, before any child
        return serve_processes(
            processes, host=settings.gateway_host, port=settings.gateway_port,
            shutdown_timeout=settings.wa_shutdown_timeout, env_file=args.env_file,
            verbose=args.verbose, log_json=args.log_json,
        )
    return _run(run_process(settings, serve=serve, work=work, plugins=args.plugins))


async def _check_serve(settings: Settings, plugins: PluginSet) -> None:
    """What `serve` checks at start-up without connecting: run once by the parent of
    `serve --processes N`, so a configuration mistake is one line, not one per child."""
    _check_api_keys(settings)
    for provider in _providers(_services(settings, plugins, "wa-gateway serve")).values():
        await provider.close()


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of processes >= 1, got {text!r}")
    return value


def _send(settings: Settings, args: argparse.Namespace) -> int:
    notification_id = asyncio.run(send_one(settings, args.to, args.text, args.plugins))
    print(f"queued {notification_id}")
    return 0


def _secrets(settings: Settings) -> list[str]:
    """Every credential the settings hold, so the log masker can hide them."""
    values = [*settings.api_keys]
    for secret in (settings.wa_api_key, settings.wa_fallback_api_key):
        if secret is not None:
            values.append(secret.get_secret_value())
    values += [v for k, v in settings.raw_env.items() if k.endswith(("_KEY", "_TOKEN", "_SECRET")) and v]
    for url in (*settings.amqp_url.split(","), settings.redis_url or ""):  # every node's
        password = urlsplit(url.strip()).password
        if password:
            values.append(password)
    return values


def _run(coroutine: Coroutine[Any, Any, None]) -> int:
    """Run a long-lived process on uvloop where it is installed (Linux, macOS): the
    gateway answers ~20 % more requests per CPU second with it."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(coroutine)
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(coroutine)
    return 0


if __name__ == "__main__":  # `python -m wa_gateway.cli`; `python -m wa_gateway` runs __main__.py
    sys.exit(main())
