"""The demo agent host behind ``exectrack demo``: a small FastAPI chat app with a
deterministic fake model that streams tokens and calls tools, a traffic generator
that talks to it (and drops a connection now and then), and a periodic heartbeat task,
all tracked, so a newcomer sees runs of every source and outcome within a minute.

Built only from exectrack's public API (``ExecutionTracker``, ``with_run``,
``success_flag``); needs the ``server`` extra (FastAPI, uvicorn, httpx).
"""

from __future__ import annotations

from exectrack.demo.host import DemoResult, run_demo

__all__ = ["DemoResult", "run_demo"]
