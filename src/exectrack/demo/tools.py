"""The demo agent's tools, each a tracked ``skill`` run.

| tool | what happens | run |
| --- | --- | --- |
| ``web_search`` | returns results | success |
| ``calculator`` | a sum; bad input raises ``ValueError`` | success / ``invalid_input`` |
| ``slow_lookup`` | waits longer than its own 0.3 s budget | timeout ``deadline_exceeded`` |
| ``weather`` | the provider answers 429 | error ``rate_limited`` (retryable) |
| ``send_email`` | returns ``{"success": False}`` | error ``tool_failed`` (result classifier) |
| ``broken_tool`` | raises ``RuntimeError`` | error ``internal_error`` |
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from exectrack import ExecutionTracker, success_flag

__all__ = ["RateLimitError", "Tools", "make_tools"]

Tool = Callable[[str], Awaitable[Any]]


class RateLimitError(Exception):
    """What a provider SDK raises on HTTP 429."""

    status_code = 429


class Tools:
    """The tools, bound to one tracker."""

    def __init__(self, by_name: dict[str, Tool]) -> None:
        self.by_name = by_name

    async def call(self, name: str, argument: str) -> Any:
        return await self.by_name[name](argument)


def make_tools(tracker: ExecutionTracker, *, slow: float = 1.0, budget: float = 0.3) -> Tools:
    @tracker.with_run("skill", "web_search")
    async def web_search(query: str) -> list[str]:
        await asyncio.sleep(0.05)
        return [f"result {i} for {query}" for i in range(3)]

    @tracker.with_run("skill", "calculator")
    async def calculator(expression: str) -> int:
        await asyncio.sleep(0.01)
        parts = expression.split("+")
        return sum(int(p) for p in parts)  # "2+x" raises ValueError: invalid_input

    @tracker.with_run("skill", "slow_lookup")
    async def slow_lookup(key: str) -> str:
        async with asyncio.timeout(budget):  # TimeoutError inside the run: timeout
            await asyncio.sleep(slow)
        return key

    @tracker.with_run("skill", "weather")
    async def weather(city: str) -> str:
        await asyncio.sleep(0.02)
        raise RateLimitError(f"weather provider: too many requests for {city}")

    @tracker.with_run("skill", "send_email", classify_result=success_flag(code="tool_failed"))
    async def send_email(to: str) -> dict[str, Any]:
        await asyncio.sleep(0.02)
        return {"success": False, "error": f"mailbox of {to} is full"}

    @tracker.with_run("skill", "broken_tool")
    async def broken_tool(argument: str) -> str:
        await asyncio.sleep(0.01)
        raise RuntimeError("the tool crashed")

    return Tools(
        {
            "web_search": web_search,
            "calculator": calculator,
            "slow_lookup": slow_lookup,
            "weather": weather,
            "send_email": send_email,
            "broken_tool": broken_tool,
        }
    )
