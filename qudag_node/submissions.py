"""Client submissions on their way to the engine, and clients waiting for finality.

A client's batch is checked at the door (well-formed, the node not shutting down,
enough free disk, room in the pool) and queued; the pump takes the whole queue each
step and answers every submission once its step is durable (or fails it). Clients
that wait for finality are woken as the log grows; the finality clock of each admitted
transaction gives the submit-to-final latency. Times are monotonic seconds, passed in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from qudag_node.core.crypto import tx_ids
from qudag_node.core.errors import InputRejected, Reason
from qudag_node.core.params import Params
from qudag_node.core.rules import check_batch
from qudag_node.core.types import TxId
from qudag_node.metrics import Metrics
from qudag_node.ports import StorageFull, SubmitReceipt


class FinalityRecord(Protocol):
    """Where the transactions already final are read (the store)."""

    async def final_among(self, ids: Sequence[TxId]) -> set[TxId]:
        """The ids among ``ids`` that have a position in the finalized log."""
        ...


@dataclass(eq=False, slots=True)
class Submission:
    """One client batch: its ids, its bytes, and the client's answer to come."""

    ids: list[TxId]
    transactions: Sequence[bytes]
    done: asyncio.Future[SubmitReceipt]

    def answer(self, outcome: SubmitReceipt | InputRejected) -> None:
        """Give the client its receipt, or the engine's refusal (if it still waits)."""
        if self.done.done():  # its client has gone
            return
        if isinstance(outcome, InputRejected):
            self.done.set_exception(outcome)
        else:
            self.done.set_result(outcome)

    def fail(self, error: Exception) -> None:
        """The batch cannot be stored: the client gets ``error``, never a receipt."""
        if not self.done.done():
            self.done.set_exception(error)


def _new_future() -> asyncio.Future[bool]:
    return asyncio.get_running_loop().create_future()


@dataclass(eq=False)
class _FinalityWait:
    """One client waiting for a set of transactions to become final."""

    remaining: set[TxId]
    done: asyncio.Future[bool] = field(default_factory=_new_future)

    def discard(self, ids: set[TxId]) -> None:
        self.remaining -= ids
        if not self.remaining and not self.done.done():
            self.done.set_result(True)

    def release(self) -> None:
        if not self.done.done():
            self.done.set_result(False)


class Submissions:
    """The queue of client submissions the pump takes each step, and the finality
    waiters and clock.

    ``pool`` tells how many transactions the engine holds that are not final yet;
    ``disk_short`` the free space against the floor when it is below it (else None);
    ``wakeup`` wakes the pump when a submission is queued.
    """

    def __init__(
        self,
        params: Params,
        final: FinalityRecord,
        metrics: Metrics,
        *,
        pool: Callable[[], int],
        disk_short: Callable[[], str | None],
        wakeup: Callable[[], None],
    ) -> None:
        self._params = params
        self._final = final
        self._metrics = metrics
        self._pool = pool
        self._disk_short = disk_short
        self._wakeup = wakeup
        self._queue: list[Submission] = []
        self._queued_txs = 0
        self._closing = False
        self._waiters: dict[TxId, list[_FinalityWait]] = {}
        self._admitted_at: dict[TxId, float] = {}  # not final yet, in admission order

    def __bool__(self) -> bool:
        """Whether a submission waits for the pump."""
        return bool(self._queue)

    @property
    def closing(self) -> bool:
        """Whether new submissions are refused (the node is shutting down)."""
        return self._closing

    # ------------------------------------------------------------ clients

    async def submit(self, transactions: Sequence[bytes]) -> SubmitReceipt:
        """Queue a client batch for the next engine step; return once it is stored.
        Raises ``InputRejected`` or :class:`StorageFull` before queuing a batch the
        node refuses at the door, and whatever the pump answers after."""
        try:
            self._check(transactions)
        except InputRejected as e:
            self._metrics.on_submit_rejected(e.reason, len(transactions))
            raise
        sub = Submission(
            tx_ids(transactions), transactions, asyncio.get_running_loop().create_future()
        )
        self._queue.append(sub)
        self._queued_txs += len(transactions)
        self._wakeup()
        # A client that goes away cancels only its wait: the pump answers a settled
        # future no more, and the submission is stored all the same.
        return await sub.done

    def _check(self, transactions: Sequence[bytes]) -> None:
        """Refuse a batch before it is queued: bad transactions, shutdown, low disk, a
        full pool."""
        check_batch(transactions, self._params)
        if self._closing:
            raise InputRejected(Reason.POOL_FULL, "the node is shutting down")
        short = self._disk_short()
        if short is not None:
            raise StorageFull(
                f"too little free disk space to store more ({short} MiB,"
                " QUDAG_MIN_FREE_DISK_MB); writes resume once space is freed"
            )
        waiting = self._pool() + self._queued_txs
        if waiting + len(transactions) > self._params.max_pending:
            raise InputRejected(
                Reason.POOL_FULL,
                f"{waiting} transactions waiting, limit {self._params.max_pending}",
            )

    async def wait_final(self, ids: Sequence[TxId], timeout: float) -> bool:
        """True once every id is final; False after ``timeout`` seconds, or when the
        node shuts down first."""
        wait = _FinalityWait(set(ids))
        for i in wait.remaining:
            self._waiters.setdefault(i, []).append(wait)
        try:
            wait.discard(await self._final.final_among(list(wait.remaining)))
            async with asyncio.timeout(timeout):
                return await wait.done
        except TimeoutError:
            return False
        finally:
            for i in set(ids):
                waits = self._waiters.get(i)
                if waits is not None:
                    waits.remove(wait)
                    if not waits:
                        del self._waiters[i]

    def close(self) -> None:
        """Refuse new submissions from now on, and answer every finality waiter
        (not final); what is queued stays for the pump."""
        self._closing = True
        for waits in self._waiters.values():
            for wait in waits:
                wait.release()

    # ------------------------------------------------------------ the pump

    def take(self) -> list[Submission]:
        """Every queued submission, oldest first; the queue is left empty."""
        batch, self._queue, self._queued_txs = self._queue, [], 0
        return batch

    def put_back(self, batch: list[Submission]) -> None:
        """Queue ``batch`` (taken, not admitted) again, ahead of what came since."""
        self._queue = batch + self._queue
        self._queued_txs += sum(len(sub.ids) for sub in batch)

    def fail_queued(self, error: Callable[[], Exception]) -> None:
        """Every queued submission gets ``error()``, never a receipt (the node stops,
        or waits for disk space)."""
        for sub in self.take():
            sub.fail(error())

    def admitted(self, ids: Sequence[TxId], now: float) -> None:
        """Start the finality clock of newly admitted client transactions (a bounded
        record: the oldest are forgotten beyond twice the pool)."""
        for i in ids:
            self._admitted_at.setdefault(i, now)
        while len(self._admitted_at) > 2 * self._params.max_pending:
            del self._admitted_at[next(iter(self._admitted_at))]

    def finalized(self, ids: set[TxId], now: float) -> None:
        """``ids`` are final (durably): record their latencies, wake their waiters."""
        self._metrics.on_finality(
            [now - t for i in ids if (t := self._admitted_at.pop(i, None)) is not None]
        )
        for i in ids & self._waiters.keys():
            for wait in self._waiters[i]:
                wait.discard({i})
