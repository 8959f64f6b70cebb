"""The pump over a real store (a SQLite file) and a real group commit.

The links are a fake of the pump's ``Links`` port that records what is sent; the
group commit's commit can be held back, so that a test sees what leaves before and
after a step is durable.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from qudag_node.commits import GroupCommit
from qudag_node.core.crypto import tx_ids
from qudag_node.core.engine import Engine
from qudag_node.core.events import TransactionsAdmitted
from qudag_node.core.messages import (
    FetchMessage,
    ProposalMessage,
    TransactionsMessage,
    decode_message,
    encode_message,
)
from qudag_node.core.types import PeerId, VertexId
from qudag_node.pump import Pump, PumpStep, deliver
from qudag_node.store import Store
from tests.core.support import NOW, PARAMS, PEER, ROUND1, C, message, moment

#: Longest wait for something the test expects to happen.
DEADLINE = 10.0


@dataclass
class RecordingLinks:
    """The links: every message handed over, in order; every peer is linked."""

    sent: list[tuple[PeerId, bytes]] = field(default_factory=list)

    def send(self, peer: PeerId, data: bytes) -> bool:
        self.sent.append((peer, data))
        return True


@dataclass
class Pumped:
    """A pump, its store, its links, and the gate its commits wait at."""

    pump: Pump[None]
    store: Store
    links: RecordingLinks
    commits: GroupCommit[PumpStep[None]]
    gate: asyncio.Event
    committing: asyncio.Event


@asynccontextmanager
async def pumped(
    tmp_path: Path, engine: Engine, *, open_gate: bool = True
) -> AsyncIterator[Pumped]:
    """A pump for ``engine`` over a new store in ``tmp_path``; commits wait for the gate."""
    store = await Store.open(tmp_path, C.genesis)
    links = RecordingLinks()
    gate, committing = asyncio.Event(), asyncio.Event()
    if open_gate:
        gate.set()

    async def write(steps: Sequence[PumpStep[None]]) -> bool:
        return await store.write([f for step in steps for f in step.facts])

    async def commit() -> None:
        committing.set()
        await gate.wait()
        await store.commit()

    async def finish(step: PumpStep[None]) -> None:
        await deliver(step, store, links)

    def fail(steps: Sequence[PumpStep[None]]) -> None:
        raise AssertionError(f"{len(steps)} steps failed")

    commits: GroupCommit[PumpStep[None]] = GroupCommit(
        write, commit, finish, fail, max_rate=1000.0, max_burst=4, max_waiting=8
    )
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(commits.run())
            try:
                yield Pumped(Pump(engine, store, commits), store, links, commits, gate, committing)
            finally:
                gate.set()
                commits.close()
    finally:
        await store.close()


def validator(index: int, *peers: int) -> Engine:
    """Validator ``index`` of the committee, linked to validators ``peers``."""
    engine = Engine(C.genesis, PARAMS, C.signers[index])
    for i in peers:
        engine.peer_connected(PeerId(f"v{i}"), C.signers[i].node_id)
    return engine


async def test_a_proposal_leaves_only_once_its_vertex_is_durable(tmp_path: Path) -> None:
    engine = validator(0, 1, 2, 3)
    async with pumped(tmp_path, engine, open_gate=False) as p:
        [tx] = tx_ids([b"tx"])
        engine.submit_transactions([tx], [b"tx"], moment(NOW))
        await p.pump.step(moment(NOW))
        own_id = engine.carrier(tx)  # proposed at once: round 1 holds the tx
        assert own_id is not None
        async with asyncio.timeout(DEADLINE):
            await p.committing.wait()
        assert p.links.sent == []  # written, not committed: nothing may leave
        assert await p.store.vertex(own_id) is None
        p.gate.set()
        async with asyncio.timeout(DEADLINE):
            await p.commits.flush()
        proposals = [(peer, decode_message(data, PARAMS)) for peer, data in p.links.sent]
        assert [peer for peer, _ in proposals] == [PeerId(f"v{i}") for i in (1, 2, 3)]
        assert all(m == proposals[0][1] for _, m in proposals)
        own = proposals[0][1]
        assert isinstance(own, ProposalMessage)
        assert own.vertex.id == own_id
        record = await p.store.vertex(own_id)  # the read connection: committed rows
        assert record is not None
        assert record.round == 1


async def test_a_fetch_is_answered_from_the_store_once_the_step_is_durable(
    tmp_path: Path,
) -> None:
    engine = C.observer()
    async with pumped(tmp_path, engine) as p:
        for vertex in ROUND1:
            engine.receive_message(PEER, message(vertex), moment(NOW))
        await p.pump.step(moment(NOW))
        unknown = VertexId(b"\xee" * 32)
        engine.receive_message(
            PEER, encode_message(FetchMessage((ROUND1[2].id, unknown))), moment(NOW)
        )
        await p.pump.step(moment(NOW))
        async with asyncio.timeout(DEADLINE):
            await p.commits.flush()
        assert p.links.sent == [(PEER, message(ROUND1[2]))]


async def test_forwarded_transactions_the_store_holds_are_not_admitted_again(
    tmp_path: Path,
) -> None:
    engine = validator(0)
    held, new = b"held by the store", b"new"
    async with pumped(tmp_path, engine) as p:
        await p.store.persist([TransactionsAdmitted(tuple(tx_ids([held])), (held,))])
        forwarded = encode_message(TransactionsMessage((held, new)))
        engine.receive_message(PeerId("observer"), forwarded, moment(NOW))
        await p.pump.step(moment(NOW))
        async with asyncio.timeout(DEADLINE):
            await p.commits.flush()
        stats = engine.statistics()
        assert stats.pending + stats.in_flight == 1  # only the new one
        [new_id] = tx_ids([new])
        assert await p.store.transaction(new_id) is not None
