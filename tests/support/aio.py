"""Helpers for tests that run on an asyncio loop of their own."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from pushsource.errors import IcecastError

T = TypeVar("T")
#: Never in any message: tests give it as the source password.
SECRET = "n0t-In-Any:Message@"


def run(coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
    """asyncio.run, bounded: a test that hangs fails instead."""

    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())


class Events:
    """SourceEvents that record what a SourceSocket tells, and when (loop time)."""

    def __init__(self) -> None:
        self.accepted_at: float | None = None
        self.errors: list[IcecastError] = []
        self.changed = asyncio.Event()
        self.on_accepted: Callable[[], None] = lambda: None

    def accepted(self) -> None:
        assert self.accepted_at is None and not self.errors
        self.accepted_at = asyncio.get_running_loop().time()
        self.changed.set()
        self.on_accepted()

    def failed(self, error: IcecastError) -> None:
        self.errors.append(error)
        self.changed.set()

    async def until(self, done: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not done():
                self.changed.clear()
                await self.changed.wait()

    async def error(self, timeout: float = 5.0) -> IcecastError:
        await self.until(lambda: bool(self.errors), timeout)
        await asyncio.sleep(0.05)  # a second failed() would show now
        assert len(self.errors) == 1, self.errors
        assert SECRET not in str(self.errors[0]) and SECRET not in repr(self.errors[0])
        return self.errors[0]
