"""Unit tests of wa_gateway.supervisor with stand-in children (tiny Python commands): a
child that exits 2 stops the parent with 2, a crashing child is restarted with a growing
delay, and SIGTERM reaches every child."""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import sys
import threading
import time

import pytest

from wa_gateway import supervisor
from wa_gateway.errors import UserError
from wa_gateway.supervisor import Supervisor, reserve_port


def child(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_child_that_exits_2_stops_the_parent_with_2_without_restarting(caplog) -> None:
    caplog.set_level(logging.INFO, "wa_gateway.supervisor")
    started = time.monotonic()
    status = Supervisor(child("import sys; sys.exit(2)"), 2, env=dict(os.environ), shutdown_timeout=5).run()
    assert status == 2
    assert time.monotonic() - started < 5
    assert "restart" not in caplog.text


def test_a_crashing_child_is_restarted_with_a_growing_delay(caplog, monkeypatch) -> None:
    caplog.set_level(logging.INFO, "wa_gateway.supervisor")
    monkeypatch.setattr(supervisor, "FIRST_BACKOFF", 0.1)
    parent = Supervisor(child("import sys; sys.exit(1)"), 1, env=dict(os.environ), shutdown_timeout=1)
    threading.Timer(2.0, lambda: parent._signalled(signal.SIGTERM, None)).start()

    assert parent.run() == 0

    delays = [float(d) for d in re.findall(r"restarting in ([\d.]+) s", caplog.text)]
    assert 3 <= len(delays) <= 6, caplog.text  # 0.1, 0.2, 0.4, 0.8: not a spin
    assert delays == sorted(delays) and delays[0] == pytest.approx(0.1)


def test_sigterm_reaches_every_child_and_the_parent_exits_0(caplog) -> None:
    caplog.set_level(logging.INFO, "wa_gateway.supervisor")
    parent = Supervisor(child("import time; time.sleep(30)"), 2, env=dict(os.environ), shutdown_timeout=2)
    threading.Timer(1.0, lambda: parent._signalled(signal.SIGTERM, None)).start()
    started = time.monotonic()

    assert parent.run() == 0

    assert time.monotonic() - started < 2.5
    assert caplog.text.count("exited with status -15") == 2


def test_a_child_that_ignores_sigterm_is_killed_after_the_shutdown_timeout(caplog) -> None:
    caplog.set_level(logging.INFO, "wa_gateway.supervisor")
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(30)"
    parent = Supervisor(child(stubborn), 1, env=dict(os.environ), shutdown_timeout=0.5)
    threading.Timer(1.0, lambda: parent._signalled(signal.SIGTERM, None)).start()
    started = time.monotonic()

    assert parent.run() == 0

    assert time.monotonic() - started < 1.0 + 0.5 + supervisor.KILL_MARGIN + 1.0
    assert "killing it" in caplog.text and "exited with status -9" in caplog.text


def test_reserve_port_resolves_port_0_and_a_taken_port_is_one_line() -> None:
    with reserve_port("127.0.0.1", 0) as reserved:
        port = reserved.getsockname()[1]
        assert port > 0


    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        with pytest.raises(UserError, match=f"cannot listen on 127.0.0.1:{port}: Address already in use"):
            reserve_port("127.0.0.1", port)
