"""Anti-entropy and catch-up between real Syncers over real SQLite stores.

Each node of a test is a :class:`~qudag_node.store.Store` in ``tmp_path`` holding
certified vertices of one shared DAG of :data:`tests.core.support.C`, and a
:class:`~qudag_node.sync.Syncer` on it. Syncers are linked through their ``send``
callables: every message goes into one queue, and :meth:`Net.settle` delivers the
real bytes, oldest first, to the addressed Syncer's ``handle`` (sync messages) or
to the addressed node's engine inbox (everything else, kept for the test to read).
The Syncers share one fake monotonic clock, :attr:`Net.now`, which only the test moves.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from qudag_node.core.certificate import Certificate
from qudag_node.core.errors import Reason
from qudag_node.core.events import Fact, VertexCertified, VertexStored
from qudag_node.core.messages import (
    CertifiedMessage,
    FetchMessage,
    MessageType,
    decode_message,
)
from qudag_node.core.sync import MAX_SUMMARY_ROUNDS, ROUNDS_PER_REQUEST
from qudag_node.core.syncwire import (
    LEAF_SPAN,
    MAX_BUCKETS,
    MAX_ROUND,
    Ids,
    RoundsDone,
    RoundsRequest,
    Status,
    Summary,
    SyncMessage,
    SyncType,
    bucket_span,
    decode_sync,
    encode_sync,
)
from qudag_node.core.types import PeerId, VertexId
from qudag_node.core.vertex import Vertex
from qudag_node.core.wire import Owner, owner_of
from qudag_node.metrics import Metrics
from qudag_node.store import Store
from qudag_node.sync import Syncer
from tests.core.support import PARAMS, C

#: Seconds any awaited condition may take before the test fails.
DEADLINE = 10.0
#: Rounds of the shared DAG; tests use a prefix of it.
DAG_ROUNDS = 310
#: Rounds of the nodes that compare a wide window.
WIDE = 300
#: The sync interval: a test moves the clock by it to make the next round due.
INTERVAL = 3600.0
LOG_HASH = b"\x00" * 32
A, B = PeerId("a"), PeerId("b")


# ------------------------------------------------------------------ the DAG


@dataclass(frozen=True)
class Certified:
    """A vertex of the shared DAG and its certificate (by validators 0, 1 and 2)."""

    vertex: Vertex
    certificate: Certificate


@functools.cache
def dag() -> tuple[tuple[Certified, ...], ...]:
    """Rounds 1..DAG_ROUNDS, four vertices each, every vertex citing the previous round."""
    rounds: list[tuple[Certified, ...]] = []
    parents: list[VertexId] = []
    for number in range(1, DAG_ROUNDS + 1):
        vertices = [
            C.vertex(i, number, parents, txs=[f"r{number}-v{i}".encode()]) for i in range(4)
        ]
        rounds.append(tuple(Certified(v, C.certificate(v)) for v in vertices))
        parents = [v.id for v in vertices]
    return tuple(rounds)


def vertex_at(round_: int, author: int) -> Vertex:
    """The shared DAG's vertex by validator ``author`` in ``round_``."""
    return dag()[round_ - 1][author].vertex


def certified_events(items: Iterable[Certified]) -> list[Fact]:
    """The engine events of certified vertices joining a DAG: stored, then certified."""
    events: list[Fact] = []
    for item in items:
        v = item.vertex
        events += [VertexStored(v, own=False), VertexCertified(v.id, v.round, item.certificate)]
    return events


async def open_store(path: Path, rounds: int, without: Iterable[tuple[int, int]] = ()) -> Store:
    """A store holding rounds 1..``rounds`` of the DAG, except (round, author) ``without``."""
    await asyncio.to_thread(path.mkdir)
    store = await Store.open(path, C.genesis)
    skip = set(without)
    items = [
        item
        for r in range(1, rounds + 1)
        for author, item in enumerate(dag()[r - 1])
        if (r, author) not in skip
    ]
    await store.persist(certified_events(items))
    return store


# ------------------------------------------------------------- the network


def status(highest: int, committed: int = 0, floor: int = 0) -> Status:
    """A position: rounds held up to ``highest``, an empty log."""
    return Status(highest, committed, floor, 0, LOG_HASH)


@dataclass(frozen=True)
class Sent:
    """One message on its way: who sent it, to whom, and its bytes."""

    source: PeerId
    target: PeerId
    data: bytes

    @property
    def kind(self) -> MessageType | SyncType:
        """The message's type."""
        if owner_of(self.data) is Owner.SYNC:
            return SyncType(self.data[0])
        return MessageType(self.data[0])


@dataclass
class Node:
    """A store, the Syncer on it, its metrics, what its engine would receive, and the
    changes of catching up it reported."""

    name: PeerId
    store: Store
    syncer: Syncer
    metrics: Metrics
    position: Status
    engine_inbox: list[Sent] = field(default_factory=list)
    changes: list[bool] = field(default_factory=list)

    def sample(self, name: str, **labels: str) -> float:
        """A metric sample's value; 0 when the series was never touched."""
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


@dataclass
class Net:
    """Syncers linked through one message queue."""

    nodes: dict[PeerId, Node] = field(default_factory=dict)
    queue: deque[Sent] = field(default_factory=deque)
    delivered: list[Sent] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    now: float = 0.0

    def add(
        self,
        name: PeerId,
        store: Store,
        position: Status,
        needs_peers: bool = True,
        trust: int = 1,
    ) -> Node:
        """A node named ``name`` standing at ``position`` (change it through the node),
        catching up with its ``trust``-th most advanced peer."""
        metrics = Metrics("test")

        def send(peer: PeerId, data: bytes) -> bool:
            self.queue.append(Sent(name, peer, data))
            self.changed.set()
            return True

        def on_catching_up(catching_up: bool) -> None:
            node.changes.append(catching_up)
            self.changed.set()

        syncer = Syncer(
            store,
            send,
            lambda: node.position,
            metrics,
            PARAMS,
            interval=INTERVAL,
            needs_peers=needs_peers,
            on_catching_up=on_catching_up,
            trust=trust,
            clock=lambda: self.now,
        )
        node = Node(name, store, syncer, metrics, position)
        self.nodes[name] = node
        return node

    def link(self, a: Node, b: Node) -> None:
        """Bring up the link between ``a`` and ``b`` (each sends its STATUS)."""
        a.syncer.link_up(b.name)
        b.syncer.link_up(a.name)

    async def sync_round(self, node: Node) -> None:
        """Move the clock by an interval and tick ``node``: its STATUS and SUMMARY are due."""
        self.now += INTERVAL
        await node.syncer.tick()

    async def settle(self, limit: int = 10_000) -> list[Sent]:
        """Deliver queued messages, and those they cause, until none is left."""
        start = len(self.delivered)
        while self.queue:
            assert len(self.delivered) - start < limit, "the exchange does not end"
            message = self.queue.popleft()
            self.delivered.append(message)
            target = self.nodes[message.target]
            if owner_of(message.data) is Owner.SYNC:
                await target.syncer.handle(message.source, message.data)
            else:
                target.engine_inbox.append(message)
        return self.delivered[start:]

    async def until(self, condition: Callable[[], bool]) -> None:
        """Wait, up to :data:`DEADLINE`, until ``condition`` holds after some change."""
        async with asyncio.timeout(DEADLINE):
            while not condition():
                self.changed.clear()
                await self.changed.wait()


def sync_messages(sent: Iterable[Sent], source: PeerId, kind: SyncType) -> list[SyncMessage]:
    """The decoded sync messages of ``kind`` that ``source`` sent."""
    return [decode_sync(m.data) for m in sent if m.source == source and m.kind is kind]


def kinds(sent: Iterable[Sent], source: PeerId) -> Counter[MessageType | SyncType]:
    """How many messages of each type ``source`` sent."""
    return Counter(m.kind for m in sent if m.source == source)


def fetched_ids(sent: Iterable[Sent], source: PeerId) -> list[VertexId]:
    """Every id ``source`` asked for in FETCH messages."""
    out: list[VertexId] = []
    for m in sent:
        if m.source == source and m.kind is MessageType.FETCH:
            message = decode_message(m.data, PARAMS)
            assert isinstance(message, FetchMessage)
            out += message.ids
    return out


def certified_vertices(sent: Iterable[Sent], source: PeerId) -> list[Vertex]:
    """The vertices of the CERTIFIED messages ``source`` sent, in order."""
    out: list[Vertex] = []
    for m in sent:
        if m.source == source and m.kind is MessageType.CERTIFIED:
            message = decode_message(m.data, PARAMS)
            assert isinstance(message, CertifiedMessage)
            out.append(message.vertex)
    return out


@pytest.fixture
async def net() -> AsyncIterator[Net]:
    """A network whose stores are closed at the end of the test."""
    network = Net()
    yield network
    for node in network.nodes.values():
        await node.store.close()


async def linked_pair(
    net: Net,
    tmp_path: Path,
    rounds: int,
    a_lacks: Sequence[tuple[int, int]] = (),
    b_lacks: Sequence[tuple[int, int]] = (),
) -> tuple[Node, Node]:
    """Nodes A and B holding ``rounds`` rounds but for what each lacks, linked and
    knowing each other's position."""
    a = net.add(A, await open_store(tmp_path / "a", rounds, a_lacks), status(rounds))
    b = net.add(B, await open_store(tmp_path / "b", rounds, b_lacks), status(rounds))
    net.link(a, b)
    hello = await net.settle()
    assert [m.kind for m in hello] == [SyncType.STATUS, SyncType.STATUS]
    assert a.syncer.statuses() == {B: b.position}
    assert b.syncer.statuses() == {A: a.position}
    return a, b


# ------------------------------------------------------------- anti-entropy


async def test_equal_dags_cost_one_small_summary_and_no_answer(net: Net, tmp_path: Path) -> None:
    a, b = await linked_pair(net, tmp_path, 12)
    await net.sync_round(a)
    sent = await net.settle()
    assert [(m.source, m.target, m.kind) for m in sent] == [
        (A, B, SyncType.STATUS),
        (A, B, SyncType.SUMMARY),
        (A, B, SyncType.HOLDINGS),
    ]
    assert len(sent[1].data) < 10 * 1024
    summary = decode_sync(sent[1].data)
    assert isinstance(summary, Summary)
    # The rounds both hold, but for the newest (still filling): 1..11, all certified.
    assert summary.low == 1
    assert summary.high == 11
    assert sum(summary.counts) == 11 * 4
    assert b.sample("qudag_sync_rounds_total", result="in_sync") == 1
    assert b.sample("qudag_sync_rounds_total", result="differences") == 0
    assert b.engine_inbox == []


async def test_a_sync_round_sends_one_summary_to_each_peer(net: Net, tmp_path: Path) -> None:
    a, b = await linked_pair(net, tmp_path, 12)
    c = net.add(PeerId("c"), await open_store(tmp_path / "c", 12), status(12))
    net.link(a, c)
    await net.settle()
    await net.sync_round(a)
    sent = await net.settle()
    assert sorted((m.target, m.kind) for m in sent) == [
        (B, SyncType.STATUS),
        (B, SyncType.SUMMARY),
        (B, SyncType.HOLDINGS),
        (c.name, SyncType.STATUS),
        (c.name, SyncType.SUMMARY),
        (c.name, SyncType.HOLDINGS),
    ]
    for node in (b, c):
        assert node.sample("qudag_sync_rounds_total", result="in_sync") == 1


async def test_differences_are_fetched_and_pushed(net: Net, tmp_path: Path) -> None:
    b_lacks = [(2, 1), (5, 3), (9, 0)]
    a_lacks = [(7, 2)]
    a, b = await linked_pair(net, tmp_path, 12, a_lacks=a_lacks, b_lacks=b_lacks)
    await net.sync_round(a)
    sent = await net.settle()
    # B compares A's summary (buckets of one round) and lists its ids of the four
    # differing rounds; A fetches what it lacks and pushes what B lacks.
    assert b.sample("qudag_sync_rounds_total", result="differences") == 1
    listed = sync_messages(sent, B, SyncType.IDS)
    assert sorted((m.low, m.high) for m in listed if isinstance(m, Ids)) == [
        (2, 2),
        (5, 5),
        (7, 7),
        (9, 9),
    ]
    assert fetched_ids(sent, A) == [vertex_at(7, 2).id]
    pushed = certified_vertices(sent, A)
    assert sorted(v.id for v in pushed) == sorted(vertex_at(r, i).id for r, i in b_lacks)
    assert a.sample("qudag_sync_vertices_total", direction="fetched") == 1
    assert a.sample("qudag_sync_vertices_total", direction="pushed") == 3
    assert kinds(sent, B)[MessageType.FETCH] == 0
    assert kinds(sent, B)[MessageType.CERTIFIED] == 0


async def test_a_repaired_pair_is_in_sync(net: Net, tmp_path: Path) -> None:
    a, b = await linked_pair(net, tmp_path, 12, a_lacks=[(3, 0)], b_lacks=[(10, 3)])
    await net.sync_round(a)
    await net.settle()
    # What each engine would do with what arrived: B stores the pushed vertex and
    # answers the FETCH from its store; A stores the answer.
    for message in b.engine_inbox:
        if message.kind is MessageType.CERTIFIED:
            await store_certified(b.store, message.data)
        else:
            fetch = decode_message(message.data, PARAMS)
            assert isinstance(fetch, FetchMessage)
            async for answer in b.store.certified_messages(fetch.ids):
                await store_certified(a.store, answer)
    await net.sync_round(a)
    sent = await net.settle()
    assert [m.kind for m in sent] == [SyncType.STATUS, SyncType.SUMMARY, SyncType.HOLDINGS]
    assert b.sample("qudag_sync_rounds_total", result="in_sync") == 1


async def store_certified(store: Store, data: bytes) -> None:
    """Persist a CERTIFIED message the way the engine's events would."""
    message = decode_message(data, PARAMS)
    assert isinstance(message, CertifiedMessage)
    await store.persist(certified_events([Certified(message.vertex, message.certificate)]))


async def test_a_wide_window_is_narrowed_down_to_one_leaf(net: Net, tmp_path: Path) -> None:
    missing = (150, 2)
    a, b = await linked_pair(net, tmp_path, WIDE, b_lacks=[missing])
    await net.sync_round(a)
    sent = await net.settle()
    summaries = [m for m in sent if m.kind is SyncType.SUMMARY]
    assert [m.source for m in summaries] == [A, B]  # the window, then one finer bucket
    top, finer = (decode_sync(m.data) for m in summaries)
    assert isinstance(top, Summary)
    assert isinstance(finer, Summary)
    assert len(top.counts) <= MAX_BUCKETS
    assert finer.span < top.span
    assert top.low <= finer.low <= 150 <= finer.high <= top.high
    (leaf,) = sync_messages(sent, A, SyncType.IDS)
    assert isinstance(leaf, Ids)
    assert leaf.low <= 150 <= leaf.high
    assert leaf.high - leaf.low + 1 <= LEAF_SPAN
    assert len(leaf.ids) == 4 * (leaf.high - leaf.low + 1)  # the only ids that travel
    assert fetched_ids(sent, B) == [vertex_at(*missing).id]
    assert certified_vertices(sent, A) == []
    assert b.sample("qudag_sync_vertices_total", direction="fetched") == 1
    assert kinds(sent, A) + kinds(sent, B) == Counter(
        {
            SyncType.STATUS: 1,
            SyncType.SUMMARY: 2,
            SyncType.HOLDINGS: 1,
            SyncType.IDS: 1,
            MessageType.FETCH: 1,
        }
    )
    assert sum(len(m.data) for m in sent) < 10 * 1024


async def test_rounds_past_the_window_do_not_count_as_differences(net: Net, tmp_path: Path) -> None:
    # B is two rounds ahead of A, as happens all the time in a live network; they
    # agree on every round up to A's newest.
    a = net.add(A, await open_store(tmp_path / "a", WIDE), status(WIDE))
    b = net.add(B, await open_store(tmp_path / "b", WIDE + 2), status(WIDE + 2))
    net.link(a, b)
    await net.settle()
    await net.sync_round(a)
    sent = await net.settle()
    (window,) = sync_messages(sent, A, SyncType.SUMMARY)
    assert isinstance(window, Summary)
    assert (window.low, window.high) == (1, WIDE - 1)  # below the lower of the two newest
    assert b.sample("qudag_sync_rounds_total", result="in_sync") == 1
    assert b.sample("qudag_sync_rounds_total", result="differences") == 0
    assert [m.kind for m in sent if m.source == B] == []


# ---------------------------------------------------------------- catch-up


async def test_a_node_far_behind_catches_up_in_whole_rounds(net: Net, tmp_path: Path) -> None:
    ahead = net.add(PeerId("ahead"), await open_store(tmp_path / "ahead", 112), status(112))
    behind = net.add(
        PeerId("behind"),
        await open_store(tmp_path / "behind", 12),
        status(12, committed=8),
        needs_peers=False,
    )
    net.link(behind, ahead)
    await net.settle()
    assert behind.syncer.gap() == 100

    async with run_syncer(behind.syncer):
        await net.until(lambda: behind.changes == [True])
        assert behind.syncer.catching_up
        assert behind.syncer.gap() == 100
        assert behind.syncer.readiness() == (False, "catching up: 100 rounds behind")
        assert behind.sample("qudag_catchup_gap_rounds") == 100

        await net.until(lambda: len(requests(net, behind)) == 1)
        # From the committed round on, one request's worth of rounds.
        assert requests(net, behind) == [RoundsRequest(9, 8 + ROUNDS_PER_REQUEST)]
        first = await net.settle()
        await check_rounds_answer(first, ahead, 9, 8 + ROUNDS_PER_REQUEST)
        assert len(behind.engine_inbox) == 4 * ROUNDS_PER_REQUEST

        # The answer is complete: the next rounds are asked for.
        await net.until(lambda: len(requests(net, behind)) == 2)
        assert requests(net, behind)[1] == RoundsRequest(9 + ROUNDS_PER_REQUEST, 112)

        # The engine took everything in: the node is in step again.
        behind.position = status(112, committed=110)
        await behind.syncer.handle(ahead.name, encode_sync(ahead.position))
        await net.until(lambda: behind.changes == [True, False])
        assert not behind.syncer.catching_up
        assert behind.syncer.gap() == 0
        assert behind.syncer.readiness() == (True, "in step with peers (0 rounds behind)")


def requests(net: Net, node: Node) -> list[SyncMessage]:
    """Every ROUNDS request ``node`` has sent, delivered or still queued."""
    return sync_messages([*net.delivered, *net.queue], node.name, SyncType.ROUNDS)


async def check_rounds_answer(sent: Sequence[Sent], server: Node, low: int, high: int) -> None:
    """``server`` answered a ROUNDS request for ``low..high``: every certified vertex of
    those rounds, in round order, then ROUNDS_DONE."""
    answer = [m for m in sent if m.source == server.name]
    done_at = next(k for k, m in enumerate(answer) if m.kind is SyncType.ROUNDS_DONE)
    assert decode_sync(answer[done_at].data) == RoundsDone(low, high)
    vertices = certified_vertices(answer[:done_at], server.name)
    assert len(vertices) == done_at  # nothing else came before ROUNDS_DONE
    rounds = [v.round for v in vertices]
    assert rounds == sorted(rounds)
    expected = await server.store.certified_ids(low, high)
    stored = zip(expected.rounds, expected.between(low, high), strict=True)
    assert sorted((v.round, v.id) for v in vertices) == sorted(stored)


@contextlib.asynccontextmanager
async def run_syncer(syncer: Syncer) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``syncer`` in a task for the duration of the block, then cancel it."""
    task = asyncio.create_task(syncer.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_one_peer_claiming_a_far_round_is_not_chased(net: Net, tmp_path: Path) -> None:
    # With trust 2 (one faulty validator), the node catches up with the second most
    # advanced peer: the liar's 10,000 alone does not count.
    us = net.add(
        PeerId("us"),
        await open_store(tmp_path / "us", 40),
        status(40, committed=38),
        needs_peers=False,
        trust=2,
    )
    liar = net.add(PeerId("liar"), await open_store(tmp_path / "liar", 50), status(10_000))
    second = net.add(PeerId("second"), await open_store(tmp_path / "second", 50), status(50))
    third = net.add(PeerId("third"), await open_store(tmp_path / "third", 48), status(48))
    for peer in (liar, second, third):
        net.link(us, peer)
    await net.settle()
    assert us.syncer.gap() == 10

    async with run_syncer(us.syncer):
        await net.until(lambda: len(requests(net, us)) == 1)
        assert us.changes == [True]
        assert us.syncer.readiness() == (False, "catching up: 10 rounds behind")
        (request,) = [m for m in net.queue if m.kind is SyncType.ROUNDS]
        assert request.target == second.name
        assert decode_sync(request.data) == RoundsRequest(39, 50)
        answer = await net.settle()
        await check_rounds_answer(answer, second, 39, 50)
        assert len(us.engine_inbox) == 4 * 12

        # The engine took the rounds in: in step with the second peer, whatever the liar says.
        us.position = status(50, committed=48)
        await us.syncer.handle(second.name, encode_sync(second.position))
        await net.until(lambda: us.changes == [True, False])
        assert us.syncer.gap() == 0
    sent = [*net.delivered, *net.queue]
    assert [m.target for m in sent if m.kind is SyncType.ROUNDS] == [second.name]


async def test_the_trusted_rank_moves_down_as_peers_leave(net: Net, tmp_path: Path) -> None:
    us = net.add(PeerId("us"), await open_store(tmp_path / "us", 1), status(40), trust=2)
    positions = {PeerId("liar"): 10_000, PeerId("second"): 50, PeerId("third"): 48}
    for name, highest in positions.items():
        us.syncer.link_up(name)
        await us.syncer.handle(name, encode_sync(status(highest)))
    assert us.syncer.gap() == 10
    us.syncer.link_down(PeerId("second"))
    assert us.syncer.gap() == 8  # the second most advanced is now the third


async def test_with_fewer_peers_than_trust_the_least_advanced_is_followed(
    net: Net, tmp_path: Path
) -> None:
    us = net.add(PeerId("us"), await open_store(tmp_path / "us", 1), status(40), trust=3)
    for name, highest in {PeerId("far"): 10_000, PeerId("near"): 50}.items():
        us.syncer.link_up(name)
        await us.syncer.handle(name, encode_sync(status(highest)))
    assert us.syncer.gap() == 10


async def test_trust_one_follows_the_most_advanced_peer(net: Net, tmp_path: Path) -> None:
    us = net.add(PeerId("us"), await open_store(tmp_path / "us", 1), status(40))
    for name, highest in {PeerId("far"): 10_000, PeerId("near"): 50}.items():
        us.syncer.link_up(name)
        await us.syncer.handle(name, encode_sync(status(highest)))
    assert us.syncer.gap() == 9_960


async def test_a_rounds_request_is_answered_from_the_store(net: Net, tmp_path: Path) -> None:
    server = net.add(PeerId("server"), await open_store(tmp_path / "s", 40), status(40))
    client = net.add(PeerId("client"), await open_store(tmp_path / "c", 1), status(1))
    net.link(server, client)
    await net.settle()
    await server.syncer.handle(client.name, encode_sync(RoundsRequest(30, 45)))
    sent = await net.settle()
    # Rounds 41..45 are empty here: the answer still covers them.
    await check_rounds_answer(sent, server, 30, 45)
    assert len(client.engine_inbox) == 4 * 11


# --------------------------------------------------------------- readiness


async def test_a_network_node_without_peer_status_is_not_ready(net: Net, tmp_path: Path) -> None:
    node = net.add(A, await open_store(tmp_path / "a", 1), status(1))
    assert node.syncer.catching_up
    assert node.syncer.gap() is None
    assert node.syncer.readiness() == (False, "no peer has told us its position yet")


async def test_a_node_that_is_the_whole_network_is_ready(net: Net, tmp_path: Path) -> None:
    node = net.add(A, await open_store(tmp_path / "a", 1), status(1), needs_peers=False)
    assert not node.syncer.catching_up
    assert node.syncer.gap() is None
    assert node.syncer.readiness() == (True, "no peers needed: this node is the whole network")


async def test_a_peer_status_makes_a_node_in_step_ready(net: Net, tmp_path: Path) -> None:
    a, b = await linked_pair(net, tmp_path, 12)
    b.position = status(14)
    await a.syncer.handle(B, encode_sync(b.position))
    assert a.syncer.gap() == 2
    async with run_syncer(a.syncer):
        await net.until(lambda: a.changes == [False])
    assert a.syncer.readiness() == (True, "in step with peers (2 rounds behind)")


# ---------------------------------------------------------- malformed input


def raw(kind: MessageType | SyncType, *fields: bytes) -> bytes:
    """A message of ``kind`` with hand-laid fields."""
    return bytes((kind,)) + b"".join(fields)


def u64(n: int) -> bytes:
    """A big-endian u64."""
    return n.to_bytes(8, "big")


def u32(n: int) -> bytes:
    """A big-endian u32."""
    return n.to_bytes(4, "big")


def u16(n: int) -> bytes:
    """A big-endian u16."""
    return n.to_bytes(2, "big")


def summary_of(low: int, high: int) -> Summary:
    """An empty SUMMARY of rounds ``low..high`` in at most eight buckets."""
    span = bucket_span(low, high, 8)
    count = -(-(high - low + 1) // span)
    return Summary(low, high, span, (0,) * count, (0,) * count)


STATUS_BYTES = encode_sync(status(5))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", Reason.TRUNCATED),
        (STATUS_BYTES[:-1], Reason.TRUNCATED),
        (STATUS_BYTES + b"\x00", Reason.TRAILING_BYTES),
        (raw(SyncType.SUMMARY, u64(1), u64(8), u32(4), u16(0)), Reason.BAD_SYNC),
        (raw(SyncType.SUMMARY, u64(1), u32(4), u16(0)), Reason.TRUNCATED),
        (encode_sync(Ids(9, 8, ())), Reason.BAD_SYNC),
        (raw(SyncType.ROUNDS, u64(1), u64(5000)), Reason.BAD_SYNC),
        (encode_sync(summary_of(1, MAX_SUMMARY_ROUNDS + 1)), Reason.BAD_SYNC),
        (encode_sync(Ids(1, MAX_SUMMARY_ROUNDS + 1, ())), Reason.BAD_SYNC),
        (raw(MessageType.CERTIFIED), Reason.UNKNOWN_MESSAGE),
        (bytes((SyncType.ROUNDS_DONE + 1,)), Reason.UNKNOWN_MESSAGE),
    ],
    ids=[
        "empty",
        "status-truncated",
        "status-trailing",
        "summary-no-buckets",
        "summary-without-high",
        "ids-high-below-low",
        "rounds-too-wide",
        "summary-too-many-rounds",
        "ids-too-many-rounds",
        "not-a-sync-type",
        "unknown-type",
    ],
)
async def test_malformed_sync_bytes_are_counted_not_raised(
    net: Net, tmp_path: Path, data: bytes, reason: Reason
) -> None:
    a, _ = await linked_pair(net, tmp_path, 4)
    await a.syncer.handle(B, data)
    assert a.sample("qudag_messages_rejected_total", reason=reason.value) == 1
    assert net.queue == deque()
    assert a.syncer.statuses() == {B: status(4)}


async def test_a_summary_of_the_most_rounds_allowed_is_answered(net: Net, tmp_path: Path) -> None:
    a, _ = await linked_pair(net, tmp_path, 4)
    widest = summary_of(1, MAX_SUMMARY_ROUNDS)
    assert widest.high - widest.low == MAX_SUMMARY_ROUNDS - 1
    assert len(widest.counts) == 8
    await a.syncer.handle(B, encode_sync(widest))
    assert a.sample("qudag_sync_rounds_total", result="differences") == 1
    assert [m.kind for m in net.queue] == [SyncType.SUMMARY]  # bucket 0 holds rounds 1..4


@pytest.mark.parametrize(
    "message",
    [
        RoundsRequest(2**63, 2**63),
        Ids(2**63, 2**63, ()),
        Summary(2**63, 2**63, 1, (0,), (0,)),
        Status(2**63, 0, 0, 0, LOG_HASH),
        RoundsDone(0, 2**63),
    ],
    ids=["rounds", "ids", "summary", "status", "rounds-done"],
)
async def test_rounds_beyond_the_stores_range_are_refused_not_raised(
    net: Net, tmp_path: Path, message: SyncMessage
) -> None:
    a, _ = await linked_pair(net, tmp_path, 4)
    await a.syncer.handle(B, encode_sync(message))
    assert a.sample("qudag_messages_rejected_total", reason=Reason.BAD_SYNC.value) == 1
    assert sum(a.sample("qudag_messages_rejected_total", reason=r.value) for r in Reason) == 1
    assert net.queue == deque()
    assert a.syncer.statuses() == {B: status(4)}


@pytest.mark.parametrize(
    "message",
    [
        RoundsRequest(MAX_ROUND, MAX_ROUND),
        Ids(MAX_ROUND, MAX_ROUND, ()),
        Summary(MAX_ROUND, MAX_ROUND, 1, (0,), (0,)),
    ],
    ids=["rounds", "ids", "summary"],
)
async def test_rounds_up_to_max_round_reach_the_store(
    net: Net, tmp_path: Path, message: SyncMessage
) -> None:
    a, _ = await linked_pair(net, tmp_path, 4)
    await a.syncer.handle(B, encode_sync(message))
    assert sum(a.sample("qudag_messages_rejected_total", reason=r.value) for r in Reason) == 0
    # Nothing is held there: an empty answer, an empty bucket, an empty list.
    if isinstance(message, RoundsRequest):
        assert [decode_sync(m.data) for m in net.queue] == [RoundsDone(MAX_ROUND, MAX_ROUND)]
    else:
        assert net.queue == deque()
    if isinstance(message, Summary):
        assert a.sample("qudag_sync_rounds_total", result="in_sync") == 1
