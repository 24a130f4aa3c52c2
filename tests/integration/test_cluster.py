"""A 3-node RabbitMQ cluster on this machine, and the loss of the node that leads the
work queue under a steady load (issue 16 item 6).

The test builds its own cluster beside the machine's RabbitMQ, which it never touches:
three nodes with their own names, ports, data and log directories, an Erlang cookie of
their own (so no command of this test can reach another node), no plugins; started in
parallel with `rabbitmq-server -detached`, joined with `rabbitmqctl join_cluster`, and
stopped and deleted at the end, also when the test fails.

On it run 2 gateways and 2 workers (real processes, AMQP_URL listing the three nodes),
while a client posts a steady 100 requests/s to the two gateways in turn. After 5 s the
node that leads `<prefix>.notify` is SIGKILLed (WA_CLUSTER_STOP=stop_app: stopped
gracefully instead); every process was connected to it (the first node in AMQP_URL,
where the queues were declared and, client-local, got their leaders). Then: every 202
was delivered, the only answers were 202 and 503, service was back within 10 s of the
node going away; duplicates are counted and printed with the timeline.

The ledger stays on, since its quorum queue is part of each publish's confirm: on a
SQLite file in tmp_path, which both workers' ledger writers share (they take turns on
its lock; the test does not read it). Redis is the shared one, under the test's prefix.

Slow (cluster start-up, 20 s of load, ~60 s in all): marked `slow`, run by `make test`.
WA_CLUSTER_DEBUG=1 prints the four processes' logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from ..conftest import finish, outbox_lines, output, sbin_tool, spawn, wait_for
from ..live_gateway import free_port

pytestmark = pytest.mark.slow

RABBIT_SCRIPTS = Path("/usr/lib/rabbitmq/bin")
"""Where Debian keeps the real scripts: its /usr/sbin ones are wrappers that run them as
the `rabbitmq` user, whose HOME (and so the machine's Erlang cookie) they impose."""

DEBUG = os.environ.get("WA_CLUSTER_DEBUG")
RATE = 100  # requests per second, alternating the two gateways
LOAD_SECONDS = 20.0
STOP_AFTER = 5.0  # seconds into the load
RECOVERY_LIMIT = 10.0  # service back (only 202s) within this many seconds of the stop
HOW = os.environ.get("WA_CLUSTER_STOP", "kill")
"""How the leader node stops: `kill` (SIGKILL, the default: a machine that dies, at a
known instant) or `stop_app` (graceful: the node serves on for most of the several
seconds stop_app takes; recovery is then counted from its first refusal)."""


def rabbit_tool(name: str) -> str | None:
    direct = RABBIT_SCRIPTS / name
    if direct.exists():
        return str(direct)
    found = sbin_tool(name)
    return found if os.path.sep in found else None


@dataclass
class Node:
    name: str
    port: int
    dist_port: int
    home: Path

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}"


class RabbitCluster:
    """Three RabbitMQ nodes on 127.0.0.1 with their own everything, joined as one cluster."""

    def __init__(self, base: Path, size: int = 3) -> None:
        self.base = base
        tag = uuid.uuid4().hex[:6]
        self.nodes = [
            Node(f"wa-c{i}-{tag}@localhost", free_port(), free_port(), base / f"c{i}") for i in range(1, size + 1)
        ]
        self.started: list[Node] = []
        self.timings: dict[str, float] = {}

    def env(self, node: Node | None = None) -> dict[str, str]:
        """The environment of a node, or (None) of the CLI tools."""
        env = {
            "PATH": os.environ["PATH"],
            "LANG": "C.UTF-8",
            "HOME": str(self.base),  # .erlang.cookie: this cluster's own
            "RABBITMQ_CONF_ENV_FILE": str(self.base / "rabbitmq-env.conf"),  # not /etc/rabbitmq's
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
        }
        if node is not None:
            env.update({
                "RABBITMQ_NODENAME": node.name,
                "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
                "RABBITMQ_NODE_PORT": str(node.port),
                "RABBITMQ_DIST_PORT": str(node.dist_port),
                "RABBITMQ_MNESIA_BASE": str(node.home / "mnesia"),
                "RABBITMQ_LOG_BASE": str(node.home / "log"),
                "RABBITMQ_CONFIG_FILE": str(node.home / "rabbitmq.conf"),
                "RABBITMQ_PID_FILE": str(node.home / "pid"),
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            })
        return env

    async def ctl(self, node: Node, *args: str, tool: str = "rabbitmqctl", timeout: float = 60) -> str:
        """Run a CLI tool against one of this cluster's nodes (always with -n)."""
        path = rabbit_tool(tool)
        assert path is not None
        process = await asyncio.create_subprocess_exec(
            path, "-n", node.name, *args, env=self.env(),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(), timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise AssertionError(f"{tool} {' '.join(args)} on {node.name}: no answer in {timeout} s") from None
        if process.returncode != 0:
            raise AssertionError(f"{tool} {' '.join(args)} on {node.name} failed: {err.decode()}{out.decode()}")
        return out.decode()

    async def _start_node(self, node: Node) -> None:
        node.home.mkdir(parents=True)
        # leaders where the queue is declared (the default up to RabbitMQ 3.13, said
        # here for later versions): on the node every process connects to first
        (node.home / "rabbitmq.conf").write_text("queue_leader_locator = client-local\n", encoding="utf-8")
        server = rabbit_tool("rabbitmq-server")
        assert server is not None
        process = await asyncio.create_subprocess_exec(
            server, "-detached", env=self.env(node),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        await process.wait()
        self.started.append(node)
        await self.ctl(node, "wait", str(node.home / "pid"), "--timeout", "60", timeout=70)


    async def start(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        cookie = self.base / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(20).upper(), encoding="ascii")
        cookie.chmod(0o400)
        (self.base / "rabbitmq-env.conf").write_text("", encoding="utf-8")
        (self.base / "enabled_plugins").write_text("[].\n", encoding="utf-8")
        began = time.monotonic()
        await asyncio.gather(*(self._start_node(node) for node in self.nodes))
        self.timings["boot"] = time.monotonic() - began
        seed, *others = self.nodes
        began = time.monotonic()
        await asyncio.gather(*(self.ctl(node, "stop_app") for node in others))
        for node in others:  # one join at a time: two at once can fail to start Mnesia
            await self.ctl(node, "join_cluster", seed.name)
            await self.ctl(node, "start_app")
        self.timings["join"] = time.monotonic() - began
        status = json.loads(await self.ctl(seed, "cluster_status", "--formatter", "json"))
        assert sorted(status["running_nodes"]) == sorted(n.name for n in self.nodes), status

    def kill(self, node: Node) -> None:
        """SIGKILL a node's VM, if the pid in its pid file is still that node's."""
        with contextlib.suppress(OSError, ValueError):
            pid = int((node.home / "pid").read_text().strip())
            environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            if f"RABBITMQ_NODENAME={node.name}".encode() in environment:
                os.kill(pid, signal.SIGKILL)

    async def stop(self) -> None:
        """Stop every node this cluster started (halting the VM), kill what does not
        stop, delete the directories."""

        async def halt(node: Node) -> None:
            try:
                await self.ctl(node, "stop", timeout=30)
            except AssertionError:  # killed already, or not answering
                self.kill(node)

        await asyncio.gather(*(halt(node) for node in self.started), return_exceptions=True)
        self.started.clear()
        shutil.rmtree(self.base, ignore_errors=True)

    async def queue_leader_and_members(self, queue: str, via: Node) -> tuple[str, list[str]]:
        rows = json.loads(await self.ctl(via, "list_queues", "name", "leader", "members", "--formatter", "json"))
        for row in rows:
            if row["name"] == queue:
                return row["leader"], row["members"]
        raise AssertionError(f"{queue} is not on the cluster: {rows}")

    async def connections(self, via: Node) -> dict[str, list[str]]:
        """The cluster's client connections: connection names by node (the one whose
        AMQP port they connected to)."""
        rows = json.loads(await self.ctl(via, "list_connections", "port", "client_properties", "--formatter", "json"))
        found: dict[str, list[str]] = {}
        for row in rows:
            properties = row["client_properties"]
            if isinstance(properties, dict):
                name = str(properties.get("connection_name", ""))
            else:  # [["connection_name", "longstr", "..."], ...]
                name = next((str(p[-1]) for p in properties if p[0] == "connection_name"), "")
            node = next((n.name for n in self.nodes if n.port == row["port"]), f"port {row['port']}")
            found.setdefault(node, []).append(name)
        return found


@pytest.fixture
async def rabbit_cluster(tmp_path: Path) -> AsyncIterator[RabbitCluster]:
    if rabbit_tool("rabbitmq-server") is None or rabbit_tool("rabbitmqctl") is None:
        pytest.skip("rabbitmq-server is not installed")
    cluster = RabbitCluster(tmp_path / "rabbit")
    try:
        await cluster.start()
        yield cluster
    finally:
        await cluster.stop()


@dataclass
class Answer:
    sent: float  # seconds since the load began
    answered: float
    status: int  # 0: no HTTP answer at all
    gateway: int
    id: str | None
    detail: str = ""  # of a non-202: the start of the error's detail


async def post_steadily(ports: list[int], seconds: float, rate: int, began: float) -> list[Answer]:
    """POST /notify at `rate`/s for `seconds`, the gateways in turn; every answer recorded."""
    answers: list[Answer] = []
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=15)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:

        async def post(number: int) -> None:
            gateway = number % len(ports)
            sent = time.monotonic() - began
            status, notification_id, detail = 0, None, ""
            try:
                async with http.post(
                    f"http://127.0.0.1:{ports[gateway]}/notify",
                    json={"to": "logistic", "text": f"cluster {number}"},
                ) as response:
                    status = response.status
                    answer = await response.json()
                    if status == 202:
                        notification_id = answer["id"]
                    else:
                        detail = re.sub(r"\d+", "#", str(answer.get("detail", "")).split(";")[0])[:100]
            except (aiohttp.ClientError, TimeoutError) as exc:
                detail = type(exc).__name__
            answers.append(Answer(sent, time.monotonic() - began, status, gateway, notification_id, detail))

        tasks = []
        for number in range(int(seconds * rate)):
            delay = began + number / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(post(number)))
        await asyncio.gather(*tasks)
    return answers


async def test_losing_the_leader_node_under_load_loses_no_accepted_notification(
    rabbit_cluster: RabbitCluster, process_env, redis_url, prefix, tmp_path
):
    cluster = rabbit_cluster
    amqp_url = ",".join(node.url for node in cluster.nodes) + "/"  # the short form would do too
    ports = [free_port(), free_port()]
    outboxes = [tmp_path / "outbox-1.jsonl", tmp_path / "outbox-2.jsonl"]
    common = {
        "AMQP_URL": amqp_url,
        "REDIS_URL": redis_url,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
        "GATEWAY_RATE_LIMIT": "0",
        "WA_PUBLISH_TIMEOUT": "3",
        "WA_RETRY_DELAYS": "0.5,1,2",
    }
    gateways = [
        await spawn("serve", process_env(**common, GATEWAY_PORT=str(port))) for port in ports
    ]
    workers = [
        await spawn("worker", process_env(
            **common, WA_PROVIDER="fake", WA_LOG_OUTBOX=str(outbox), WA_WORKER_PREFETCH="64",
        ))
        for outbox in outboxes
    ]
    processes = [*gateways, *workers]

    async def all_connected() -> bool:
        return sum(output(p)[1].count("connected to RabbitMQ") for p in processes) == 4

    try:
        await wait_for(all_connected, timeout=30, interval=0.2)
        for port in ports:
            await wait_for(lambda port=port: _ready(port), timeout=20, interval=0.2)

        queue = f"{prefix}.notify"
        leader, members = await cluster.queue_leader_and_members(queue, cluster.nodes[1])
        assert sorted(members) == sorted(node.name for node in cluster.nodes), members  # 3 replicas
        leader_node = next(node for node in cluster.nodes if node.name == leader)
        on_leader = (await cluster.connections(leader_node)).get(leader, [])

        began = time.monotonic()
        load = asyncio.create_task(post_steadily(ports, LOAD_SECONDS, RATE, began))
        await asyncio.sleep(STOP_AFTER)
        stop_at = time.monotonic() - began
        if HOW == "kill":
            cluster.kill(leader_node)
        else:
            await cluster.ctl(leader_node, "stop_app")
        stopped_at = time.monotonic() - began
        answers = await load

        survivor = next(node for node in cluster.nodes if node is not leader_node)
        new_leader, _ = await cluster.queue_leader_and_members(queue, survivor)
        moved = sum(len(names) for node, names in (await cluster.connections(survivor)).items() if node != leader)

        accepted = {a.id for a in answers if a.status == 202 and a.id}

        def delivered() -> list[str]:
            return [line["id"] for outbox in outboxes for line in outbox_lines(outbox)]

        await wait_for(lambda: accepted <= set(delivered()), timeout=60, interval=0.5)
        await asyncio.sleep(1)  # a late redelivery would show as a duplicate
    finally:
        codes = []
        for process in processes:
            if process.returncode is None:
                code, _ = await finish(process, timeout=20)
                codes.append(code)

    ids = delivered()
    duplicates = len(ids) - len(set(ids))
    statuses: dict[int, int] = {}
    for a in answers:
        statuses[a.status] = statuses.get(a.status, 0) + 1
    failed = [a for a in answers if a.status != 202]
    first_failure = min((a.sent for a in failed), default=None)
    last_failure = max((a.answered for a in failed), default=None)
    # when the node went away: the kill; with stop_app, its first refusal
    gone_at = stop_at if HOW == "kill" or first_failure is None else max(stop_at, first_failure)
    back = [a for a in answers if a.sent >= gone_at and a.status == 202
            and (last_failure is None or a.sent > last_failure)]
    recovered_at = min((a.answered for a in back), default=None)
    recovery = None if recovered_at is None else recovered_at - gone_at
    slowest = max(a.answered - a.sent for a in answers)

    def at(value: float | None) -> str:
        return "-" if value is None else f"t={value:.2f} s"

    answered = ", ".join(f"{count} x {status}" for status, count in sorted(statuses.items()))
    reasons = "".join(f"\n  {count} x {status}: {detail}" for (status, detail), count in sorted(
        Counter((a.status, a.detail) for a in failed).items()))
    print(
        f"\ncluster: boot {cluster.timings['boot']:.1f} s (3 nodes in parallel), join {cluster.timings['join']:.1f} s"
        f"\nleader of {queue}: {leader} (3 members), {len(on_leader)} connections on it; {HOW} at "
        f"t={stop_at:.2f} s (returned at t={stopped_at:.2f} s); new leader {new_leader}; "
        f"{moved} connections on the other nodes afterwards"
        f"\nload: {len(answers)} requests at {RATE}/s over {LOAD_SECONDS:.0f} s: {answered}; "
        f"slowest answer {slowest:.2f} s{reasons}"
        f"\nfailover: node gone at t={gone_at:.2f} s; non-202s sent from {at(first_failure)}, last answered at "
        f"{at(last_failure)}; 202s again from {at(recovered_at)}: service back "
        f"{'-' if recovery is None else f'{recovery:.2f} s'} after the node went away"
        f"\ndelivery: {len(accepted)} accepted, all delivered; {len(ids)} sends of {len(set(ids))} ids "
        f"({len(set(ids) - accepted)} of them answered 503: queued although unconfirmed), {duplicates} duplicates"
    )

    if DEBUG:
        for process in processes:
            print("=====", process.pid, output(process)[1][-6000:])
    assert set(statuses) <= {202, 503}, statuses
    assert codes == [0, 0, 0, 0], [output(p)[1][-2000:] for p in processes]
    assert len(on_leader) == 4, on_leader  # every process was on the node that stopped ...
    assert moved >= 4  # ... and moved to another one
    assert new_leader != leader
    assert recovery is not None and recovery <= RECOVERY_LIMIT, recovery
    assert all(a.status == 202 for a in answers if a.sent >= gone_at + RECOVERY_LIMIT)
    assert accepted <= set(ids)


async def _ready(port: int) -> bool:
    async with aiohttp.ClientSession() as http:
        try:
            async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                return response.status == 200
        except aiohttp.ClientConnectionError:
            return False
