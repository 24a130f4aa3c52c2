"""The set-up scripts behind `make run` / `make test`, as a new user meets them:
a venv left broken by a missing python3-venv is made again, and the server tools that
Debian puts in /usr/sbin are found with a PATH that lacks it (a non-root user's)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import sbin_tool

REPO = Path(__file__).resolve().parents[2]
ENSURE_VENV = REPO / "scripts" / "ensure-venv.sh"
ENSURE_SERVICE = REPO / "scripts" / "ensure-service.sh"
USER_PATH = "/usr/local/bin:/usr/bin:/bin"  # a non-root user's PATH on Debian: no sbin
DEFAULT_SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/lib/rabbitmq/bin")


def run(*command: str | Path, cwd: Path = REPO, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command], cwd=cwd, env={**os.environ, **env},
        capture_output=True, text=True, timeout=120, check=False,
    )


# --- scripts/ensure-venv.sh -------------------------------------------------------------


def test_a_venv_without_pip_is_made_again_and_a_working_one_left_alone(tmp_path):
    venv = tmp_path / ".venv"
    # What `python3 -m venv` leaves behind when python3-venv (ensurepip) is missing.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    (venv / ".installed").touch()  # a stale stamp must not survive either

    repaired = run(ENSURE_VENV, venv, sys.executable)

    assert repaired.returncode == 0, repaired.stderr
    assert "is broken" in repaired.stdout
    assert run(venv / "bin" / "python", "-m", "pip", "--version").returncode == 0
    assert not (venv / ".installed").exists()  # so make installs into the new venv
    (venv / "marker").touch()
    again = run(ENSURE_VENV, venv, sys.executable)
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")
    assert (venv / "marker").exists()


def test_a_python_without_venv_leaves_no_half_made_venv_and_names_python3_venv(tmp_path):
    # Debian's python3 without python3-venv: a half-made venv and this message.
    python = tmp_path / "python3"
    python.write_text(
        "#!/bin/sh\n"
        'mkdir -p "$3/bin" && ln -s /bin/false "$3/bin/python"\n'
        "echo 'The virtual environment was not created successfully because ensurepip is not' >&2\n"
        "echo 'available.  On Debian/Ubuntu systems, you need to install the python3-venv' >&2\n"
        "echo '    apt install python3.11-venv' >&2\n"
        "exit 1\n"
    )
    python.chmod(0o755)
    venv = tmp_path / ".venv"

    result = run(ENSURE_VENV, venv, python)

    assert result.returncode == 1
    assert not venv.exists()
    [line] = result.stderr.splitlines()
    assert "install python3-venv (sudo apt-get install -y python3-venv)" in line


def test_make_install_checks_the_venv_before_installing():
    result = run("make", "--no-print-directory", "-n", "install")  # also when run under `make test`
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "scripts/ensure-venv.sh .venv python3"


# --- scripts/ensure-service.sh ----------------------------------------------------------


def test_installed_servers_are_found_without_sbin_on_path():
    for service, binary in (("rabbitmq", "rabbitmq-server"), ("redis", "redis-server")):
        expected = shutil.which(binary, path=":".join((USER_PATH, *DEFAULT_SBIN_DIRS)))
        result = run(ENSURE_SERVICE, "locate", service, PATH=USER_PATH)
        assert result.returncode == (0 if expected else 1), result.stderr
        assert result.stdout.strip() == (expected or "")


def test_a_server_in_an_sbin_directory_off_the_path_is_found(tmp_path):
    sbin = tmp_path / "sbin"
    sbin.mkdir()
    (sbin / "rabbitmq-server").write_text("#!/bin/sh\n")
    (sbin / "rabbitmq-server").chmod(0o755)
    result = run(
        ENSURE_SERVICE, "locate", "rabbitmq", PATH=USER_PATH,
        ENSURE_SERVICE_SBIN_DIRS=f"/nonexistent {sbin}",
    )
    assert (result.returncode, result.stdout) == (0, f"{sbin}/rabbitmq-server\n")


def test_a_running_rabbitmq_is_enough_without_sbin_on_path():
    result = run(ENSURE_SERVICE, "rabbitmq", PATH=USER_PATH)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_not_installed_is_one_line_with_an_apt_get_install_that_needs_no_answer(tmp_path):
    # Neither the server nor apt-get on this PATH: the one-line advice, whoever runs it.
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("bash", "timeout", "sed", "tail", "tr", "id", "seq", "sleep", "grep"):
        (tools / tool).symlink_to(shutil.which(tool))
    result = run(
        tools / "bash", ENSURE_SERVICE, "rabbitmq", cwd=tmp_path, PATH=str(tools),
        ENSURE_SERVICE_SBIN_DIRS="", AMQP_URL="amqp://guest:guest@127.0.0.1:1/",
    )
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert "sudo apt-get install -y rabbitmq-server" in line


def test_postgresql_is_located_by_debians_pg_ctlcluster():
    expected = shutil.which("pg_ctlcluster", path=":".join((USER_PATH, *DEFAULT_SBIN_DIRS)))
    result = run(ENSURE_SERVICE, "locate", "postgresql", PATH=USER_PATH)
    assert result.returncode == (0 if expected else 1), result.stderr
    assert result.stdout.strip() == (expected or "")


def test_a_running_postgresql_is_enough():
    result = run(ENSURE_SERVICE, "postgresql", PATH=USER_PATH)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_a_stopped_postgresql_is_started_with_pg_ctlcluster(tmp_path):
    # A stand-in pg_ctlcluster records how it was called and "starts" a server: a
    # listener on a free port, where the real one is left alone.
    if not os.path.isdir("/etc/postgresql") or os.geteuid() != 0 or os.path.isdir("/run/systemd/system"):
        pytest.skip("needs Debian's /etc/postgresql, root and no systemd (the path taken here)")
    port = free_port()
    tools = tmp_path / "bin"
    tools.mkdir()
    calls = tmp_path / "calls"
    (tools / "pg_ctlcluster").write_text(
        "#!/bin/sh\n"
        f'echo "$@" > {calls}\n'
        f"nohup {sys.executable} -c 'import socket, time; s = socket.socket(); "
        f's.bind(("127.0.0.1", {port})); s.listen(); time.sleep(20)\' >/dev/null 2>&1 &\n'
    )
    (tools / "pg_ctlcluster").chmod(0o755)
    result = run(
        ENSURE_SERVICE, "postgresql", cwd=tmp_path, PATH=f"{tools}:{USER_PATH}",
        POSTGRES_TEST_URL=f"postgresql://postgres@127.0.0.1:{port}/postgres",
    )
    assert (result.returncode, result.stderr) == (0, ""), result.stdout
    assert result.stdout == "starting the local postgresql server\n"
    version = sorted(os.listdir("/etc/postgresql"), key=lambda v: [int(p) for p in v.split(".") if p.isdigit()])[-1]
    assert calls.read_text().split() == ["--skip-systemctl-redirect", version, "main", "start"]


def test_postgresql_not_installed_is_one_line_with_apt_get(tmp_path):
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("bash", "timeout", "sed", "tail", "tr", "id", "seq", "sleep", "grep"):
        (tools / tool).symlink_to(shutil.which(tool))
    result = run(
        tools / "bash", ENSURE_SERVICE, "postgresql", cwd=tmp_path, PATH=str(tools),
        ENSURE_SERVICE_SBIN_DIRS="", POSTGRES_TEST_URL="postgresql://postgres@127.0.0.1:1/postgres",
    )
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert "sudo apt-get install -y postgresql" in line


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_management_ui_is_announced_only_when_it_answers(tmp_path):
    result = run(
        ENSURE_SERVICE, "rabbitmq-management", cwd=tmp_path, PATH=USER_PATH,
        AMQP_URL="amqp://guest:guest@127.0.0.1:5672/",
    )
    assert (result.returncode, result.stderr) == (0, "")
    [line] = result.stdout.splitlines()
    answers = subprocess.run(
        ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/15672"], capture_output=True, check=False
    ).returncode == 0
    if answers:
        assert line == "RabbitMQ management UI: http://127.0.0.1:15672 (guest/guest)"
    else:
        assert line.startswith("RabbitMQ management UI not enabled: ")


# --- tests/conftest.py sbin_tool --------------------------------------------------------


def test_sbin_tool_finds_rabbitmqctl_without_sbin_on_path(monkeypatch):
    monkeypatch.setenv("PATH", USER_PATH)
    found = sbin_tool("rabbitmqctl")
    expected = shutil.which("rabbitmqctl", path=":".join((USER_PATH, *DEFAULT_SBIN_DIRS)))
    assert found == (expected or "rabbitmqctl")
