"""The engine as a one-validator network of itself, driven by a manual clock.

The node is :class:`tests.core.support.SoloNode`, which records every fact, effect and
notice with its time. A :class:`~tests.core.simstore.MemoryStore` keeps from the facts
what the store would, so that a restart from a snapshot can be checked against an engine that
never stopped. With one validator, every vertex is certified by its author's own vote
in the step that proposes it.
"""

from __future__ import annotations

from itertools import pairwise

import pytest

from qudag_node.core.certificate import Certificate
from qudag_node.core.crypto import Signer, extend_log_hash, log_hash_start, tx_id, tx_ids
from qudag_node.core.engine import Engine, Role, SubmitResult
from qudag_node.core.errors import Fault, InputRejected, Reason
from qudag_node.core.events import (
    Fact,
    LeaderCommitted,
    LogEntry,
    MessageRejected,
    TransactionsAdmitted,
    VertexCertified,
    VertexStored,
)
from qudag_node.core.messages import ProposalMessage, decode_message
from qudag_node.core.params import Params
from qudag_node.core.types import Instant, NodeId, PeerId, Seq, TxId
from qudag_node.core.vertex import Vertex
from tests.core.simstore import MemoryStore
from tests.core.support import (
    GENESIS,
    PARAMS,
    SIGNER,
    T0,
    SoloNode,
    drain,
    messages,
    moment,
    vertex_of,
)

HEARTBEAT = PARAMS.heartbeat_interval
MIN_INTERVAL = PARAMS.min_round_interval


def own_vote(vertex: Vertex) -> Certificate:
    """The certificate of a solo vertex: its author's signature as the one vote."""
    return Certificate(vertex.header.scheme, (0,), (vertex.signature,))


def started(params: Params = PARAMS) -> SoloNode:
    """A solo node that has handled its first timer (it knows the time now)."""
    node = SoloNode(params)
    assert node.engine.get_timer() == 0.0
    assert node.fire() == []
    return node


# ------------------------------------------------------------------- lifecycle


def test_transaction_goes_pending_then_included_then_final() -> None:
    node = started()
    a, b = b"tx-a", b"tx-b"
    id_a, id_b = tx_id(a), tx_id(b)

    assert node.submit([a]) == SubmitResult((id_a,), ())
    admitted, first, certified = node.events
    assert admitted.event == TransactionsAdmitted((id_a,), (a,))
    v1 = vertex_of(first)
    assert first.event == VertexStored(v1, own=True)
    assert certified.event == VertexCertified(v1.id, 1, own_vote(v1))
    assert (v1.round, v1.tx_ids, v1.parents) == (1, (id_a,), ())

    node.submit([b])  # same instant: waits for the minimum round interval
    stats = node.engine.statistics()
    assert (stats.pending, stats.in_flight, stats.log_length) == (1, 1, 0)
    assert node.events[-1].event == TransactionsAdmitted((id_b,), (b,))
    assert node.engine.get_timer() == T0 + MIN_INTERVAL

    added, _ = node.fire()
    assert isinstance(added, VertexStored)
    v2 = added.vertex
    assert (v2.round, v2.tx_ids, v2.parents) == (2, (id_b,), (v1.id,))
    stats = node.engine.statistics()
    assert (stats.pending, stats.in_flight, stats.log_length) == (0, 2, 0)

    added, _, committed = node.fire()  # round 3 votes for the round-2 leader
    assert isinstance(added, VertexStored)
    assert added.vertex.round == 3
    h1, h2 = extend_log_hash(log_hash_start(GENESIS.hash), [id_a, id_b])
    assert committed == LeaderCommitted(
        round=2,
        leader=v2.id,
        ordered=(v1.id, v2.id),
        entries=(LogEntry(Seq(1), id_a, v1.id, h1), LogEntry(Seq(2), id_b, v2.id, h2)),
    )
    stats = node.engine.statistics()
    assert (stats.pending, stats.in_flight, stats.log_length, stats.log_hash) == (0, 0, 2, h2)
    assert (stats.round, stats.committed_round) == (3, 2)


def test_log_hash_is_the_running_hash_chain_over_every_entry() -> None:
    node = started()
    batches = [[b"one", b"two"], [b"three"], [b"four", b"five", b"six"]]
    for batch in batches:
        node.submit(batch)
        node.fire()
    node.settle()
    entries = node.entries()
    ids = [tx_id(t) for batch in batches for t in batch]
    assert [e.tx_id for e in entries] == ids
    assert [e.seq for e in entries] == list(range(1, len(ids) + 1))
    chain = extend_log_hash(log_hash_start(GENESIS.hash), ids)
    assert [e.hash for e in entries] == chain
    stats = node.engine.statistics()
    assert (stats.log_length, stats.log_hash) == (len(ids), chain[-1])


def test_duplicates_are_reported_and_logged_once() -> None:
    node = started()
    a, b, c = b"dup-a", b"dup-b", b"dup-c"
    id_a, id_b, id_c = tx_ids([a, b, c])

    assert node.submit([a, b, a]) == SubmitResult((id_a, id_b), (id_a,))
    assert node.events[0].event == TransactionsAdmitted((id_a, id_b), (a, b))
    assert node.engine.statistics().in_flight == 2  # proposed at once

    assert node.submit([b, c]) == SubmitResult((id_c,), (id_b,))  # b is in flight
    assert node.submit([c, c]) == SubmitResult((), (id_c, id_c))  # c is pending
    admitted = [t.event for t in node.events if isinstance(t.event, TransactionsAdmitted)]
    assert [e.ids for e in admitted] == [(id_a, id_b), (id_c,)]

    node.settle()
    assert [e.tx_id for e in node.entries()] == [id_a, id_b, id_c]


# ------------------------------------------------------------------ rejections


@pytest.mark.parametrize(
    ("bad", "reason"),
    [(b"", Reason.EMPTY_TRANSACTION), (b"x" * 17, Reason.OVERSIZE_TRANSACTION)],
)
def test_a_bad_transaction_rejects_the_whole_batch(bad: bytes, reason: Reason) -> None:
    node = started(Params(max_tx_bytes=16))
    batch = [b"fine", bad, b"also fine"]
    with pytest.raises(InputRejected) as info:
        node.engine.submit_transactions(tx_ids(batch), batch, moment(node.now))
    assert info.value.reason is reason
    assert info.value.fault is Fault.PEER
    assert "transaction 1" in info.value.message
    assert drain(node.engine) == []
    stats = node.engine.statistics()
    assert (stats.pending, stats.in_flight, stats.round) == (0, 0, 0)
    assert node.engine.get_timer() == T0 + HEARTBEAT  # still idle


def test_a_full_pool_refuses_new_transactions_but_not_duplicates() -> None:
    node = started(Params(max_pending=3, min_round_interval=5.0))
    node.submit([b"t0"])  # proposed at once: the pool is empty again
    node.submit([b"t1", b"t2"])  # waits for the next round
    assert node.engine.statistics().pending == 2
    seen = len(node.events)

    with pytest.raises(InputRejected) as info:
        node.submit([b"t3", b"t4"])
    assert info.value.reason is Reason.POOL_FULL
    assert node.engine.statistics().pending == 2
    assert len(node.events) == seen

    assert node.submit([b"t1", b"t3"]) == SubmitResult((tx_id(b"t3"),), (tx_id(b"t1"),))
    with pytest.raises(InputRejected) as info:
        node.submit([b"t4"])
    assert info.value.reason is Reason.POOL_FULL
    assert node.submit([b"t2"]) == SubmitResult((), (tx_id(b"t2"),))
    assert node.engine.statistics().pending == 3


def test_batches_admitted_together_end_as_one_call_per_batch_would() -> None:
    params = Params(max_pending=4, min_round_interval=5.0)
    batches = [
        [b"t0", b"t1"],  # t0 is final already
        [b"t1", b"t2"],
        [b"t2", b"t3"],  # t2 is a duplicate of the batch before
        [b"x" * (params.max_tx_bytes + 1)],  # refused whole: too large
        [b"t4", b"t5"],  # refused whole: the pool holds 3 of 4
        [b"t4"],
    ]
    one_by_one, together = started(params), started(params)
    for node in (one_by_one, together):
        node.submit([b"t0"])  # proposed at once; no other proposal for 5 s
        node.settle()
    expected: list[SubmitResult | Reason] = []
    for txs in batches:
        try:
            expected.append(one_by_one.submit(txs))
        except InputRejected as e:
            expected.append(e.reason)

    outcomes = together.engine.submit_batches(
        [(tx_ids(b), b) for b in batches], moment(together.now)
    )
    events = drain(together.engine)

    got = [o.reason if isinstance(o, InputRejected) else o for o in outcomes]
    assert got == expected
    admitted = [e for e in events if isinstance(e, TransactionsAdmitted)]
    assert len(admitted) == 1  # one event for the whole call
    assert admitted[0].ids == tuple(tx_ids([b"t1", b"t2", b"t3", b"t4"]))
    together.settle()
    one_by_one.settle()
    assert [e.tx_id for e in together.entries()] == [e.tx_id for e in one_by_one.entries()]


# ---------------------------------------------------------------------- timing


def test_an_idle_node_proposes_only_at_the_heartbeat() -> None:
    node = started()
    assert node.engine.get_timer() == T0 + HEARTBEAT
    node.engine.handle_timer(moment(T0 + HEARTBEAT - 0.001))  # early: nothing happens
    assert drain(node.engine) == []

    node.submit([b"work"])
    node.settle()
    last = node.own_vertices()[-1].at
    assert node.engine.get_timer() == last + HEARTBEAT
    before = len(node.own_vertices())

    node.run_until(last + 100.0)
    idle = node.own_vertices()[before:]
    assert len(idle) == 10  # one per heartbeat over 100 s, no more
    times = [last] + [t.at for t in idle]
    for earlier, later in pairwise(times):
        assert later - earlier == pytest.approx(HEARTBEAT)
    assert all(not vertex_of(t).transactions for t in idle)


def test_timers_follow_the_monotonic_clock_and_timestamps_the_wall_clock() -> None:
    engine = Engine(GENESIS, PARAMS, SIGNER)
    wall = 1_700_000_000.0
    engine.handle_timer(Instant(T0, wall))
    assert drain(engine) == []
    assert engine.get_timer() == T0 + HEARTBEAT  # on the monotonic clock
    engine.handle_timer(Instant(T0 + HEARTBEAT - 0.001, wall + 3600.0))  # wall clock jumped
    assert drain(engine) == []  # the heartbeat is not due for it
    engine.handle_timer(Instant(T0 + HEARTBEAT, wall - 3600.0))  # and back again
    [own] = [e.vertex for e in drain(engine) if isinstance(e, VertexStored) and e.own]
    assert own.header.timestamp_ms == int((wall - 3600.0) * 1000)


def test_rounds_are_at_least_min_round_interval_apart() -> None:
    params = Params(max_vertex_txs=2, min_round_interval=0.25)
    node = started(params)
    txs = [f"load-{i}".encode() for i in range(12)]
    node.submit(txs)
    while node.engine.statistics().pending:
        when = node.engine.get_timer()
        assert when is not None
        node.engine.handle_timer(moment(when - 0.01))  # early: nothing happens
        assert drain(node.engine) == []
        node.fire()
    node.settle()
    times = [t.at for t in node.own_vertices()]
    assert len(times) >= 6
    for earlier, later in pairwise(times):
        assert later - earlier >= params.min_round_interval


def test_batches_respect_max_vertex_txs() -> None:
    node = started(Params(max_vertex_txs=4))
    txs = [f"many-{i}".encode() for i in range(10)]
    node.submit(txs)
    node.settle()
    counts = [len(vertex_of(t).transactions) for t in node.own_vertices()]
    assert counts[:3] == [4, 4, 2]
    assert sum(counts) == 10
    assert [e.tx_id for e in node.entries()] == tx_ids(txs)


def test_batches_respect_max_vertex_bytes() -> None:
    node = started(Params(max_tx_bytes=10, max_vertex_bytes=25))
    txs = [bytes([i]) * 10 for i in range(1, 6)]
    node.submit(txs)
    node.settle()
    sizes = [vertex_of(t).header.payload_bytes for t in node.own_vertices()]
    assert sizes[:3] == [20, 20, 10]
    assert [e.tx_id for e in node.entries()] == tx_ids(txs)


# --------------------------------------------------------------------- restart


def test_a_restored_engine_continues_the_log_like_one_that_never_stopped() -> None:
    node = started()
    node.submit([b"final-1"])
    node.settle()
    node.fire()  # an empty round, so the next one is odd
    node.submit([b"in-flight-1"])
    node.fire()
    node.submit([b"pending-1", b"pending-2"])
    store = MemoryStore(log_hash_start(GENESIS.hash))
    store.persist(t.event for t in node.events if isinstance(t.event, Fact))
    snapshot = store.snapshot(SIGNER.node_id, PARAMS.gc_depth)
    before = node.engine.statistics()
    assert (before.pending, before.in_flight, before.log_length) == (2, 1, 1)
    cut = len(node.entries())

    restored = SoloNode(snapshot=snapshot, now=node.now)
    stats = restored.engine.statistics()
    assert (stats.round, stats.committed_round) == (before.round, before.committed_round)
    assert (stats.pending, stats.in_flight) == (before.pending, before.in_flight)
    assert (stats.log_length, stats.log_hash) == (before.log_length, before.log_hash)

    for twin in (node, restored):
        twin.settle()
        twin.submit([b"after-1", b"after-2"])
        twin.settle()

    first = vertex_of(restored.own_vertices()[0])
    assert first.round == before.round + 1
    assert first.parents == (vertex_of(node.own_vertices()[before.round - 1]).id,)

    def positions(entries: list[LogEntry]) -> list[tuple[int, TxId, bytes]]:
        return [(e.seq, e.tx_id, e.hash) for e in entries]

    assert positions(restored.entries()) == positions(node.entries()[cut:])
    assert [e.tx_id for e in restored.entries()] == tx_ids(
        [b"in-flight-1", b"pending-1", b"pending-2", b"after-1", b"after-2"]
    )
    assert restored.engine.statistics().log_hash == node.engine.statistics().log_hash


# ------------------------------------------------------------ outputs and state


def test_statistics_of_a_fresh_validator_and_an_observer() -> None:
    stats = Engine(GENESIS, PARAMS, SIGNER).statistics()
    assert stats.role is Role.VALIDATOR
    assert (stats.round, stats.highest_round, stats.committed_round) == (0, 0, 0)
    assert (stats.pending, stats.in_flight, stats.dag_window, stats.log_length) == (0, 0, 0, 0)
    assert stats.log_hash == log_hash_start(GENESIS.hash)

    observer = SoloNode(signer=Signer(b"\x02" * 32))
    assert observer.engine.statistics().role is Role.OBSERVER
    assert observer.engine.get_timer() is None
    observer.submit([b"kept"])
    assert observer.engine.statistics().pending == 1
    assert observer.engine.get_timer() is None  # an observer never proposes
    assert [type(t.event) for t in observer.events] == [TransactionsAdmitted]


def test_statistics_follow_the_dag_and_the_window_stays_bounded() -> None:
    params = Params(gc_depth=4)
    node = started(params)
    node.submit([b"s1"])
    node.settle()
    stats = node.engine.statistics()
    assert (stats.round, stats.highest_round, stats.committed_round) == (3, 3, 2)
    assert (stats.dag_window, stats.log_length) == (3, 1)
    windows = []
    for _ in range(30):
        node.fire()
        stats = node.engine.statistics()
        windows.append(stats.dag_window)
    # gc_depth rounds below the committed leader, its round and up to two above
    assert max(windows) == params.gc_depth + 3
    assert stats.round == 33
    assert stats.committed_round == 32


def test_new_vertices_go_to_connected_peers() -> None:
    node = started()
    alice, bob = PeerId("alice"), PeerId("bob")
    node.engine.peer_connected(bob, NodeId(b"\xbb" * 32))
    node.engine.peer_connected(alice, NodeId(b"\xaa" * 32))
    node.submit([b"gossip"])
    sent = messages(node.engine)
    v1 = vertex_of(node.own_vertices()[0])
    proposals = [(peer, data) for peer, data in sent if data[0] == 1]
    assert [peer for peer, _ in proposals] == [alice, bob]
    for _, data in proposals:
        assert decode_message(data, PARAMS) == ProposalMessage(v1)
    assert messages(node.engine) == []

    node.engine.peer_disconnected(bob)
    node.fire()
    assert {peer for peer, _ in messages(node.engine)} == {alice}


def test_own_vertices_sent_back_by_a_peer_are_ignored() -> None:
    node = started()
    node.submit([b"echo"])
    v1 = vertex_of(node.own_vertices()[0])
    before = node.engine.statistics()
    node.engine.receive_message(PeerId("echo"), b"\x01" + v1.encode(), moment(node.now))
    assert drain(node.engine) == []
    assert node.engine.statistics() == before


def test_garbage_from_a_peer_is_an_event_not_an_exception() -> None:
    node = started()
    node.engine.receive_message(PeerId("p"), b"\x63junk", moment(node.now))
    [event] = drain(node.engine)
    assert event == MessageRejected(PeerId("p"), Reason.UNKNOWN_MESSAGE, "message type 99")
