"""A deterministic fake language model: no network, the same plan for the same turn.

A turn's plan says which tools the agent calls and what it answers; the answer
streams as tokens with a small delay, the way a real model's would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

__all__ = ["TOOLS_BY_TURN", "FakeModel", "Plan"]

# What the agent does on turn n (cycling): a mix of tools that succeed, one that is
# slow (and times out), one that is rate-limited, one that reports failure in its
# result, one that raises.
TOOLS_BY_TURN: tuple[tuple[str, ...], ...] = (
    ("web_search",),
    ("web_search", "calculator"),
    ("slow_lookup",),
    ("weather",),
    ("send_email",),
    ("calculator", "web_search"),
    ("broken_tool",),
)


@dataclass(frozen=True, slots=True)
class Plan:
    tools: tuple[str, ...]
    answer: str


class FakeModel:
    """Plans a turn from its number and the user's words; streams the answer."""

    def __init__(self, token_delay: float = 0.02) -> None:
        self.token_delay = token_delay

    def plan(self, turn: int, message: str) -> Plan:
        tools = TOOLS_BY_TURN[turn % len(TOOLS_BY_TURN)]
        words = message.split()[:6] or ["nothing"]
        answer = f"You asked about {' '.join(words)}. I used {', '.join(tools)}. Done."
        return Plan(tools, answer)

    async def stream(self, text: str) -> AsyncIterator[str]:
        for i, word in enumerate(text.split(" ")):
            await asyncio.sleep(self.token_delay)
            yield word if i == 0 else " " + word
