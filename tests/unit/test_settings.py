"""Unit tests of wa_gateway.settings: defaults, parsing, aliases, .env, one-line errors."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from wa_gateway.settings import ConfigError, Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
OWN_PREFIXES = ("WA_", "GATEWAY_", "AMQP_", "REDIS_", "WATZAP_", "META_", "TWILIO_")
LOGISTIC = "120363195657916590@g.us"
PURCHASE = "120363195657916591@g.us"

# Provider-specific variables DESIGN.md lists; plugins read them from raw_env.
PROVIDER_SPECIFIC = {
    "WATZAP_NUMBER_KEY",
    "META_PHONE_NUMBER_ID",
    "META_API_VERSION",
    "TWILIO_ACCOUNT_SID",
    "TWILIO_FROM",
    "META_APP_SECRET",
    "META_WEBHOOK_VERIFY_TOKEN",
}
NOT_VARIABLES = {"group_aliases", "raw_env"}
# Read by plugins that are not providers, from the environment (wa-gateway-sentry).
PLUGIN_VARIABLES = {"SENTRY_DSN"}


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Neither the developer's environment nor their .env reaches these tests.

    Settings reads variables case-insensitively, so lower-case spellings go too.
    """
    for name in list(os.environ):
        if name.upper().startswith(OWN_PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def write_env(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def config_error(env_file: str | Path | None = None, **overrides: object) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(env_file, **overrides)
    message = str(caught.value)
    assert "\n" not in message and "\r" not in message, f"not one line: {message!r}"
    return message


# --- defaults -------------------------------------------------------------------------


def test_defaults_match_the_design_table() -> None:
    settings = load_settings(None)
    assert settings.wa_provider == "log"
    assert settings.amqp_url == "amqp://guest:guest@127.0.0.1:5672/"
    assert settings.gateway_host == "127.0.0.1"
    assert settings.gateway_port == 8080
    assert settings.api_keys == []
    assert settings.wa_worker_prefetch == 64
    assert settings.wa_retry_delays == [5, 30, 120, 600, 3600]
    assert settings.wa_default_country == "62"
    assert settings.wa_allow_raw_targets is False
    assert settings.wa_shutdown_timeout == 10
    assert settings.wa_api_key is None
    assert settings.wa_api_url is None
    assert settings.redis_url is None
    assert settings.wa_fallback_provider is None
    assert settings.wa_send_rate is None
    assert settings.wa_log_outbox is None
    assert settings.group_aliases == {}


def test_missing_default_env_file_in_the_working_directory_is_not_an_error() -> None:
    assert not Path(".env").exists()
    assert load_settings().wa_provider == "log"


# --- parsing from the environment -------------------------------------------------------


def test_values_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WA_PROVIDER", "Watzap ")
    monkeypatch.setenv("GATEWAY_PORT", "9090")
    monkeypatch.setenv("WA_ALLOW_RAW_TARGETS", "true")
    monkeypatch.setenv("WA_WORKER_PREFETCH", "8")
    monkeypatch.setenv("WA_DEFAULT_COUNTRY", "44")
    monkeypatch.setenv("WA_API_KEY", "s3cret")
    settings = load_settings(None)
    assert settings.wa_provider == "watzap"  # trimmed, lower case
    assert settings.gateway_port == 9090
    assert settings.wa_allow_raw_targets is True
    assert settings.wa_worker_prefetch == 8
    assert settings.wa_default_country == "44"
    assert settings.provider_config().api_key == "s3cret"
    assert "s3cret" not in repr(settings)


def test_gateway_api_keys_is_a_comma_list_ignoring_blanks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_API_KEYS", " key-one, key-two ,,key-three,")
    assert load_settings(None).api_keys == ["key-one", "key-two", "key-three"]


def test_empty_gateway_api_keys_means_no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_API_KEYS", "")
    assert load_settings(None).api_keys == []


def test_retry_delays_is_a_comma_list_of_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WA_RETRY_DELAYS", "0.2, 1,30")
    assert load_settings(None).wa_retry_delays == [0.2, 1.0, 30.0]


def test_overrides_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WA_PROVIDER", "meta")
    monkeypatch.setenv("WA_RETRY_DELAYS", "5,30")
    settings = load_settings(None, wa_provider="fake", wa_retry_delays=[0.1, 0.2])
    assert settings.wa_provider == "fake"
    assert settings.wa_retry_delays == [0.1, 0.2]


# --- aliases and .env -------------------------------------------------------------------


def test_group_aliases_are_collected_from_the_environment_in_lower_case(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WA_GROUP_LOGISTIC_ID", LOGISTIC)
    monkeypatch.setenv("WA_GROUP_HEAD_OFFICE_ID", f"  {PURCHASE}  ")
    monkeypatch.setenv("WA_GROUP_EMPTY_ID", "")
    assert load_settings(None).group_aliases == {"logistic": LOGISTIC, "head_office": PURCHASE}


def test_settings_and_aliases_are_read_from_an_env_file(tmp_path: Path) -> None:
    env = write_env(
        tmp_path / "custom.env",
        f"WA_PROVIDER=fake\nGATEWAY_PORT=8181\nWA_GROUP_LOGISTIC_ID={LOGISTIC}\n"
        "WATZAP_NUMBER_KEY=nk-1\n",
    )
    settings = load_settings(env)
    assert settings.wa_provider == "fake"
    assert settings.gateway_port == 8181
    assert settings.group_aliases == {"logistic": LOGISTIC}
    assert settings.provider_config().settings["WATZAP_NUMBER_KEY"] == "nk-1"


def test_dot_env_in_the_working_directory_is_the_default_file(tmp_path: Path) -> None:
    write_env(tmp_path / ".env", f"WA_GROUP_PURCHASE_ID={PURCHASE}\nWA_WORKER_PREFETCH=3\n")
    settings = load_settings()
    assert settings.group_aliases == {"purchase": PURCHASE}
    assert settings.wa_worker_prefetch == 3


def test_env_file_none_ignores_dot_env(tmp_path: Path) -> None:
    write_env(tmp_path / ".env", f"WA_PROVIDER=fake\nWA_GROUP_PURCHASE_ID={PURCHASE}\n")
    settings = load_settings(None)
    assert settings.wa_provider == "log"
    assert settings.group_aliases == {}


def test_environment_wins_over_env_file_for_settings_aliases_and_raw_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = write_env(
        tmp_path / ".env",
        f"WA_PROVIDER=fake\nWA_GROUP_LOGISTIC_ID={LOGISTIC}\nTWILIO_FROM=whatsapp:+1000\n",
    )
    monkeypatch.setenv("WA_PROVIDER", "log")
    monkeypatch.setenv("WA_GROUP_LOGISTIC_ID", PURCHASE)
    monkeypatch.setenv("TWILIO_FROM", "whatsapp:+2000")
    settings = load_settings(env)
    assert settings.wa_provider == "log"
    assert settings.group_aliases == {"logistic": PURCHASE}
    assert settings.raw_env["TWILIO_FROM"] == "whatsapp:+2000"


def test_good_environment_value_hides_a_bad_one_in_env_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = write_env(tmp_path / ".env", "GATEWAY_PORT=abc\n")
    monkeypatch.setenv("GATEWAY_PORT", "8081")
    assert load_settings(env).gateway_port == 8081


# --- one-line errors naming the variable ------------------------------------------------


@pytest.mark.parametrize(
    "url", ["http://guest:guest@127.0.0.1:5672/", "redis://127.0.0.1", "127.0.0.1:5672", "amqp://"]
)
def test_amqp_url_with_wrong_scheme_or_no_host_is_one_line_naming_amqp_url(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("AMQP_URL", url)
    assert "AMQP_URL" in config_error()


def test_amqp_url_with_a_non_numeric_port_is_one_line_naming_amqp_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AMQP_URL", "amqp://guest:guest@127.0.0.1:abc/")
    message = config_error()
    assert "AMQP_URL" in message
    assert "port" in message


def test_amqps_url_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMQP_URL", "amqps://u:p@rabbit.example:5671/vhost")
    assert load_settings(None).amqp_url == "amqps://u:p@rabbit.example:5671/vhost"


@pytest.mark.parametrize("port", ["abc", "80.5", "70000", "-1"])
def test_bad_gateway_port_is_one_line_naming_gateway_port(
    monkeypatch: pytest.MonkeyPatch, port: str
) -> None:
    monkeypatch.setenv("GATEWAY_PORT", port)
    assert "GATEWAY_PORT" in config_error()


def test_bad_value_in_env_file_is_one_line_naming_the_variable(tmp_path: Path) -> None:
    env = write_env(tmp_path / ".env", "GATEWAY_PORT=eighty\n")
    assert "GATEWAY_PORT" in config_error(env)


@pytest.mark.parametrize("group_id", ["123", "logistic", "120363195657916590@s.whatsapp.net"])
def test_alias_that_is_not_a_group_id_is_one_line_naming_the_alias_variable(
    monkeypatch: pytest.MonkeyPatch, group_id: str
) -> None:
    monkeypatch.setenv("WA_GROUP_X_ID", group_id)
    message = config_error()
    assert "WA_GROUP_X_ID" in message
    assert "@g.us" in message


def test_bad_alias_in_env_file_is_one_line_naming_the_alias_variable(tmp_path: Path) -> None:
    env = write_env(tmp_path / ".env", "WA_GROUP_SALES_ID=not-a-group\n")
    assert "WA_GROUP_SALES_ID" in config_error(env)


@pytest.mark.parametrize("delays", ["5,-30,120", "0", "5,0", "-1"])
def test_negative_or_zero_retry_delay_is_one_line_naming_wa_retry_delays(
    monkeypatch: pytest.MonkeyPatch, delays: str
) -> None:
    monkeypatch.setenv("WA_RETRY_DELAYS", delays)
    message = config_error()
    assert "WA_RETRY_DELAYS" in message
    assert "positive" in message


@pytest.mark.parametrize("delays", ["", " ", ",", " , ,"])
def test_empty_retry_delays_is_one_line_naming_wa_retry_delays(
    monkeypatch: pytest.MonkeyPatch, delays: str
) -> None:
    monkeypatch.setenv("WA_RETRY_DELAYS", delays)
    message = config_error()
    assert "WA_RETRY_DELAYS" in message
    assert "at least one delay" in message


def test_empty_retry_delays_override_is_refused() -> None:
    assert "WA_RETRY_DELAYS" in config_error(None, wa_retry_delays=[])


def test_non_numeric_retry_delay_names_wa_retry_delays(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WA_RETRY_DELAYS", "5,soon")
    assert "WA_RETRY_DELAYS" in config_error()


@pytest.mark.parametrize("country", ["0", "062", "1234", "+62", "id"])
def test_bad_default_country_names_wa_default_country(
    monkeypatch: pytest.MonkeyPatch, country: str
) -> None:
    monkeypatch.setenv("WA_DEFAULT_COUNTRY", country)
    assert "WA_DEFAULT_COUNTRY" in config_error()


def test_several_bad_variables_are_all_named_on_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_PORT", "abc")
    monkeypatch.setenv("WA_WORKER_PREFETCH", "0")
    message = config_error()
    assert "GATEWAY_PORT" in message
    assert "WA_WORKER_PREFETCH" in message


# --- .env.example and Settings cannot drift ---------------------------------------------


def example_variables() -> set[str]:
    text = (REPO / ".env.example").read_text(encoding="utf-8")
    return set(re.findall(r"^#?([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE))


def settings_variables() -> set[str]:
    return {name.upper() for name in Settings.model_fields if name not in NOT_VARIABLES}


def test_env_example_lists_some_settings() -> None:
    assert {"WA_PROVIDER", "AMQP_URL", "GATEWAY_PORT"} <= example_variables()


def test_every_variable_in_env_example_is_a_known_setting() -> None:
    unknown = {
        name
        for name in example_variables()
        if name not in settings_variables()
        and name not in PROVIDER_SPECIFIC
        and name not in PLUGIN_VARIABLES
        and not re.fullmatch(r"WA_GROUP_[A-Z0-9_]+_ID", name)
        and not re.fullmatch(r"WA_CHANNELS|WA_CHANNEL_[A-Z0-9]+_[A-Z0-9_]+|WA_(GROUP|CONTACT)_[A-Z0-9_]+_CHANNEL", name)
        and not re.fullmatch(r"WA_CONTACT_[A-Z0-9_]+_NUMBER", name)  # read by channels.py, not Settings
    }
    assert unknown == set(), f".env.example documents variables Settings does not know: {unknown}"


def test_every_setting_is_documented_in_env_example() -> None:
    missing = settings_variables() - example_variables()
    assert missing == set(), f"settings missing from .env.example: {missing}"


def test_env_example_itself_loads_with_the_log_provider_and_the_logistic_alias() -> None:
    settings = load_settings(REPO / ".env.example")
    assert settings.wa_provider == "log"
    assert "logistic" in settings.group_aliases


# --- the fallback provider's credential -------------------------------------------------


def test_missing_fallback_api_key_is_reported_by_its_own_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from wa_gateway.provider import ProviderConfigError

    monkeypatch.setenv("WA_API_KEY", "primary-secret")
    settings = load_settings(None, wa_fallback_provider="meta")
    with pytest.raises(ProviderConfigError) as caught:
        settings.provider_config(fallback=True).require_api_key()
    assert str(caught.value) == "WA_FALLBACK_API_KEY is not set; the provider needs it"
    monkeypatch.delenv("WA_API_KEY")
    with pytest.raises(ProviderConfigError, match=r"^WA_API_KEY is not set"):
        load_settings(None).provider_config().require_api_key()


def test_missing_api_url_is_reported_by_the_senders_own_variable() -> None:
    from wa_gateway.channels import read_channels
    from wa_gateway.http_provider import HttpProvider
    from wa_gateway.provider import ProviderConfigError

    class NoDefaultUrl(HttpProvider):
        name = "nourl"

        async def send(self, message):  # type: ignore[no-untyped-def]  # never called
            raise AssertionError

    settings = load_settings(None, wa_fallback_provider="log")
    for config, variable in (
        (settings.provider_config(), "WA_API_URL"),
        (settings.provider_config(fallback=True), "WA_FALLBACK_API_URL"),
    ):
        with pytest.raises(ProviderConfigError, match=rf"^{variable} is not set; the nourl provider needs it$"):
            _ = NoDefaultUrl(config).base_url
    named = read_channels(load_settings(None, raw_env={"WA_CHANNELS": "people", "WA_CHANNEL_PEOPLE_PROVIDER": "log"}))
    with pytest.raises(ProviderConfigError, match=r"^WA_CHANNEL_PEOPLE_API_URL is not set"):
        _ = NoDefaultUrl(named.channel("people").config).base_url
