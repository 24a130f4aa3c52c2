"""Commands through the `register_commands` hook: the built-ins (`providers`, `events`,
`status`, `channels`, `dlq`, `db`) come in that way, and a third-party plugin adds one the same way."""

from __future__ import annotations

import argparse
import types
from typing import Any

import pytest

from wa_gateway import UserError, cli, hookimpl
from wa_gateway.plugins import PluginSet, make_plugin_manager

BUILT_IN_COMMANDS = {"providers", "events", "status", "channels", "dlq", "db", "notifications"}


def command_plugin(name: str, handler: Any, **defaults: Any) -> types.ModuleType:
    @hookimpl
    def register_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
        command = commands.add_parser(name, help=f"the {name} command")
        command.add_argument("--to", default="world")
        command.set_defaults(handler=handler, **defaults)

    plugin = types.ModuleType(f"plugin_{name}")
    plugin.register_commands = register_commands  # type: ignore[attr-defined]
    return plugin


def command_names(plugins: PluginSet) -> set[str]:
    parser = cli._parser(plugins)
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return set(commands.choices)



@pytest.fixture
def with_plugins(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make cli.main build its command line with these extra plugins (and no installed ones)."""

    def use(*plugins: types.ModuleType) -> None:
        monkeypatch.setattr(
            cli, "make_plugin_manager",
            lambda: make_plugin_manager(load_entry_points=False, extra_plugins=plugins),
        )

    return use


def test_built_in_commands_register_through_the_hook_as_plugins() -> None:
    plugins = make_plugin_manager(load_entry_points=False)
    registered = {impl.plugin_name for impl in plugins.manager.hook.register_commands.get_hookimpls()}
    assert registered == {f"wa_gateway.commands.{name}" for name in BUILT_IN_COMMANDS}
    assert command_names(plugins) == {"serve", "worker", "run", "send"} | BUILT_IN_COMMANDS


def test_plugin_command_runs_with_the_settings_and_its_arguments(
    with_plugins: Any, restore_logging: None, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def hello(settings: Any, args: argparse.Namespace) -> int:
        print(f"hello {args.to} via {settings.wa_provider}; {len(args.plugins.providers)} providers")
        return 3

    with_plugins(command_plugin("hello", hello))
    monkeypatch.setenv("WA_PROVIDER", "fake")
    assert cli.main(["--env-file", "", "hello", "--to", "Ana"]) == 3
    assert capsys.readouterr().out == "hello Ana via fake; 2 providers\n"


def test_plugin_command_user_error_is_one_line_and_status_2(
    with_plugins: Any, restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    def failing(settings: Any, args: argparse.Namespace) -> int:
        raise UserError("say hello to somebody")

    with_plugins(command_plugin("hello", failing))
    assert cli.main(["--env-file", "", "hello"]) == 2
    assert capsys.readouterr().err == "wa-gateway: error: say hello to somebody\n"


def test_plugin_command_needing_no_settings_runs_when_they_are_broken(
    with_plugins: Any, restore_logging: None, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen = []
    with_plugins(command_plugin("doctor", lambda settings, args: seen.append(settings) or 0,
                                needs_settings=False))
    monkeypatch.setenv("GATEWAY_PORT", "abc")
    assert cli.main(["--env-file", "", "doctor"]) == 0
    assert seen == [None]
    assert cli.main(["--env-file", "", "events"]) == 2  # needs them: the setting is named
    assert "GATEWAY_PORT" in capsys.readouterr().err


def test_plugin_taking_a_core_command_name_is_reported_and_the_others_still_count() -> None:
    plugins = make_plugin_manager(
        load_entry_points=False,
        extra_plugins=[command_plugin("serve", lambda s, a: 0), command_plugin("hello", lambda s, a: 0)],
    )
    names = command_names(plugins)
    assert names >= {"serve", "hello"} | BUILT_IN_COMMANDS
    [problem] = plugins.problems
    assert problem.startswith("plugin_serve: register_commands failed")
    assert "serve" in problem
