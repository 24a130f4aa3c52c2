"""docs/hooks.md documents every hook of hookspecs.py with its arguments and a working example.

Each hook has a `## name(arguments)` heading followed by a python example; the
example must register with a fresh plugin manager without problems, so pluggy's
validation (hook names, argument names) checks the docs too.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import re
import types
from pathlib import Path

import pytest

from wa_gateway import Capabilities, Receipt, UserError, hookspecs
from wa_gateway.plugins import make_plugin_manager
from wa_gateway.settings import load_settings
from wa_gateway.testing import phone_message

DOC = Path(__file__).resolve().parents[2] / "docs" / "hooks.md"
_SECTION = re.compile(r"^## (?P<name>\w+)\((?P<args>[^)]*)\)\s*$", re.MULTILINE)
_PYTHON_BLOCK = re.compile(r"```python\n(?P<code>.*?)^```", re.DOTALL | re.MULTILINE)


def specified_hooks() -> dict[str, list[str]]:
    """Hook name -> argument names, from the functions hookspecs.py marks as specs."""
    return {
        name: list(inspect.signature(function).parameters)
        for name, function in inspect.getmembers(hookspecs, inspect.isfunction)
        if hasattr(function, f"{hookspecs.hookspec.project_name}_spec")
    }


def documented_hooks() -> dict[str, tuple[list[str], str]]:
    """Hook name -> (argument names in the heading, the section's text)."""
    text = DOC.read_text()
    headings = list(_SECTION.finditer(text))
    sections = {}
    for heading, following in zip(headings, [*headings[1:], None], strict=True):
        end = following.start() if following else len(text)
        args = [arg.strip() for arg in heading["args"].split(",") if arg.strip()]
        sections[heading["name"]] = (args, text[heading.end() : end])
    return sections


HOOKS = specified_hooks()
DOCUMENTED = documented_hooks()


def test_hookspecs_declares_hooks() -> None:
    assert "register_providers" in HOOKS


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_hook_is_documented_with_its_arguments(hook: str) -> None:
    assert hook in DOCUMENTED, f"{hook} is missing from {DOC.name}: add '## {hook}(...)'"
    documented_args, _ = DOCUMENTED[hook]
    assert documented_args == HOOKS[hook]


def test_no_documented_hook_is_stale() -> None:
    assert set(DOCUMENTED) <= set(HOOKS), (
        f"documented but not in hookspecs.py: {set(DOCUMENTED) - set(HOOKS)}"
    )


def load_example(hook: str) -> types.ModuleType:
    """The python example of the hook's section, as a plugin module."""
    _, section = DOCUMENTED[hook]
    block = _PYTHON_BLOCK.search(section)
    assert block, f"the {hook} section has no python example"
    plugin = types.ModuleType(f"hooks_doc_example_{hook}")
    exec(compile(block["code"], f"{DOC}:{hook}", "exec"), plugin.__dict__)
    assert callable(getattr(plugin, hook, None)), f"the {hook} example does not implement {hook}"
    return plugin


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_hook_example_registers_cleanly(hook: str) -> None:
    plugin = load_example(hook)
    plugins = make_plugin_manager(load_entry_points=False, extra_plugins=[plugin])
    assert plugins.problems == []
    assert plugins.manager.is_registered(plugin)


def test_register_providers_example_adds_a_provider() -> None:
    plugins = make_plugin_manager(
        load_entry_points=False, extra_plugins=[load_example("register_providers")]
    )
    added = set(plugins.providers) - set(make_plugin_manager(load_entry_points=False).providers)
    assert len(added) == 1
    assert isinstance(plugins.capabilities(added.pop()), Capabilities)


def test_register_commands_example_adds_a_command_that_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    plugins = make_plugin_manager(
        load_entry_points=False, extra_plugins=[load_example("register_commands")]
    )
    parser = argparse.ArgumentParser(prog="wa-gateway")
    commands = parser.add_subparsers(dest="command", required=True)
    plugins.add_commands(commands)
    assert plugins.problems == []
    added = set(commands.choices) - {"providers", "events", "status", "channels", "dlq", "db", "notifications"}
    assert len(added) == 1
    name = added.pop()
    args = parser.parse_args([name])
    assert args.handler(load_settings(None), args) == 0
    assert capsys.readouterr().out.strip()
    args = parser.parse_args([name, "--name", " "])  # the example refuses an empty name
    with pytest.raises(UserError):
        args.handler(load_settings(None), args)


def test_observer_examples_run_with_what_the_worker_passes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    message, receipt = phone_message(), Receipt(provider="log", provider_message_id="log-1")
    load_example("message_delivered").message_delivered(message=message, receipt=receipt)
    dead_lettered = load_example("message_dead_lettered").message_dead_lettered
    headers = {"x-attempts": 5, "x-provider": "meta", "x-provider-code": "131026"}
    for dead in (message, None):  # None: a body the worker could not read
        dead_lettered(message=dead, reason="undeliverable", headers=headers)
    logged = [record.getMessage() for record in caplog.records]
    assert len(logged) == 3
    assert message.id in logged[0] and "log-1" in logged[0]
    assert "undeliverable" in logged[1] and "131026" in logged[2]
