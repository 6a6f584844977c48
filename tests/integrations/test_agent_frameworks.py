"""Tools run by agent frameworks under a tracked chat turn become child runs of that
turn: the OpenAI Agents SDK (``Runner.run``, ``run_streamed``, ``run_sync``, sync
tools on its worker thread) and LangChain ``@tool`` (``invoke``, ``ainvoke``,
``batch``, ``abatch``). Fake models, no network."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest

from exectrack import ExecutionTracker, Run, RunStatus

agents = pytest.importorskip("agents")  # installed by the dev extra: CI never skips
langchain_tools = pytest.importorskip("langchain_core.tools")

from agents import Agent, ModelResponse, RunConfig, Runner, Usage, function_tool  # noqa: E402
from agents.models.interface import Model  # noqa: E402
from openai.types.responses import (  # noqa: E402
    Response,
    ResponseCompletedEvent,
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)


class ScriptedModel(Model):
    """A model that first calls every tool it is given (one call each, in parallel),
    then answers with a fixed text once it sees their outputs."""

    def _output(self, input: Any, tools: list[Any]) -> list[Any]:
        seen_outputs = isinstance(input, list) and any(
            (item.get("type") if isinstance(item, dict) else None) == "function_call_output"
            for item in input
        )
        if not seen_outputs and tools:
            return [
                ResponseFunctionToolCall(
                    type="function_call",
                    id=f"fc_{i}",
                    call_id=f"call_{i}",
                    name=tool.name,
                    arguments='{"city": "Oslo"}',
                )
                for i, tool in enumerate(tools)
            ]
        return [
            ResponseOutputMessage(
                type="message",
                id="msg_1",
                role="assistant",
                status="completed",
                content=[ResponseOutputText(type="output_text", text="done", annotations=[])],
            )
        ]

    async def get_response(  # type: ignore[override]
        self,
        system_instructions: Any,
        input: Any,
        model_settings: Any,
        tools: Any,
        *a: Any,
        **k: Any,
    ) -> ModelResponse:
        return ModelResponse(output=self._output(input, tools), usage=Usage(), response_id=None)

    async def stream_response(  # type: ignore[override]
        self,
        system_instructions: Any,
        input: Any,
        model_settings: Any,
        tools: Any,
        *a: Any,
        **k: Any,
    ) -> AsyncIterator[Any]:
        response = Response(
            id="resp_1",
            created_at=0,
            model="scripted",
            object="response",
            output=self._output(input, tools),
            tool_choice="auto",
            tools=[],
            parallel_tool_calls=True,
        )
        yield ResponseCompletedEvent(
            type="response.completed", response=response, sequence_number=0
        )


RUN_CONFIG = RunConfig(tracing_disabled=True)  # the SDK's tracing would export over HTTP


def weather_agent(tracker: ExecutionTracker) -> tuple[Agent[Any], list[str]]:
    """An agent with one async tool and one sync tool (run on the SDK's worker
    thread), both tracked as ``skill`` runs; records the threads the tools ran on."""
    threads: list[str] = []

    @function_tool
    @tracker.with_run("skill", "forecast")
    async def forecast(city: str) -> str:
        """Tomorrow's forecast for a city."""
        threads.append(threading.current_thread().name)
        return f"sun in {city}"

    @function_tool
    @tracker.with_run("skill", "temperature")
    def temperature(city: str) -> str:
        """The temperature in a city now."""
        threads.append(threading.current_thread().name)
        return f"12 C in {city}"

    agent = Agent(name="weather", model=ScriptedModel(), tools=[forecast, temperature])
    return agent, threads


def runs_by_ref(tracker: ExecutionTracker) -> dict[str | None, list[Run]]:
    found: dict[str | None, list[Run]] = {}
    for run in tracker.list_runs(limit=200).runs:
        found.setdefault(run.source_ref, []).append(run)
    return found


def assert_tools_nest_under_turns(tracker: ExecutionTracker, turns: int, tools: list[str]) -> None:
    runs = runs_by_ref(tracker)
    chats = runs.pop("turn")
    assert len(chats) == turns
    assert all(r.status is RunStatus.SUCCESS for r in chats)
    chat_ids = sorted(r.id for r in chats)
    for name in tools:
        tool_runs = runs.pop(name)
        assert sorted(r.parent_id or "" for r in tool_runs) == chat_ids, name
        assert all(r.status is RunStatus.SUCCESS and r.source == "skill" for r in tool_runs)
    assert runs == {}


def test_agents_runner_run_tools_are_children_of_the_turn(tracker: ExecutionTracker) -> None:
    """``Runner.run`` inside a tracked async chat turn: both tools (the sync one on a
    worker thread) are skill runs whose parent is that turn."""
    agent, threads = weather_agent(tracker)

    @tracker.with_run("chat", "turn")
    async def turn() -> str:
        result = await Runner.run(agent, "weather in Oslo?", run_config=RUN_CONFIG)
        return str(result.final_output)

    assert asyncio.run(turn()) == "done"
    assert len(set(threads)) == 2  # the sync tool ran on another thread
    assert_tools_nest_under_turns(tracker, 1, ["forecast", "temperature"])


def test_agents_run_streamed_tools_are_children_of_the_streamed_turn(
    tracker: ExecutionTracker,
) -> None:
    """``Runner.run_streamed`` inside a tracked async-generator chat turn that relays
    the SDK's events: the tools are children of the turn, which ends after the
    stream with the events it yielded counted."""
    agent, _ = weather_agent(tracker)

    @tracker.with_run("chat", "turn")
    async def turn() -> AsyncIterator[str]:
        result = Runner.run_streamed(agent, "weather in Oslo?", run_config=RUN_CONFIG)
        async for event in result.stream_events():
            yield event.type

    async def consume() -> list[str]:
        return [kind async for kind in turn()]

    events = asyncio.run(consume())
    assert events
    assert_tools_nest_under_turns(tracker, 1, ["forecast", "temperature"])
    [chat] = runs_by_ref(tracker)["turn"]
    assert chat.items == len(events)


def test_agents_run_sync_tools_are_children_of_the_turn(tracker: ExecutionTracker) -> None:
    """``Runner.run_sync`` (its own event loop) inside a tracked sync chat turn."""
    agent, _ = weather_agent(tracker)
    with tracker.with_run("chat", "turn"):
        assert Runner.run_sync(agent, "weather in Oslo?", run_config=RUN_CONFIG).final_output
    assert_tools_nest_under_turns(tracker, 1, ["forecast", "temperature"])


def test_agents_concurrent_turns_keep_their_own_children(tracker: ExecutionTracker) -> None:
    """Five turns at once on one loop (the SDK's worker threads reused across
    them): every tool run's parent is the turn that ran it, never another one."""
    agent, _ = weather_agent(tracker)

    @tracker.with_run("chat", "turn")
    async def turn() -> Any:
        return (await Runner.run(agent, "weather?", run_config=RUN_CONFIG)).final_output

    async def main() -> None:
        await asyncio.gather(*(turn() for _ in range(5)))

    asyncio.run(main())
    assert_tools_nest_under_turns(tracker, 5, ["forecast", "temperature"])


@pytest.fixture
def lc_tools(tracker: ExecutionTracker) -> tuple[Any, Any]:
    """A sync and an async LangChain ``@tool``, each tracked as a skill run."""
    tool = langchain_tools.tool

    @tool
    @tracker.with_run("skill", "lookup")
    def lookup(query: str) -> str:
        """Look something up."""
        return f"found {query}"

    @tool
    @tracker.with_run("skill", "alookup")
    async def alookup(query: str) -> str:
        """Look something up, asynchronously."""
        await asyncio.sleep(0)
        return f"found {query}"

    return lookup, alookup


def test_langchain_invoke_and_batch_are_children_of_the_turn(
    tracker: ExecutionTracker, lc_tools: tuple[Any, Any]
) -> None:
    """A sync ``@tool``: ``invoke`` and ``batch`` (LangChain's thread pool) inside a
    tracked sync turn; every call is a child of the turn."""
    lookup, _ = lc_tools
    with tracker.with_run("chat", "turn"):
        assert lookup.invoke({"query": "a"}) == "found a"
        assert lookup.batch([{"query": q} for q in "bcd"]) == ["found b", "found c", "found d"]
    runs = runs_by_ref(tracker)
    [chat] = runs["turn"]
    assert [r.parent_id for r in runs["lookup"]] == [chat.id] * 4


def test_langchain_ainvoke_and_abatch_are_children_of_the_turn(
    tracker: ExecutionTracker, lc_tools: tuple[Any, Any]
) -> None:
    """``ainvoke``/``abatch`` of the async tool and of the sync one (LangChain runs a
    sync tool's ``ainvoke`` in an executor) inside a tracked async turn."""
    lookup, alookup = lc_tools

    @tracker.with_run("chat", "turn")
    async def turn() -> list[str]:
        out = [await alookup.ainvoke({"query": "a"}), await lookup.ainvoke({"query": "b"})]
        out += await alookup.abatch([{"query": "c"}, {"query": "d"}])
        out += await lookup.abatch([{"query": "e"}, {"query": "f"}])
        return out

    assert asyncio.run(turn()) == [f"found {q}" for q in "abcdef"]
    runs = runs_by_ref(tracker)
    [chat] = runs["turn"]
    assert [r.parent_id for r in runs["alookup"]] == [chat.id] * 3
    assert [r.parent_id for r in runs["lookup"]] == [chat.id] * 3
