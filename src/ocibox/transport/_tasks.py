"""Bounded concurrency for coroutines."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any


async def gather_bounded(limit: int, jobs: list[Callable[[], Awaitable[Any]]]) -> list[Any]:
    """Run coroutine factories with at most ``limit`` at once; the first error cancels the rest."""
    sem = asyncio.Semaphore(max(1, limit))

    async def one(job):
        async with sem:
            return await job()

    tasks = [asyncio.ensure_future(one(j)) for j in jobs]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
