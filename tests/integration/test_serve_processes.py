"""`wa-gateway serve --processes N` (issue 16 item 2), with real processes: a parent keeps
N gateway children on one port, restarts one that dies, stops them all on SIGTERM within
WA_SHUTDOWN_TIMEOUT with exit 0, and stops with one line and exit 2 on a bad setting."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import time

import aiohttp

from ..live_gateway import Live, free_port, spawn_live

SHUTDOWN_TIMEOUT = 5.0  # process_env's WA_SHUTDOWN_TIMEOUT
MARGIN = 2.5  # the parent's kill margin, interpreter teardown
STARTED = re.compile(r"gateway process (\d+) started: pid (\d+)")
BODY = {"to": "logistic", "text": "🆕 several processes"}


def started(live: Live) -> list[tuple[int, int]]:
    """(child number, pid) for every start the parent logged, in order."""
    return [(int(number), int(pid)) for number, pid in STARTED.findall(live.stderr())]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purposes
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.05)


async def answers(port: int) -> tuple[int, int]:
    """(status of POST /notify, status of GET /readyz)."""
    async with aiohttp.ClientSession() as http:
        async with http.post(f"http://127.0.0.1:{port}/notify", json=BODY) as response:
            notify = response.status
        async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
            ready = response.status
    return notify, ready


async def two_children(process_env, tmp_path) -> Live:
    live = await spawn_live("serve", process_env(GATEWAY_PROCESSES="2"), tmp_path / "parent.err", port=free_port())
    await live.wait_ready()
    await until(lambda: len(started(live)) == 2, 5, "two children started")
    await until(lambda: live.stderr().count("connected to RabbitMQ") == 2, 10, "both children connected")
    return live


async def test_serve_processes_answers_on_one_port_and_restarts_a_killed_child(process_env, tmp_path):
    live = await two_children(process_env, tmp_path)
    try:
        assert await answers(live.port) == (202, 200)
        [(_, first), (_, second)] = started(live)
        assert first != second and alive(first) and alive(second)

        os.kill(first, signal.SIGKILL)
        # Once the dead child's socket is closed (the parent has reaped it), the other child
        # answers every connection on the port while the parent restarts the dead one. (A
        # connection the kernel queued on the dying child's socket is reset: the price of
        # SO_REUSEPORT, see README; net.ipv4.tcp_migrate_req=1 moves them instead.)
        await until(lambda: f"(pid {first}) exited with status -9" in live.stderr(), 5, "the parent saw the death")
        for _ in range(10):
            assert await answers(live.port) == (202, 200)
        await until(lambda: len(started(live)) == 3, 5, f"a new child after the kill:\n{live.stderr()[-2000:]}")
        number, new = started(live)[-1]
        assert number == 1 and new not in (first, second) and alive(new)
        assert "restart 1" in live.stderr()
        # a child listens before it has connected to RabbitMQ, and answers 503 until then
        await until(lambda: live.stderr().count("connected to RabbitMQ") == 3, 10, "the new child connected")
        assert await answers(live.port) == (202, 200)
    finally:
        code, _ = await live.stop()
    assert code == 0, live.stderr()[-2000:]


async def test_sigterm_stops_the_parent_and_every_child_with_exit_0(process_env, tmp_path):
    live = await two_children(process_env, tmp_path)
    pids = [pid for _, pid in started(live)]
    assert await answers(live.port) == (202, 200)

    code, seconds = await live.stop(signal.SIGTERM)

    assert code == 0, live.stderr()[-2000:]
    assert seconds < SHUTDOWN_TIMEOUT + MARGIN
    assert not [pid for pid in pids if alive(pid)]
    assert "Traceback" not in live.stderr()
    assert live.stderr().count("stopping: no new requests") == 2  # each child stopped cleanly


async def test_a_bad_setting_stops_the_parent_with_one_line_and_exit_2(process_env, tmp_path):
    env = process_env(GATEWAY_PROCESSES="2", WA_PROVIDER="no-such-provider")
    live = await spawn_live("serve", env, tmp_path / "parent.err", port=free_port())

    code, seconds = await live.stop(None, timeout=10)

    assert code == 2
    assert seconds < 10
    lines = live.stderr().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("wa-gateway: error: WA_PROVIDER:"), lines
    assert not started(live)


async def test_a_port_taken_by_another_program_is_one_line_and_exit_2(process_env, tmp_path):
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        live = await spawn_live("serve", process_env(GATEWAY_PROCESSES="2"), tmp_path / "parent.err", port=port)
        code, _ = await live.stop(None, timeout=10)
    assert code == 2
    lines = live.stderr().strip().splitlines()
    assert lines == [f"wa-gateway: error: cannot listen on 127.0.0.1:{port}: Address already in use"], lines
