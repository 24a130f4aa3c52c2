"""Calling the observer hooks (`message_delivered`, `message_dead_lettered`, …).

Observers never break or slow delivery: each runs after the ack in a task of its
own, an `async def` implementation is awaited there (a database or Sentry call
never blocks the loop), and a failing one is logged and ignored. A stopping worker
gives running observers a moment to finish.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

import pluggy

log = logging.getLogger(__name__)

MAX_RUNNING = 1000
"""Observer calls in flight at once; beyond it new ones are dropped and counted (a
hook stuck on a dead server must not grow memory without bound)."""


class Observers:
    def __init__(self, manager: pluggy.PluginManager) -> None:
        self.manager = manager
        self.dropped = 0
        self._running: set[asyncio.Task[None]] = set()

    def notify(self, name: str, **kwargs: Any) -> None:
        impls = getattr(self.manager.hook, name).get_hookimpls()
        if not impls:
            return
        if len(self._running) >= MAX_RUNNING:
            self.dropped += 1
            if self.dropped == 1:
                log.warning("observer hooks are too slow: %d calls running; dropping new ones", MAX_RUNNING)
            return
        task = asyncio.get_running_loop().create_task(self._call(name, impls, kwargs))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    @staticmethod
    async def _call(name: str, impls: list[Any], kwargs: dict[str, Any]) -> None:
        for impl in impls:
            try:
                result = impl.function(**{arg: kwargs[arg] for arg in impl.argnames})
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("hook %s of plugin %s failed; delivery goes on", name, impl.plugin_name)

    async def drain(self, timeout: float) -> None:
        if not self._running:
            return
        _, pending = await asyncio.wait(set(self._running), timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
