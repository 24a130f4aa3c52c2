"""The `wa-gateway` command's user errors: one line on stderr, exit 2, never a traceback.

Each case runs the CLI as a subprocess (`python -m wa_gateway.cli`) with a clean
environment (PATH and HOME only, plus the variables under test) in an empty directory
of its own, so no .env or developer setting leaks in. None of them reach RabbitMQ:
every error is found before connecting. The processes start together (a module
fixture) because each spends about a second importing; every test reads its own case.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field

import pytest

from ..conftest import communicate_all

TIMEOUT = 30
# A log record as cli._configure_logging formats it: "2024-01-01 12:00:00,123 INFO name: …"
LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO) \S+: ")


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    dotenv: str | None = None


CASES = {
    "unknown_provider": Case(("serve",), {"WA_PROVIDER": "nope"}),
    "port_abc": Case(("serve",), {"GATEWAY_PORT": "abc"}),
    "bad_alias": Case(("serve",), {"WA_GROUP_X_ID": "123"}),
    "bad_dotenv": Case(("serve",), dotenv="WA_RETRY_DELAYS=5,-1\n"),
    "public_no_keys": Case(("serve",), {"GATEWAY_HOST": "0.0.0.0"}),
    "providers": Case(("providers",), {"WA_PROVIDER": "fake"}),
    "providers_bad_setting": Case(("providers",), {"GATEWAY_PORT": "abc"}),
    "purge_without_yes": Case(("dlq", "purge")),
    "replay_without_ids": Case(("dlq", "replay")),
    "dlq_unknown_provider": Case(("dlq", "list"), {"WA_PROVIDER": "nope"}),
    "send_unknown_alias": Case(("send", "--to", "nope", "--text", "hi")),
    "usage_send_without_text": Case(("send", "--to", "x")),
}


@pytest.fixture(scope="module")
def results(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, subprocess.CompletedProcess[str]]:
    clean = {name: os.environ[name] for name in ("PATH", "HOME") if name in os.environ}
    running = {}
    for name, case in CASES.items():
        cwd = tmp_path_factory.mktemp(name)
        if case.dotenv is not None:
            (cwd / ".env").write_text(case.dotenv, encoding="utf-8")
        command = [sys.executable, "-m", "wa_gateway.cli", *case.args]
        process = subprocess.Popen(
            command,
            env={**clean, **case.env},
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        running[name] = (command, process)
    return communicate_all(running, TIMEOUT)


def only_stderr_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one stderr line of a refused start-up (nothing else may be printed)."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("wa-gateway: error: ")
    return lines[0]


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one error line of a failed command; other lines may only be INFO log records."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if not LOG_RECORD.match(line)]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("wa-gateway: error: ")
    return errors[0]


def test_unknown_provider_stops_serve_with_one_line_naming_it_and_the_installed_ones(
    results: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    line = only_stderr_line(results["unknown_provider"])
    assert "WA_PROVIDER" in line
    assert "'nope'" in line
    installed = line.split("installed providers:", 1)[1]
    assert "log" in installed and "fake" in installed


def test_non_numeric_gateway_port_stops_serve_with_one_line_naming_it(
    results: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    assert "GATEWAY_PORT" in only_stderr_line(results["port_abc"])


def test_alias_that_is_not_a_group_id_stops_serve_with_one_line_naming_it(
    results: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    line = only_stderr_line(results["bad_alias"])
    assert "WA_GROUP_X_ID" in line
    assert "@g.us" in line


def test_bad_setting_in_dot_env_stops_serve_with_one_line_naming_it(
    results: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    assert "WA_RETRY_DELAYS" in only_stderr_line(results["bad_dotenv"])


def test_public_host_without_api_keys_refuses_to_start_with_one_line(
    results: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    line = only_stderr_line(results["public_no_keys"])
    assert "GATEWAY_API_KEYS" in line
    assert "0.0.0.0" in line


def test_providers_prints_a_table_with_the_built_ins_and_marks_the_configured_one(
    results: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    result = results["providers"]
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert "provider" in rows  # the header
    assert "log" in rows and "fake" in rows
    assert "(configured)" in rows["fake"]
    assert "(configured)" not in rows["log"]


def test_providers_still_lists_providers_when_a_setting_is_broken(
    results: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    result = results["providers_bad_setting"]
    assert result.returncode == 0, result.stderr
    assert re.search(r"^log\s", result.stdout, re.MULTILINE)
    assert re.search(r"^fake\s", result.stdout, re.MULTILINE)


def test_dlq_purge_without_yes_is_a_one_line_error(
    results: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    assert "--yes" in error_line(results["purge_without_yes"])


def test_dlq_replay_without_ids_or_all_is_a_one_line_error(
    results: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    line = error_line(results["replay_without_ids"])
    assert "--id" in line and "--all" in line


def test_dlq_with_an_unknown_provider_is_one_line_naming_it(
    results: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    line = only_stderr_line(results["dlq_unknown_provider"])
    assert "WA_PROVIDER" in line and "'nope'" in line


def test_send_to_an_unknown_alias_is_one_line_about_the_alias(
    results: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    line = error_line(results["send_unknown_alias"])
    assert "unknown alias 'nope'" in line
    assert "WA_ALLOW_RAW_TARGETS" in line


def test_missing_required_option_is_a_usage_error_not_a_traceback(
    results: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    result = results["usage_send_without_text"]
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "usage: wa-gateway send" in result.stderr
    assert "--text" in result.stderr
