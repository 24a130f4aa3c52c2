"""AMQP_URL with several nodes (issue 16 item 5): both forms parse to one URL per node,
in order; a bad node is one line that names it, without its password."""

from __future__ import annotations

import pytest
from aio_pika import RobustConnection

from wa_gateway.broker import _CONNECT_TRANSPORT, Broker, amqp_urls, node_name, shown_amqp_url
from wa_gateway.errors import ConfigError
from wa_gateway.settings import load_settings
from wa_gateway.topology import Topology


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("amqp://guest:guest@127.0.0.1:5672/", ["amqp://guest:guest@127.0.0.1:5672/"]),
        (
            "amqp://guest:guest@h1:5672/,amqp://guest:guest@h2:5673/",
            ["amqp://guest:guest@h1:5672/", "amqp://guest:guest@h2:5673/"],
        ),
        (  # spaces around the commas are fine
            " amqp://u:p@h1/ , amqps://u:q@h2:5671/v ",
            ["amqp://u:p@h1/", "amqps://u:q@h2:5671/v"],
        ),
        (  # the short form: user, password, vhost and query shared by every host
            "amqp://u:p@h1:5672,h2:5673,h3:5674/vhost?heartbeat=10",
            [
                "amqp://u:p@h1:5672/vhost?heartbeat=10",
                "amqp://u:p@h2:5673/vhost?heartbeat=10",
                "amqp://u:p@h3:5674/vhost?heartbeat=10",
            ],
        ),
        ("amqp://u:p@h1,h2", ["amqp://u:p@h1", "amqp://u:p@h2"]),
        ("amqp://h1:5672,h2/", ["amqp://h1:5672/", "amqp://h2/"]),
        ("amqp://u:p@[::1]:5672,[::2]:5673/", ["amqp://u:p@[::1]:5672/", "amqp://u:p@[::2]:5673/"]),
        (  # both forms mixed: a bare host belongs to the URL before it
            "amqp://u:p@h1,h2/a,amqp://w:x@h3/b",
            ["amqp://u:p@h1/a", "amqp://u:p@h2/a", "amqp://w:x@h3/b"],
        ),
        ("amqp://u:p%2Cq@h1/", ["amqp://u:p%2Cq@h1/"]),  # a comma in a password is %2C
    ],
)
def test_amqp_urls_gives_one_full_url_per_node_in_order(value: str, expected: list[str]) -> None:
    assert amqp_urls(value) == expected


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("", "expected amqp://"),
        ("127.0.0.1:5672", "expected amqp://"),
        ("amqp://", "expected amqp://"),
        ("amqp://g:secret@h:abc/", "the port is not a number"),
        ("amqp://g:secret@h1:5672/,amqp://g:secret@h2:abc/", "node 2 of 2 (amqp://g:***@h2:abc/): the port"),
        ("amqp://g:secret@h1:5672/,http://g:secret@h2/", "node 2 of 2 (http://g:***@h2/): expected amqp://"),
        ("amqp://g:secret@h1:5672,h2:70000,h3/v", "node 2 of 3 (amqp://g:***@h2:70000/v): the port"),
        ("amqp://g:secret@h1:5672/,,amqp://g:secret@h2/", "entry 2 of 3 is empty"),
        ("amqp://g:secret@h1:5672/", None),
        ("amqp://g:secret@h1/v,h2/v", "only the last host may be followed by /vhost"),
    ],
)
def test_a_bad_node_is_one_line_naming_it_without_its_password(value: str, words: str | None) -> None:
    if words is None:
        assert amqp_urls(value)
        return
    with pytest.raises(ValueError) as caught:
        amqp_urls(value)
    message = str(caught.value)
    assert words in message
    assert "secret" not in message
    assert "\n" not in message


def test_settings_name_amqp_url_and_the_bad_node(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMQP_URL", "amqp://g:secret@h1:5672/,amqp://g:secret@h2:x/")
    with pytest.raises(ConfigError) as caught:
        load_settings(None)
    assert str(caught.value) == (
        "invalid setting AMQP_URL: node 2 of 2 (amqp://g:***@h2:x/): the port is not a number"
    )


@pytest.mark.parametrize(
    "value",
    ["amqp://guest:guest@h1:5672,h2:5673/", "amqp://guest:guest@h1:5672/,amqp://guest:guest@h2:5673/"],
)
def test_settings_hold_several_nodes_as_full_urls(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """So that whatever reads AMQP_URL (safe_url, the log masker) sees URLs it can parse."""
    monkeypatch.setenv("AMQP_URL", value)
    assert load_settings(None).amqp_url == "amqp://guest:guest@h1:5672/,amqp://guest:guest@h2:5673/"


def test_one_url_is_kept_as_written(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMQP_URL", "amqps://u:p@rabbit.example:5671/vhost?heartbeat=10")
    assert load_settings(None).amqp_url == "amqps://u:p@rabbit.example:5671/vhost?heartbeat=10"


def test_shown_amqp_url_hides_every_password() -> None:
    shown = shown_amqp_url("amqp://u:secret1@h1/,amqp://u:secret2@h2:5673/v")
    assert shown == "amqp://u:***@h1/,amqp://u:***@h2:5673/v"
    assert shown_amqp_url("nonsense") == "(an invalid AMQP_URL)"


def test_the_broker_knows_every_node() -> None:
    broker = Broker("amqp://u:p@h1:5672,h2:5673/", Topology(prefix="t"))
    assert broker.urls == ["amqp://u:p@h1:5672/", "amqp://u:p@h2:5673/"]
    assert broker.node is None  # not connected
    assert [node_name(url) for url in broker.urls] == ["h1:5672", "h2:5673"]
    assert node_name("amqps://h3/") == "h3:5671"


def test_aio_pika_still_has_the_step_the_node_rotation_wraps() -> None:
    """RotatingConnection points the connection at the next node before aio-pika's private
    step that opens a transport; an aio-pika that renames it would silently reconnect
    to the dead node only."""
    assert _CONNECT_TRANSPORT in vars(RobustConnection)


def test_aiormq_still_has_the_method_every_confirm_goes_through() -> None:
    """broker._Channel watches it for nacks, to give way to a fresh channel."""
    import aiormq

    from wa_gateway.broker import _ON_CONFIRM_FRAME

    assert _ON_CONFIRM_FRAME in vars(aiormq.Channel)


def test_every_nodes_password_is_a_secret_the_logs_mask() -> None:
    from wa_gateway.cli import _secrets
    from wa_gateway.settings import load_settings

    settings = load_settings(None, amqp_url="amqp://a:first-password@h1:5672/,amqp://b:second-password@h2:5673/")
    assert {"first-password", "second-password"} <= set(_secrets(settings))
    short = load_settings(None, amqp_url="amqp://a:shared-password@h1:5672,h2:5673/vhost")
    assert "shared-password" in _secrets(short)
