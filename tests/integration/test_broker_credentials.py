"""A wrong AMQP password (issue 9, item 6): said as such, not "not reachable"; a
long-running process keeps trying (the operator may fix the user) and still stops
cleanly on SIGTERM."""

from __future__ import annotations

import signal

from ..live_gateway import spawn_live


async def test_worker_with_a_wrong_password_says_it_was_refused_and_stops_cleanly(process_env, tmp_path):
    env = process_env(AMQP_URL="amqp://guest:wrong-password@127.0.0.1:5672/")
    live = await spawn_live("worker", env, tmp_path / "worker.log")
    await live.wait_logged("refused the user name or password", timeout=15)
    code, _seconds = await live.stop(signal.SIGTERM, timeout=15)
    stderr = live.stderr()
    assert code == 0, stderr
    assert "not reachable" not in stderr
    assert stderr.count("refused the user name or password") == 1  # once, not per retry
    assert "wrong-password" not in stderr
