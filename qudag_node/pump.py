"""The pump: takes each engine step's output through to the disk and the wire.

One step: the driver feeds the engine its inputs (clients' submissions, peers'
messages, the timer), then :meth:`Pump.step` takes the engine's output, answers the
effects that need the store at once (orphaned transactions are read back and
requeued, forwarded ones admitted; each can make more output, taken in turn), and
hands what is left to a :class:`StepSink`, the group commit: the facts to persist,
then, once they are durable, the clients to answer, the messages to send and the
peers' fetches to answer from the store (:func:`deliver`). Persist before announce,
acknowledge after commit.

The node and the seeded simulation (``tests/core/sim.py``) both run this code. It
needs only the small protocols below, so the simulation's in-memory store, which
answers without suspending, drives a step to its end synchronously.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar, assert_never

from qudag_node.core.engine import Engine
from qudag_node.core.errors import InputRejected, Reason
from qudag_node.core.events import (
    Fact,
    Notice,
    Outgoing,
    StepOutput,
    TransactionsForwarded,
    TransactionsOrphaned,
    VerticesRequested,
)
from qudag_node.core.types import Instant, PeerId, TxId, VertexId
from qudag_node.inbox import LinkDown, LinkUp, PeerInput, Received

#: Peer inputs the pump feeds the engine in one step.
PEER_INPUTS_PER_STEP = 256

R = TypeVar("R")
S_contra = TypeVar("S_contra", contravariant=True)


class PumpStore(Protocol):
    """What the pump reads from the store."""

    async def known_ids(self, ids: Sequence[TxId]) -> set[TxId]:
        """Which of ``ids`` are stored by a committed transaction."""
        ...

    async def transactions_data(self, ids: Sequence[TxId]) -> list[tuple[TxId, bytes]]:
        """Stored, not final transactions among ``ids``, with their bytes, in ``ids`` order."""
        ...

    def certified_messages(self, ids: Sequence[VertexId]) -> AsyncIterator[bytes]:
        """CERTIFIED messages for the stored, certified vertices among ``ids``."""
        ...


class Links(Protocol):
    """What the pump needs from the peer links."""

    def send(self, peer: PeerId, data: bytes) -> bool:
        """Queue ``data`` for ``peer``; False if the peer is not linked (any more)."""
        ...


class StepSink(Protocol[S_contra]):
    """What the pump needs from the group commit."""

    async def put(self, step: S_contra) -> None:
        """Queue ``step`` to be persisted, then finished (see :func:`deliver`)."""
        ...

    async def flush(self) -> None:
        """Return once every step put so far is durable and finished."""
        ...


class PeerInputs(Protocol):
    """What the links brought for the engine, in arrival order."""

    def take(self, limit: int) -> list[PeerInput]:
        """Up to ``limit`` of the oldest items."""
        ...

    def __len__(self) -> int:
        """How many items are waiting."""
        ...


@dataclass(frozen=True, slots=True)
class ForwardRefused:
    """The engine refused ``count`` transactions an observer forwarded (a full pool)."""

    peer: PeerId
    reason: Reason
    count: int


@dataclass(frozen=True, slots=True)
class PumpStep(Generic[R]):
    """What the pump hands to the sink: ``facts`` to persist, then, once durable, the
    clients' ``receipts`` to answer, ``messages`` to send, ``fetches`` to answer from
    the store, and ``notices`` and ``refused`` to report."""

    facts: tuple[Fact, ...]
    receipts: tuple[R, ...]
    messages: tuple[Outgoing, ...]
    fetches: tuple[VerticesRequested, ...]
    notices: tuple[Notice, ...]
    refused: tuple[ForwardRefused, ...]


@dataclass(slots=True)
class _Gathered(Generic[R]):
    """One step's output so far, across the engine's hand-overs."""

    receipts: list[R]
    facts: list[Fact] = field(default_factory=list)
    messages: list[Outgoing] = field(default_factory=list)
    fetches: list[VerticesRequested] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)
    refused: list[ForwardRefused] = field(default_factory=list)

    def add(self, out: StepOutput) -> None:
        self.facts += out.facts
        self.messages += out.messages
        self.notices += out.notices

    def take(self) -> PumpStep[R]:
        """The step gathered so far; gathering starts again, empty."""
        step = PumpStep(
            tuple(self.facts),
            tuple(self.receipts),
            tuple(self.messages),
            tuple(self.fetches),
            tuple(self.notices),
            tuple(self.refused),
        )
        self.receipts, self.facts, self.messages = [], [], []
        self.fetches, self.notices, self.refused = [], [], []
        return step


class Pump(Generic[R]):
    """Drives one engine's output; ``R`` is what the driver answers its clients with.

    :attr:`engine` may be replaced between steps (a restart from the store)."""

    def __init__(self, engine: Engine, store: PumpStore, sink: StepSink[PumpStep[R]]) -> None:
        self.engine = engine
        self._store = store
        self._sink = sink

    async def step(self, now: Instant, receipts: Sequence[R] = ()) -> None:
        """Take everything the engine produced since the last step through to the
        sink, with the ``receipts`` of the clients whose submissions it admitted.

        Effects that need the store are answered now; orphaned transactions are read
        back, so what was gathered before them is made durable first (the sink is
        flushed). Store errors propagate.
        """
        gathered = _Gathered(list(receipts))
        while out := self.engine.take_output():
            gathered.add(out)
            for effect in out.effects:
                match effect:
                    case VerticesRequested():
                        gathered.fetches.append(effect)
                    case TransactionsOrphaned(ids):
                        await self._sink.put(gathered.take())
                        await self._sink.flush()
                        await self._requeue(ids, now)
                    case TransactionsForwarded(peer, ids, transactions):
                        refused = await self._admit_forwarded(ids, transactions, now)
                        if refused is not None:
                            gathered.refused.append(ForwardRefused(peer, *refused))
                    case _:
                        assert_never(effect)
        await self._sink.put(gathered.take())

    async def _requeue(self, ids: Sequence[TxId], now: Instant) -> None:
        """Our vertices that can no longer be ordered: propose their transactions again
        (those the store holds and that are not final)."""
        pairs = await self._store.transactions_data(ids)
        self.engine.requeue_transactions([i for i, _ in pairs], [t for _, t in pairs], now)

    async def _admit_forwarded(
        self, ids: Sequence[TxId], transactions: Sequence[bytes], now: Instant
    ) -> tuple[Reason, int] | None:
        """Admit forwarded transactions the store does not hold, as for a client;
        the reason and count if the engine refused them."""
        known = await self._store.known_ids(ids)
        fresh = [(i, t) for i, t in zip(ids, transactions, strict=True) if i not in known]
        try:
            self.engine.submit_transactions([i for i, _ in fresh], [t for _, t in fresh], now)
        except InputRejected as e:
            return e.reason, len(fresh)
        return None


async def deliver(step: PumpStep[R], store: PumpStore, links: Links) -> None:
    """Once ``step`` is durable: send its messages, then answer its fetches from the
    store (a fetch stops at the first message its peer's link refuses)."""
    for peer, data in step.messages:
        links.send(peer, data)
    for fetch in step.fetches:
        async for data in store.certified_messages(fetch.ids):
            if not links.send(fetch.peer, data):
                break  # the peer is gone, or was dropped for reading too slowly


def feed_peer_inputs(engine: Engine, inputs: PeerInputs, now: Instant) -> None:
    """Feed the engine up to :data:`PEER_INPUTS_PER_STEP` of what the links brought;
    messages that arrived in a row go to the engine as one batch."""
    received: list[tuple[PeerId, bytes]] = []
    for item in inputs.take(PEER_INPUTS_PER_STEP):
        match item:
            case Received(peer, data):
                received.append((peer, data))
                continue
            case LinkUp(peer, key):
                engine.receive_messages(received, now)
                engine.peer_connected(peer, key)
            case LinkDown(peer):
                engine.receive_messages(received, now)
                engine.peer_disconnected(peer)
            case _:
                assert_never(item)
        received.clear()
    engine.receive_messages(received, now)
