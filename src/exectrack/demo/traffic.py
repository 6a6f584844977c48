"""Traffic for the demo host: simulated users chatting over real HTTP, one of whom
now and then closes the connection in the middle of a streamed answer."""

from __future__ import annotations

import asyncio
import contextlib
import itertools

import httpx

__all__ = ["MESSAGES", "generate"]

MESSAGES = (
    "what is the weather in Oslo?",
    "search the web for vector databases",
    "add 2 and 3 for me",
    "look up the order 4711",
    "email the report to ops@example.com",
    "summarise the incident from last night",
)

DROP_EVERY = 4  # every fourth conversation hangs up after three chunks


async def _one_turn(client: httpx.AsyncClient, message: str, session: str, drop: bool) -> None:
    async with client.stream(
        "POST", "/api/chat", json={"message": message, "session_id": session}
    ) as response:
        chunks = 0
        async for _ in response.aiter_text():
            chunks += 1
            if drop and chunks == 3:
                return  # leaving the block closes the connection mid-stream


async def generate(base_url: str, *, pause: float = 0.2) -> None:
    """Chat with the host until cancelled; errors of single turns are ignored (a
    dropped turn is the point; the server may also be shutting down)."""
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        for n in itertools.count():
            session = f"user-{n % 3}"
            message = MESSAGES[n % len(MESSAGES)]
            with contextlib.suppress(httpx.HTTPError):
                await _one_turn(client, message, session, drop=n % DROP_EVERY == DROP_EVERY - 1)
            await asyncio.sleep(pause)
