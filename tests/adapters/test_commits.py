"""The group commit: order, grouping, the rate bound, back-pressure, failure and close."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from qudag_node.commits import GroupCommit

#: Seconds any single wait in these tests may take before it counts as a failure.
DEADLINE = 5.0


@dataclass
class Disk:
    """Records what the group commit does, in order; ``gate`` holds commits while clear."""

    stores: bool = True  # whether a write leaves something to commit
    calls: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    commit_times: list[float] = field(default_factory=list)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    committing: asyncio.Event = field(default_factory=asyncio.Event)
    fault: Exception | None = None
    failed: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.gate.set()

    async def write(self, steps: Sequence[str]) -> bool:
        self.calls.append(("write", tuple(steps)))
        return self.stores

    async def commit(self) -> None:
        self.commit_times.append(time.monotonic())
        self.calls.append(("commit", ()))
        self.committing.set()
        await self.gate.wait()
        if self.fault is not None:
            raise self.fault

    async def finish(self, step: str) -> None:
        self.calls.append(("finish", (step,)))

    def fail(self, steps: Sequence[str]) -> None:
        self.failed += steps

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.calls]

    def finished(self) -> list[str]:
        return [steps[0] for kind, steps in self.calls if kind == "finish"]


def group_commit(
    disk: Disk, max_rate: float = 1000.0, max_burst: int = 1, max_waiting: int = 8
) -> GroupCommit[str]:
    """A group commit writing to ``disk``."""
    return GroupCommit(
        disk.write,
        disk.commit,
        disk.finish,
        disk.fail,
        max_rate=max_rate,
        max_burst=max_burst,
        max_waiting=max_waiting,
    )


@asynccontextmanager
async def running(
    disk: Disk, max_rate: float = 1000.0, max_burst: int = 1, max_waiting: int = 8
) -> AsyncIterator[tuple[GroupCommit[str], asyncio.Task[None]]]:
    commits = group_commit(disk, max_rate, max_burst, max_waiting)
    task = asyncio.create_task(commits.run())
    try:
        yield commits, task
    finally:
        if not task.done():
            commits.close()
            disk.gate.set()
            async with asyncio.timeout(DEADLINE):
                await asyncio.gather(task, return_exceptions=True)


async def held_in_commit(disk: Disk, commits: GroupCommit[str], step: str) -> None:
    """Put ``step`` and return once its commit has started and is held at the gate."""
    disk.gate.clear()
    await commits.put(step)
    async with asyncio.timeout(DEADLINE):
        await disk.committing.wait()


async def test_a_step_is_finished_only_after_the_commit_that_holds_it() -> None:
    disk = Disk()
    async with running(disk) as (commits, _):
        for step in ("a", "b", "c"):
            await commits.put(step)
        async with asyncio.timeout(DEADLINE):
            await commits.flush()
    assert disk.finished() == ["a", "b", "c"]
    for step in ("a", "b", "c"):
        written = next(i for i, (k, s) in enumerate(disk.calls) if k == "write" and step in s)
        finished = disk.calls.index(("finish", (step,)))
        assert "commit" in disk.kinds()[written:finished]


async def test_steps_put_during_a_commit_share_the_next_transaction() -> None:
    disk = Disk()
    async with running(disk) as (commits, _):
        await held_in_commit(disk, commits, "a")
        for step in ("b", "c", "d"):
            await commits.put(step)
        assert disk.finished() == []  # "a" is not durable yet, so nothing is answered
        disk.gate.set()
        async with asyncio.timeout(DEADLINE):
            await commits.flush()
    assert disk.finished() == ["a", "b", "c", "d"]
    assert disk.kinds().count("commit") == 2
    second = [s for k, s in disk.calls[disk.calls.index(("commit", ())) + 1 :] if k == "write"]
    assert [step for steps in second for step in steps] == ["b", "c", "d"]


async def test_transactions_end_no_more_often_than_the_rate_allows() -> None:
    disk = Disk()
    rate, burst, count = 20.0, 3, 9  # 3 at once, then one each 50 ms
    async with running(disk, max_rate=rate, max_burst=burst) as (commits, _):
        for step in range(count):
            await commits.put(str(step))
            async with asyncio.timeout(DEADLINE):
                await commits.flush()  # each step is alone in its transaction
    assert disk.finished() == [str(step) for step in range(count)]
    times = disk.commit_times
    assert len(times) == count
    slack = 0.002  # the event loop's clock resolution
    for first in range(count):
        for last in range(first + 1, count):
            assert last - first + 1 <= burst + rate * (times[last] - times[first] + slack)
    assert times[burst] - times[0] >= 1 / rate - slack  # the bucket was empty by then


async def test_a_step_with_nothing_to_store_needs_no_commit() -> None:
    disk = Disk(stores=False)
    async with running(disk, max_rate=0.01) as (commits, _):  # a commit would wait 100 s
        await commits.put("messages only")
        async with asyncio.timeout(DEADLINE):
            await commits.flush()
    assert disk.kinds() == ["write", "finish"]


async def test_a_full_queue_holds_the_producer_back() -> None:
    disk = Disk()
    async with running(disk, max_waiting=2) as (commits, _):
        await held_in_commit(disk, commits, "a")
        await commits.put("b")
        await commits.put("c")
        third = asyncio.create_task(commits.put("d"))
        for _ in range(20):  # let every ready callback run: nothing may make room
            await asyncio.sleep(0)
        assert not third.done()
        disk.gate.set()
        async with asyncio.timeout(DEADLINE):
            await third
            await commits.flush()
    assert disk.finished() == ["a", "b", "c", "d"]


async def test_a_failed_commit_fails_every_unfinished_step_and_ends_the_run() -> None:
    disk = Disk()
    async with running(disk) as (commits, task):
        await held_in_commit(disk, commits, "a")
        await commits.put("b")
        disk.fault = OSError("disk I/O error")
        disk.gate.set()
        with pytest.raises(OSError, match="disk I/O error"):
            async with asyncio.timeout(DEADLINE):
                await task
    assert disk.finished() == []
    assert sorted(disk.failed) == ["a", "b"]


async def test_close_ends_the_open_transaction_at_once() -> None:
    disk = Disk()
    async with running(disk, max_rate=0.01) as (commits, task):  # 100 s between commits
        await commits.put("first")
        async with asyncio.timeout(DEADLINE):
            await commits.flush()
        await commits.put("last")
        commits.close()
        async with asyncio.timeout(DEADLINE):
            await task
        with pytest.raises(RuntimeError):
            await commits.put("too late")
    assert disk.finished() == ["first", "last"]
    assert disk.kinds().count("commit") == 2


async def test_a_step_in_preparation_delays_a_due_commit_by_one_interval_at_most() -> None:
    disk = Disk()
    rate = 10.0  # a step on its way may hold a commit back 100 ms
    async with running(disk, max_rate=rate, max_burst=2) as (commits, _):
        await commits.put("a")
        async with asyncio.timeout(DEADLINE):
            await commits.flush()
        put_at = time.monotonic()
        await commits.put("b")
        commits.preparing()  # a step that never comes: the commit must not wait for it
        async with asyncio.timeout(DEADLINE):
            await commits.flush()
    waited = disk.commit_times[1] - put_at
    assert 1 / rate - 0.002 <= waited < 1 / rate + 1.0
    assert disk.finished() == ["a", "b"]


async def test_a_step_put_while_a_commit_waits_for_it_joins_that_commit() -> None:
    disk = Disk()
    async with running(disk, max_rate=1.0, max_burst=5) as (commits, _):  # waits up to 1 s
        commits.preparing()
        await commits.put("a")
        commits.preparing()  # the next step is being made
        for _ in range(20):  # let the writer take "a" and find the commit due
            await asyncio.sleep(0)
        assert disk.kinds() == ["write"]  # held back for the step on its way
        await commits.put("b")
        async with asyncio.timeout(DEADLINE):
            await commits.flush()
    assert disk.kinds() == ["write", "write", "commit", "finish", "finish"]


def test_bounds_must_make_sense() -> None:
    disk = Disk.__new__(Disk)  # no event loop needed: the bounds are checked first
    for rate, burst, waiting in ((0.0, 1, 1), (1.0, 0, 1), (1.0, 1, 0)):
        with pytest.raises(ValueError, match="max_rate"):
            group_commit(disk, rate, burst, waiting)


class DiskFull(Exception):
    """Stands for the one failure the owner can recover from."""


def recoverable_commits(disk: Disk, broken: asyncio.Event, max_waiting: int) -> GroupCommit[str]:
    """A group commit over ``disk`` that recovers from :class:`DiskFull` (``broken`` is
    set when it does)."""
    return GroupCommit(
        disk.write,
        disk.commit,
        disk.finish,
        disk.fail,
        max_rate=1000.0,
        max_burst=1,
        max_waiting=max_waiting,
        recoverable=lambda e: isinstance(e, DiskFull),
        on_broken=broken.set,
    )


async def test_a_step_waiting_for_room_when_the_failure_comes_is_failed_not_written() -> None:
    disk = Disk()
    broken = asyncio.Event()
    commits = recoverable_commits(disk, broken, max_waiting=1)
    task = asyncio.create_task(commits.run())
    try:
        await held_in_commit(disk, commits, "a")
        await commits.put("b")  # the queue is full
        late = asyncio.create_task(commits.put("c"))  # made before the failure, waits
        for _ in range(20):
            await asyncio.sleep(0)
        assert not late.done()
        disk.fault = DiskFull()
        disk.gate.set()
        async with asyncio.timeout(DEADLINE):
            await broken.wait()
            await late
            await commits.flush()
        for _ in range(20):  # let the writer take whatever was queued
            await asyncio.sleep(0)
        assert sorted(disk.failed) == ["a", "b", "c"]
        assert ("write", ("c",)) not in disk.calls
        assert disk.finished() == []
    finally:
        commits.close()
        disk.gate.set()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_recoverable_failure_fails_the_steps_and_takes_none_until_repaired() -> None:
    disk = Disk()
    broken = asyncio.Event()
    commits = recoverable_commits(disk, broken, max_waiting=8)
    task = asyncio.create_task(commits.run())
    try:
        await held_in_commit(disk, commits, "a")
        await commits.put("b")  # waits behind "a"'s commit
        disk.fault = DiskFull()
        disk.gate.set()
        async with asyncio.timeout(DEADLINE):
            await broken.wait()
            await commits.flush()  # settled: nothing is left in flight
        assert commits.broken
        assert not task.done()  # still running
        assert sorted(disk.failed) == ["a", "b"]
        await commits.put("c")  # made from state that is not on its way to the disk
        assert disk.failed[-1] == "c"
        disk.fault = None
        commits.repair()
        await commits.put("d")
        async with asyncio.timeout(DEADLINE):
            await commits.flush()
        assert disk.finished() == ["d"]
        assert disk.failed.count("d") == 0
        disk.fault = RuntimeError("not recoverable")
        await commits.put("e")
        with pytest.raises(RuntimeError):
            async with asyncio.timeout(DEADLINE):
                await task
        assert disk.failed[-1] == "e"
    finally:
        if not task.done():
            commits.close()
            await asyncio.gather(task, return_exceptions=True)
