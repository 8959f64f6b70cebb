"""Shared fixtures: real nodes running in the test's event loop, each built by the
composition root (:func:`qudag_node.root.serve`) as the process builds it; the order of
the run."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from qudag_node.config import Settings, load_settings
from qudag_node.root import Started, serve

START_TIMEOUT = 30.0
#: The xdist groups that take longest, longest first: ``make test`` starts them before
#: everything else so that none of them is left to run alone at the end (the scheduler
#: hands work out in collection order when told not to reorder it).
LONGEST_GROUPS = (
    "simulation-n7",
    "netns",
    "containers",
    "simulation",
    "deploy",
    "monitoring",
    "openapi",
)


def _rank(item: pytest.Item) -> int:
    marker = item.get_closest_marker("xdist_group")
    group = marker.args[0] if marker and marker.args else None
    return LONGEST_GROUPS.index(group) if group in LONGEST_GROUPS else len(LONGEST_GROUPS)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the longest groups first, in the order of :data:`LONGEST_GROUPS`; the other
    tests keep their order (the sort is stable).

    Under ``--dist loadgroup`` pytest-xdist has, by now, suffixed each grouped test's id
    with ``@group``, which is what keeps a group on one worker; if a version of pytest
    ignores that, the run stops here rather than letting groups run apart."""
    if getattr(config.option, "loadgroup", False):
        apart = [i.nodeid for i in items if i.get_closest_marker("xdist_group")]
        apart = [nodeid for nodeid in apart if "@" not in nodeid]
        if apart:
            raise pytest.UsageError(f"xdist groups are not applied (pytest version?): {apart[0]}")
    items.sort(key=_rank)


@dataclass(frozen=True)
class NodeHandle:
    """A node started by :func:`node_factory`."""

    url: str
    port: int  # the API's
    p2p_port: int | None
    settings: Settings
    data_dir: Path


NodeFactory = Callable[..., Awaitable[NodeHandle]]


@pytest.fixture
async def node_factory(tmp_path: Path) -> AsyncIterator[NodeFactory]:
    """Start in-process nodes (API on port 0, data in tmp_path); stops them at teardown.

    Keyword arguments are settings in environment form, e.g. ``QUDAG_MAX_TX_BYTES="1024"``.
    """
    running: list[tuple[asyncio.Event, asyncio.Task[None]]] = []
    numbers = itertools.count(1)

    async def start(**overrides: str) -> NodeHandle:
        n = next(numbers)
        env = {
            "NODE_ID": f"node{n}",
            "QUDAG_DATA_DIR": str(tmp_path / f"node{n}"),
            "QUDAG_API_HOST": "",
            "QUDAG_API_PORT": "0",
            "QUDAG_P2P_PORT": "0",
            **overrides,
        }
        settings = load_settings(env)
        stop = asyncio.Event()
        started: asyncio.Future[Started] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(
            serve(settings, shutdown_trigger=stop.wait, on_started=started.set_result),
            name=f"node{n}",
        )
        running.append((stop, task))
        either: set[asyncio.Future[Any]] = {task, started}
        done, _ = await asyncio.wait(
            either, timeout=START_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
        )
        if task in done:
            started.cancel()
            task.result()
            raise AssertionError("node stopped during start-up")
        if started not in done:
            started.cancel()
            raise AssertionError(f"node did not start within {START_TIMEOUT} s")
        ports = started.result()
        return NodeHandle(
            f"http://127.0.0.1:{ports.api_port}",
            ports.api_port,
            ports.p2p_port,
            settings,
            settings.data_path,
        )

    yield start
    for stop, task in reversed(running):
        stop.set()
        if not task.done():
            await asyncio.wait_for(task, START_TIMEOUT)
        elif not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
