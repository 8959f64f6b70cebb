"""Client submissions and finality waiters, on a real event loop: the checks at the door,
the queue the pump takes, the answers, and the clients waiting for finality."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import pytest

from qudag_node import __version__
from qudag_node.core.crypto import tx_ids
from qudag_node.core.errors import InputRejected, Reason
from qudag_node.core.params import Params
from qudag_node.core.types import TxId
from qudag_node.metrics import Metrics
from qudag_node.ports import StorageFull, SubmitReceipt
from qudag_node.submissions import Submission, Submissions

DEADLINE = 5.0


class FinalIds:
    """The store's answer to "which of these are final" (a fake of the port)."""

    def __init__(self, changed: asyncio.Event) -> None:
        self.ids: set[TxId] = set()
        self.asked = 0  # a waiter that asked is registered: it waits next, without a pause
        self._changed = changed

    async def final_among(self, ids: Sequence[TxId]) -> set[TxId]:
        self.asked += 1
        self._changed.set()
        return self.ids & set(ids)


class Door:
    """A :class:`Submissions` with its inputs in reach: the pool, the disk, the wakeups."""

    def __init__(self, max_pending: int = 10) -> None:
        self.pool = 0
        self.short: str | None = None
        self.wakeups = 0
        self.changed = asyncio.Event()  # set at each wakeup and each question to the store
        self.final = FinalIds(self.changed)
        self.metrics = Metrics(__version__)
        self.subs = Submissions(
            Params(max_pending=max_pending),
            self.final,
            self.metrics,
            pool=lambda: self.pool,
            disk_short=lambda: self.short,
            wakeup=self._wake,
        )

    def _wake(self) -> None:
        self.wakeups += 1
        self.changed.set()

    async def until(self, holds: Callable[[], bool]) -> None:
        """Return once ``holds()``; fail after :data:`DEADLINE` seconds."""
        async with asyncio.timeout(DEADLINE):
            while not holds():
                self.changed.clear()
                await self.changed.wait()

    def sample(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


async def _queued(door: Door, count: int) -> list[Submission]:
    """Wait until ``count`` submissions have been queued, then take the queue."""
    await _queued_without_taking(door, count)
    return door.subs.take()


async def _queued_without_taking(door: Door, count: int) -> None:
    """Wait until ``count`` submissions have been queued (left in the queue)."""
    await door.until(lambda: door.wakeups >= count)


def _receipt(sub: Submission, duplicates: int = 0) -> SubmitReceipt:
    return SubmitReceipt(tuple(sub.ids), duplicates)


async def test_a_queued_batch_is_answered_with_its_receipt() -> None:
    door = Door()
    client = asyncio.create_task(door.subs.submit([b"a", b"b"]))
    [sub] = await _queued(door, 1)
    assert sub.ids == tx_ids([b"a", b"b"])
    assert list(sub.transactions) == [b"a", b"b"]
    assert not door.subs
    sub.answer(_receipt(sub, 1))
    assert await client == SubmitReceipt(tuple(tx_ids([b"a", b"b"])), 1)


async def test_the_engines_refusal_reaches_the_client() -> None:
    door = Door()
    client = asyncio.create_task(door.subs.submit([b"a"]))
    [sub] = await _queued(door, 1)
    sub.answer(InputRejected(Reason.POOL_FULL, "full"))
    with pytest.raises(InputRejected) as caught:
        await client
    assert caught.value.reason is Reason.POOL_FULL


async def test_a_client_gone_is_answered_without_error() -> None:
    door = Door()
    client = asyncio.create_task(door.subs.submit([b"a"]))
    [sub] = await _queued(door, 1)
    client.cancel()
    with pytest.raises(asyncio.CancelledError):
        await client
    sub.answer(_receipt(sub))  # nobody waits: nothing raised
    sub.fail(RuntimeError("late"))
    assert sub.done.cancelled()


async def test_bad_transactions_are_refused_at_the_door_and_counted() -> None:
    door = Door()
    with pytest.raises(InputRejected) as caught:
        await door.subs.submit([b"ok", b""])
    assert caught.value.reason is Reason.EMPTY_TRANSACTION
    assert "transaction 1" in caught.value.message
    assert door.sample("qudag_submits_rejected_total", reason="empty_transaction") == 1
    assert not door.subs
    assert door.wakeups == 0


async def test_a_full_pool_counts_what_is_queued() -> None:
    door = Door(max_pending=5)
    door.pool = 2
    first = asyncio.create_task(door.subs.submit([b"1", b"2"]))
    await _queued_without_taking(door, 1)
    with pytest.raises(InputRejected) as caught:
        await door.subs.submit([b"3", b"4"])  # 2 in the pool + 2 queued + 2 > 5
    assert caught.value.reason is Reason.POOL_FULL
    assert caught.value.message == "4 transactions waiting, limit 5"
    batch = door.subs.take()
    door.subs.put_back(batch)  # taken, not admitted: counts again
    with pytest.raises(InputRejected):
        await door.subs.submit([b"3", b"4"])
    door.subs.take()[0].answer(_receipt(batch[0]))
    await first
    second = asyncio.create_task(door.subs.submit([b"3"]))  # 2 + 1 <= 5 now
    [sub] = await _queued(door, 2)
    sub.answer(_receipt(sub))
    await second


async def _waiting(door: Door, count: int) -> None:
    """Wait until ``count`` finality waiters are registered."""
    await door.until(lambda: door.final.asked >= count)


async def test_low_disk_and_shutdown_refuse_new_batches() -> None:
    door = Door()
    door.short = "1 MiB free, need 64"
    with pytest.raises(StorageFull, match=r"1 MiB free, need 64 MiB"):
        await door.subs.submit([b"a"])
    door.short = None
    door.subs.close()
    assert door.subs.closing
    with pytest.raises(InputRejected, match="shutting down") as caught:
        await door.subs.submit([b"a"])
    assert caught.value.reason is Reason.POOL_FULL
    assert not door.subs


async def test_put_back_keeps_the_order_ahead_of_newer_batches() -> None:
    door = Door()
    clients = [asyncio.create_task(door.subs.submit([bytes([i])])) for i in range(3)]
    first = await _queued(door, 3)
    late = asyncio.create_task(door.subs.submit([b"late"]))
    await _queued_without_taking(door, 4)
    door.subs.put_back(first)
    again = door.subs.take()
    assert [list(s.transactions) for s in again] == [[b"\x00"], [b"\x01"], [b"\x02"], [b"late"]]
    for sub in again:
        sub.answer(_receipt(sub))
    await asyncio.gather(*clients, late)


async def test_queued_submissions_fail_each_with_its_own_error() -> None:
    door = Door()
    clients = [asyncio.create_task(door.subs.submit([bytes([i])])) for i in range(2)]
    await _queued_without_taking(door, 2)
    door.subs.fail_queued(lambda: StorageFull("no space"))
    errors = await asyncio.gather(*clients, return_exceptions=True)
    assert all(isinstance(e, StorageFull) for e in errors)
    assert errors[0] is not errors[1]
    assert not door.subs


# ----------------------------------------------------------------- finality


async def test_a_waiter_wakes_once_every_id_is_final() -> None:
    door = Door()
    a, b = tx_ids([b"a", b"b"])
    door.final.ids = {a}  # already in the log when the client asks
    waiter = asyncio.create_task(door.subs.wait_final([a, b], DEADLINE))
    await _waiting(door, 1)
    assert not waiter.done()
    door.subs.finalized({b}, 1.0)
    assert await waiter is True


async def test_a_waiter_of_final_ids_returns_at_once() -> None:
    door = Door()
    ids = tx_ids([b"a"])
    door.final.ids = set(ids)
    assert await door.subs.wait_final(ids, DEADLINE) is True


async def test_a_waiter_times_out_and_is_forgotten() -> None:
    door = Door()
    ids = tx_ids([b"a"])
    assert await door.subs.wait_final(ids, 0.01) is False
    door.subs.finalized(set(ids), 1.0)  # nobody left to wake


async def test_shutdown_answers_every_waiter_not_final() -> None:
    door = Door()
    waiters = [
        asyncio.create_task(door.subs.wait_final(tx_ids([bytes([i])]), DEADLINE)) for i in range(3)
    ]
    await _waiting(door, 3)
    door.subs.close()
    assert await asyncio.gather(*waiters) == [False, False, False]


async def test_finality_latency_is_measured_from_admission() -> None:
    door = Door(max_pending=2)
    ids = tx_ids([b"a", b"b", b"c", b"d", b"e"])
    door.subs.admitted(ids[:1], 10.0)
    door.subs.admitted(ids[:1], 11.0)  # admitted again: the first admission counts
    door.subs.finalized({ids[0]}, 12.5)
    assert door.sample("qudag_finality_seconds_count") == 1
    assert door.sample("qudag_finality_seconds_sum") == 2.5
    door.subs.admitted(ids, 20.0)  # the clock keeps at most twice the pool: 4 of 5
    door.subs.finalized(set(ids), 21.0)
    assert door.sample("qudag_finality_seconds_count") == 5
