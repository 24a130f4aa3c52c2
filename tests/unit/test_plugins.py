"""Unit tests of wa_gateway.plugins: built-ins, extra plugins, and every broken-plugin path."""

from __future__ import annotations

import types
from typing import Any

import pytest

import wa_gateway.plugins as plugins_module
from wa_gateway import hookimpl
from wa_gateway.models import Notification
from wa_gateway.plugins import UnknownProvider, make_plugin_manager
from wa_gateway.provider import Capabilities, Provider, ProviderConfig, Receipt
from wa_gateway.providers.fake import FakeProvider
from wa_gateway.providers.log import LogProvider

CAPS = Capabilities(groups=False, max_text_length=1600, send_rate=1.0)


def provider_class(provider_name: str) -> type[Provider]:
    class _Provider(Provider):
        name = provider_name
        capabilities = CAPS

        async def send(self, message: Notification) -> Receipt:
            return Receipt(provider=self.name)

    return _Provider


def plugin_module(name: str, **hooks: Any) -> types.ModuleType:
    """A plugin as a module object, the way an entry point gives one."""
    module = types.ModuleType(name)
    for hook_name, function in hooks.items():
        setattr(module, hook_name, function)
    return module


def registering(*providers: tuple[str, Any]) -> Any:
    @hookimpl
    def register_providers(register: Any) -> None:
        for name, factory in providers:
            register(name, factory)

    return register_providers


@pytest.fixture
def no_installed_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the manager looks at the machine's installed plugins."""

    def entry_points(**_: Any) -> list[Any]:
        raise AssertionError("entry points were read although load_entry_points=False")

    monkeypatch.setattr(plugins_module, "entry_points", entry_points)


def test_built_in_log_and_fake_register_through_the_hook(no_installed_entry_points: None) -> None:
    plugins = make_plugin_manager(load_entry_points=False)
    assert plugins.providers == {"log": LogProvider, "fake": FakeProvider}
    assert plugins.problems == []
    hook_plugins = {
        impl.plugin_name for impl in plugins.manager.hook.register_providers.get_hookimpls()
    }
    assert hook_plugins == {"wa_gateway.providers.log", "wa_gateway.providers.fake"}


def test_each_call_returns_a_fresh_manager(no_installed_entry_points: None) -> None:
    first = make_plugin_manager(
        load_entry_points=False,
        extra_plugins=[
            plugin_module(
                "p_mine", register_providers=registering(("mine", provider_class("mine")))
            )
        ],
    )
    second = make_plugin_manager(load_entry_points=False)
    assert "mine" in first.providers
    assert "mine" not in second.providers


def test_plugin_module_registering_a_provider_is_found(no_installed_entry_points: None) -> None:
    factory = provider_class("acme")
    plugins = make_plugin_manager(
        load_entry_points=False,
        extra_plugins=[
            plugin_module("acme_plugin", register_providers=registering(("acme", factory)))
        ],
    )
    assert plugins.factory("acme") is factory
    assert plugins.capabilities("acme") == CAPS
    assert plugins.problems == []
    provider = plugins.create("acme", ProviderConfig(api_key="k"))
    assert isinstance(provider, factory)
    assert provider.config.api_key == "k"


def test_plugin_object_with_a_hookimpl_method_is_found(no_installed_entry_points: None) -> None:
    factory = provider_class("obj")

    class ObjectPlugin:
        @hookimpl
        def register_providers(self, register: Any) -> None:
            register("obj", factory)

    plugins = make_plugin_manager(load_entry_points=False, extra_plugins=[ObjectPlugin()])
    assert plugins.factory("obj") is factory
    assert plugins.problems == []


def test_one_plugin_may_register_several_providers(no_installed_entry_points: None) -> None:
    one, two = provider_class("one"), provider_class("two")
    plugins = make_plugin_manager(
        load_entry_points=False,
        extra_plugins=[
            plugin_module("p_multi", register_providers=registering(("one", one), ("two", two)))
        ],
    )
    assert plugins.providers["one"] is one
    assert plugins.providers["two"] is two


def test_duplicate_provider_name_is_reported_naming_the_plugin_and_first_registration_wins(
    no_installed_entry_points: None,
) -> None:
    first, second = provider_class("dup"), provider_class("dup")
    plugins = make_plugin_manager(
        load_entry_points=False,
        extra_plugins=[
            plugin_module("p_first", register_providers=registering(("dup", first))),
            plugin_module("p_second", register_providers=registering(("dup", second))),
        ],
    )
    assert plugins.factory("dup") is first
    assert len(plugins.problems) == 1
    assert "p_second" in plugins.problems[0]
    assert "'dup'" in plugins.problems[0]
    assert "already registered" in plugins.problems[0]


def test_plugin_cannot_replace_a_built_in_provider(no_installed_entry_points: None) -> None:
    impostor = provider_class("log")
    plugins = make_plugin_manager(
        load_entry_points=False,
        extra_plugins=[
            plugin_module("p_impostor", register_providers=registering(("log", impostor)))
        ],
    )
    assert plugins.factory("log") is LogProvider
    assert any("p_impostor" in problem and "'log'" in problem for problem in plugins.problems)


def test_misspelled_hook_is_rejected_by_name_and_does_not_crash(
    no_installed_entry_points: None,
) -> None:
    @hookimpl
    def register_provider(register: Any) -> None:  # singular: not a hook we define
        register("typo", provider_class("typo"))

    typo = plugin_module("p_typo", register_provider=register_provider)
    plugins = make_plugin_manager(load_entry_points=False, extra_plugins=[typo])
    assert "typo" not in plugins.providers
    assert {"log", "fake"} <= set(plugins.providers)
    assert len(plugins.problems) == 1
    assert plugins.problems[0].startswith("p_typo:")
    assert "register_provider" in plugins.problems[0]
    assert not plugins.manager.is_registered(typo)


def test_hook_with_an_argument_the_spec_lacks_is_rejected_by_name(
    no_installed_entry_points: None,
) -> None:
    @hookimpl
    def register_providers(register: Any, settings: Any) -> None:
        register("extra_arg", provider_class("extra_arg"))

    bad = plugin_module("p_bad_signature", register_providers=register_providers)
    plugins = make_plugin_manager(load_entry_points=False, extra_plugins=[bad])
    assert "extra_arg" not in plugins.providers
    assert len(plugins.problems) == 1
    assert plugins.problems[0].startswith("p_bad_signature:")
    assert "settings" in plugins.problems[0]
    assert not plugins.manager.is_registered(bad)


def test_every_problem_is_one_line_even_when_pluggy_says_more(
    no_installed_entry_points: None,
) -> None:
    @hookimpl
    def register_providers(register: Any, settings: Any) -> None:
        pass

    @hookimpl
    def register_provider(register: Any) -> None:
        pass

    plugins = make_plugin_manager(
        load_entry_points=False,
        extra_plugins=[
            plugin_module("p_signature", register_providers=register_providers),
            plugin_module("p_spelling", register_provider=register_provider),
        ],
    )
    assert len(plugins.problems) == 2
    assert all("\n" not in problem for problem in plugins.problems)
    with pytest.raises(UnknownProvider) as caught:
        plugins.factory("watzap")
    assert "\n" not in str(caught.value)
    assert "p_signature" in str(caught.value) and "p_spelling" in str(caught.value)


def test_register_providers_that_raises_is_reported_and_skipped(
    no_installed_entry_points: None,
) -> None:
    @hookimpl
    def register_providers(register: Any) -> None:
        raise RuntimeError("missing SDK")

    good = provider_class("good")
    plugins = make_plugin_manager(
        load_entry_points=False,
        extra_plugins=[
            plugin_module("p_raises", register_providers=register_providers),
            plugin_module("p_good", register_providers=registering(("good", good))),
        ],
    )
    assert plugins.factory("good") is good
    assert len(plugins.problems) == 1
    assert "p_raises" in plugins.problems[0]
    assert "missing SDK" in plugins.problems[0]


class NoCapabilities(Provider):
    name = "nocaps"

    async def send(self, message: Notification) -> Receipt:
        return Receipt(provider=self.name)


class WrongCapabilities(NoCapabilities):
    capabilities = ("groups", True)  # type: ignore[assignment]  # not a Capabilities


@pytest.mark.parametrize("factory", [NoCapabilities, WrongCapabilities, lambda config: None])
def test_factory_without_capabilities_is_refused(
    no_installed_entry_points: None, factory: Any
) -> None:
    plugins = make_plugin_manager(
        load_entry_points=False,
        extra_plugins=[
            plugin_module("p_nocaps", register_providers=registering(("nocaps", factory)))
        ],
    )
    assert "nocaps" not in plugins.providers
    assert len(plugins.problems) == 1
    assert "p_nocaps" in plugins.problems[0]
    assert "Capabilities" in plugins.problems[0]


@pytest.mark.parametrize("name", ["has space", "", "9lives", "a-b", 42])
def test_provider_name_that_is_not_an_identifier_is_refused(
    no_installed_entry_points: None, name: Any
) -> None:
    plugins = make_plugin_manager(
        load_entry_points=False,
        extra_plugins=[
            plugin_module("p_badname", register_providers=registering((name, provider_class("x"))))
        ],
    )
    assert set(plugins.providers) == {"log", "fake"}
    assert len(plugins.problems) == 1
    assert "p_badname" in plugins.problems[0]


def test_unknown_provider_names_it_and_lists_the_installed_ones(
    no_installed_entry_points: None,
) -> None:
    plugins = make_plugin_manager(load_entry_points=False)
    with pytest.raises(UnknownProvider) as caught:
        plugins.factory("nope")
    message = str(caught.value)
    assert "'nope'" in message
    assert "installed providers: fake, log" in message
    assert isinstance(caught.value, LookupError)


def test_unknown_provider_also_names_broken_plugins(no_installed_entry_points: None) -> None:
    @hookimpl
    def register_providers(register: Any) -> None:
        raise RuntimeError("boom")

    plugins = make_plugin_manager(
        load_entry_points=False,
        extra_plugins=[plugin_module("p_boom", register_providers=register_providers)],
    )
    with pytest.raises(UnknownProvider, match="broken plugins: p_boom"):
        plugins.create("boomer", ProviderConfig())


class FakeEntryPoint:
    def __init__(
        self, name: str, value: str, target: Any = None, error: Exception | None = None
    ) -> None:
        self.name = name
        self.value = value
        self._target = target
        self._error = error

    def load(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._target


def test_entry_point_whose_import_fails_is_reported_by_name_and_skipped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    working = plugin_module(
        "wa_gateway_acme", register_providers=registering(("acme", provider_class("acme")))
    )
    groups: list[str] = []

    def entry_points(*, group: str) -> list[FakeEntryPoint]:
        groups.append(group)
        return [
            FakeEntryPoint(
                "broken", "wa_gateway_broken", error=ImportError("No module named 'requests'")
            ),
            FakeEntryPoint("acme", "wa_gateway_acme", target=working),
        ]

    monkeypatch.setattr(plugins_module, "entry_points", entry_points)
    plugins = make_plugin_manager(load_entry_points=True)
    assert groups == ["wa_gateway"]
    assert set(plugins.providers) == {"log", "fake", "acme"}
    assert len(plugins.problems) == 1
    problem = plugins.problems[0]
    assert problem.startswith("broken:")
    assert "wa_gateway_broken" in problem
    assert "No module named 'requests'" in problem


def test_entry_point_failing_with_any_exception_is_reported_not_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        plugins_module,
        "entry_points",
        lambda *, group: [FakeEntryPoint("syntax", "wa_gateway_syntax", error=SyntaxError("bad"))],
    )
    plugins = make_plugin_manager(load_entry_points=True)
    assert set(plugins.providers) == {"log", "fake"}
    assert [p.split(":")[0] for p in plugins.problems] == ["syntax"]


def test_entry_point_pointing_at_a_built_in_is_not_registered_twice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import wa_gateway.providers.log as log_module

    monkeypatch.setattr(
        plugins_module,
        "entry_points",
        lambda *, group: [FakeEntryPoint("log", "wa_gateway.providers.log", target=log_module)],
    )
    plugins = make_plugin_manager(load_entry_points=True)
    assert plugins.factory("log") is LogProvider
    assert plugins.problems == []
