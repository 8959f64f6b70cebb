"""Transactions on their way to the log: pending, forwarded, in flight.

*Pending* transactions wait for one of our vertices (a validator) or to be forwarded
(an observer). *Forwarded* ones were sent to the validators and are sent again each
retry interval until a certified vertex carries them. *In flight* ones are carried by
a vertex that is not ordered yet; the first carrier is remembered for the API.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from qudag_node.core.types import TxId, VertexId


class Pool:
    """The transactions this node holds that are not final yet."""

    def __init__(self) -> None:
        self._pending: OrderedDict[TxId, bytes] = OrderedDict()
        self._forwarded: OrderedDict[TxId, tuple[bytes, float]] = OrderedDict()  # id -> sent at
        self._in_flight: dict[TxId, VertexId] = {}  # id -> first carrier

    def __contains__(self, tx: object) -> bool:
        return tx in self._pending or tx in self._in_flight or tx in self._forwarded

    def holds(self, ids: Sequence[TxId]) -> list[bool]:
        """For each id: held here, as ``id in pool`` would say (one loop for all)."""
        pending, in_flight, forwarded = self._pending, self._in_flight, self._forwarded
        return [i in pending or i in in_flight or i in forwarded for i in ids]

    @property
    def pending(self) -> int:
        """Transactions waiting for a vertex or to be forwarded."""
        return len(self._pending)

    @property
    def waiting(self) -> int:
        """Transactions not yet carried by a vertex: pending and forwarded."""
        return len(self._pending) + len(self._forwarded)

    @property
    def in_flight(self) -> int:
        """Transactions carried by a vertex that is not ordered yet."""
        return len(self._in_flight)

    def add(self, transactions: dict[TxId, bytes]) -> None:
        """New transactions, at the back of the queue."""
        self._pending.update(transactions)

    def requeue(self, ids: Sequence[TxId], transactions: Sequence[bytes]) -> None:
        """Transactions taken back (an abandoned or orphaned vertex), at the front, in order."""
        for i, tx in zip(reversed(ids), reversed(transactions), strict=True):
            if i not in self:
                self._pending[i] = tx
                self._pending.move_to_end(i, last=False)

    def carrier(self, tx: TxId) -> VertexId | None:
        """The first vertex carrying ``tx`` while it is in flight."""
        return self._in_flight.get(tx)

    def carry(self, ids: Sequence[TxId], vertex: VertexId) -> None:
        """``vertex`` carries ``ids``: they are in flight, not pending any more."""
        for i in ids:
            self._in_flight.setdefault(i, vertex)
            self._pending.pop(i, None)
            self._forwarded.pop(i, None)

    def release(self, ids: Sequence[TxId]) -> None:
        """``ids`` are final, or their carrier was dropped: no longer in flight."""
        for i in ids:
            self._in_flight.pop(i, None)

    def take(self, max_count: int, max_bytes: int) -> tuple[list[TxId], list[bytes]]:
        """The oldest pending transactions that fit one vertex."""
        ids: list[TxId] = []
        txs: list[bytes] = []
        size = 0
        while self._pending and len(ids) < max_count:
            i, tx = self._pending.popitem(last=False)
            if size + len(tx) > max_bytes:
                self._pending[i] = tx  # back in front: it goes into the next vertex
                self._pending.move_to_end(i, last=False)
                break
            ids.append(i)
            txs.append(tx)
            size += len(tx)
        return ids, txs

    def forward_due(self, now: float, retry_interval: float) -> list[bytes]:
        """Pending transactions, and forwarded ones unanswered for ``retry_interval``, to
        send to the validators now; they count as forwarded from ``now`` on."""
        due = [(i, tx) for i, (tx, at) in self._forwarded.items() if at + retry_interval <= now]
        due += self._pending.items()
        self._pending.clear()
        for i, tx in due:
            self._forwarded[i] = (tx, now)
            self._forwarded.move_to_end(i)
        return [tx for _, tx in due]

    def next_forward(self, retry_interval: float) -> float | None:
        """When transactions are next due to be forwarded: at once (0.0) while some are
        pending, else when the oldest forwarded one is due again; None for never."""
        if self._pending:
            return 0.0
        if not self._forwarded:
            return None
        return next(iter(self._forwarded.values()))[1] + retry_interval
