"""Metrics fed by a real engine: counters, gauges, histograms and label hygiene.

The consensus series are fed by engines of the four-validator network
:data:`tests.core.support.C`, given hand-made vertices.
"""

from __future__ import annotations

import platform
from collections.abc import Sequence

import pytest
from prometheus_client import generate_latest

from qudag_node.core.crypto import Signer, tx_ids
from qudag_node.core.engine import Engine
from qudag_node.core.errors import Reason
from qudag_node.core.events import (
    EquivocationDetected,
    Fact,
    LeaderCommitted,
    MessageRejected,
    VertexCertified,
)
from qudag_node.core.genesis import Genesis
from qudag_node.core.messages import CertifiedMessage, encode_message
from qudag_node.core.params import Params
from qudag_node.core.types import PeerId
from qudag_node.core.vertex import Vertex
from qudag_node.metrics import FINALITY_BUCKETS, Metrics
from tests.core.support import (
    NOW,
    PEER,
    ROUND1,
    C,
    Output,
    drain,
    feed,
    message,
    moment,
    proposal,
    vote,
)

EXPOSED = (
    "qudag_dag_nodes_total",
    "qudag_transactions_total",
    "qudag_transactions_finalized_total",
    "qudag_leaders_committed_total",
    "qudag_messages_rejected_total",
    "qudag_round",
    "qudag_highest_round",
    "qudag_committed_round",
    "qudag_pending_transactions",
    "qudag_log_length",
    "qudag_dag_window_vertices",
    "qudag_store_commit_seconds_bucket",
    "qudag_http_requests_total",
    "qudag_http_request_duration_seconds_bucket",
    "qudag_build_info",
    "qudag_leaders_skipped_total",
    "qudag_finality_seconds_bucket",
    "qudag_equivocations_total",
    "qudag_vertices_rejected_total",
    "qudag_vertices_buffered",
    "qudag_vertices_buffer_dropped_total",
    "qudag_peers_connected",
    "python_gc_collections_total",
)
FORBIDDEN_LABELS = {"app", "region", "host", "instance"}


def _engine() -> Engine:
    signer = Signer(bytes(range(32)))
    genesis = Genesis.solo("qudag-test", "n1", signer.public_key)
    return Engine(genesis, Params(min_round_interval=0.0), signer)


def _count(metrics: Metrics, outputs: Sequence[Output]) -> None:
    """Count engine output as the node does once its step is durable."""
    metrics.on_facts([o for o in outputs if isinstance(o, Fact)])
    metrics.on_notices([o for o in outputs if isinstance(o, MessageRejected)])


def _value(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    assert value is not None, f"{name}{labels} is not exposed"
    return value


def test_engine_run_is_counted_from_the_stored_totals() -> None:
    metrics = Metrics("1.2.3")
    metrics.set_totals(vertices=10, transactions=20, log_length=5)
    engine = _engine()
    now = 0.0
    engine.handle_timer(moment(now))  # first round, before any transaction
    events = drain(engine)
    _count(metrics, events)

    txs = [b"alpha", b"beta", b"gamma"]
    now = 1.0
    result = engine.submit_transactions(tx_ids(txs), txs, moment(now))
    again = engine.submit_transactions(tx_ids(txs[:1]), txs[:1], moment(now))
    metrics.on_submit(len(result.admitted), len(result.duplicates))
    metrics.on_submit(len(again.admitted), len(again.duplicates))
    step = drain(engine)
    events += step
    _count(metrics, step)
    for _ in range(10):
        if any(isinstance(e, LeaderCommitted) and e.entries for e in events):
            break
        timer = engine.get_timer()
        assert timer is not None
        now = max(now, timer)
        engine.handle_timer(moment(now))
        step = drain(engine)
        events += step
        _count(metrics, step)
    stats = engine.statistics()
    metrics.on_statistics(stats)

    vertices = sum(isinstance(e, VertexCertified) for e in events)
    commits = [e for e in events if isinstance(e, LeaderCommitted)]
    entries = sum(len(e.entries) for e in commits)
    assert vertices >= 3
    assert entries == 3
    assert _value(metrics, "qudag_dag_nodes_total") == 10 + vertices
    assert _value(metrics, "qudag_transactions_total", result="admitted") == 20 + 3
    assert _value(metrics, "qudag_transactions_total", result="duplicate") == 1
    assert _value(metrics, "qudag_transactions_total", result="rejected") == 0
    assert _value(metrics, "qudag_transactions_finalized_total") == 5 + entries
    assert _value(metrics, "qudag_leaders_committed_total") == len(commits)
    assert _value(metrics, "qudag_round") == stats.round
    assert _value(metrics, "qudag_highest_round") == stats.highest_round
    assert _value(metrics, "qudag_committed_round") == stats.committed_round > 0
    assert _value(metrics, "qudag_pending_transactions") == stats.pending == 0
    assert _value(metrics, "qudag_log_length") == stats.log_length == 3
    assert _value(metrics, "qudag_dag_window_vertices") == stats.dag_window == vertices


def test_set_totals_starts_the_counters_and_the_log_gauge() -> None:
    metrics = Metrics("1.2.3")
    metrics.set_totals(vertices=7, transactions=11, log_length=4)
    assert _value(metrics, "qudag_dag_nodes_total") == 7
    assert _value(metrics, "qudag_transactions_total", result="admitted") == 11
    assert _value(metrics, "qudag_transactions_finalized_total") == 4
    assert _value(metrics, "qudag_log_length") == 4
    assert _value(metrics, "qudag_leaders_committed_total") == 0


def test_rejected_peer_messages_are_counted_by_reason() -> None:
    metrics = Metrics("1.2.3")
    engine = _engine()
    engine.receive_message(PeerId("peer-a"), b"\x00", moment(0.0))
    events = drain(engine)
    rejected = [e for e in events if isinstance(e, MessageRejected)]
    assert len(rejected) == 1
    _count(metrics, events)
    reason = rejected[0].reason.value
    assert _value(metrics, "qudag_messages_rejected_total", reason=reason) == 1


def test_rejected_submits_are_counted_with_their_reason() -> None:
    metrics = Metrics("1.2.3")
    metrics.on_submit_rejected(Reason.POOL_FULL, 1)
    metrics.on_submit_rejected(Reason.POOL_FULL, 1)
    metrics.on_submit_rejected(Reason.OVERSIZE_TRANSACTION, 1)
    assert _value(metrics, "qudag_transactions_total", result="rejected") == 3
    assert _value(metrics, "qudag_submits_rejected_total", reason="pool_full") == 2
    assert _value(metrics, "qudag_submits_rejected_total", reason="oversize_transaction") == 1


def test_a_rejected_batch_counts_its_transactions_once_per_request() -> None:
    metrics = Metrics("1.2.3")
    metrics.on_submit_rejected(Reason.TOO_MANY_TRANSACTIONS, 500)
    assert _value(metrics, "qudag_transactions_total", result="rejected") == 500
    assert _value(metrics, "qudag_submits_rejected_total", reason="too_many_transactions") == 1


def test_store_commit_histogram() -> None:
    metrics = Metrics("1.2.3")
    metrics.on_store_commit(0.0003)
    metrics.on_store_commit(0.003)
    assert _value(metrics, "qudag_store_commit_seconds_count") == 2
    assert _value(metrics, "qudag_store_commit_seconds_sum") == pytest.approx(0.0033)
    assert _value(metrics, "qudag_store_commit_seconds_bucket", le="0.0005") == 1
    assert _value(metrics, "qudag_store_commit_seconds_bucket", le="0.005") == 2
    assert _value(metrics, "qudag_store_commit_seconds_bucket", le="2.0") == 2


def test_http_requests_by_route_template() -> None:
    metrics = Metrics("1.2.3")
    route = "/api/v1/transactions/{id}"
    metrics.on_http("GET", route, 200, 0.002)
    metrics.on_http("GET", route, 404, 0.001)
    metrics.on_http("GET", route, 200, 0.5)
    metrics.on_http("BREW", "unmatched", 405, 0.001)
    labels = {"method": "GET", "route": route}
    assert _value(metrics, "qudag_http_requests_total", **labels, status="200") == 2
    assert _value(metrics, "qudag_http_requests_total", **labels, status="404") == 1
    assert _value(metrics, "qudag_http_request_duration_seconds_count", route=route) == 3
    assert (
        _value(metrics, "qudag_http_request_duration_seconds_bucket", route=route, le="0.0025") == 2
    )
    # an unknown method is one label value, whatever the client sent
    other = {"method": "other", "route": "unmatched", "status": "405"}
    assert _value(metrics, "qudag_http_requests_total", **other) == 1


def test_requests_count_the_same_beyond_the_remembered_series() -> None:
    metrics = Metrics("1.2.3")
    methods = [f"M{i}" for i in range(300)]  # more spellings than are kept looked up
    for _ in range(2):
        for method in methods:
            metrics.on_http(method, "unmatched", 405, 0.001)
    other = {"method": "other", "route": "unmatched", "status": "405"}
    assert _value(metrics, "qudag_http_requests_total", **other) == 600
    route = {"route": "unmatched"}
    assert _value(metrics, "qudag_http_request_duration_seconds_count", **route) == 600


def test_build_info() -> None:
    metrics = Metrics("1.2.3")
    version = {"version": "1.2.3", "python": platform.python_version()}
    assert _value(metrics, "qudag_build_info", **version) == 1


def test_exposition_names_every_series_and_no_reserved_label() -> None:
    metrics = Metrics("1.2.3")
    # one sample of each labelled family, so that every name is in the output
    metrics.on_submit(1, 1)
    metrics.on_submit_rejected(Reason.POOL_FULL, 1)
    engine = _engine()
    engine.receive_message(PeerId("peer-a"), b"\x00", moment(0.0))
    engine.receive_message(PeerId("peer-a"), b"\x01", moment(0.0))  # a truncated proposal
    _count(metrics, drain(engine))
    metrics.on_store_commit(0.001)
    metrics.on_http("GET", "/health", 200, 0.001)
    text = generate_latest(metrics.registry).decode()
    for name in EXPOSED:
        assert f"\n{name}" in text, name
    labels = {
        label
        for family in metrics.registry.collect()
        for sample in family.samples
        for label in sample.labels
    }
    assert labels
    assert not labels & FORBIDDEN_LABELS


# ------------------------------------------------------------- consensus


def _rounds_without_leaders(last: int, leaderless: set[int]) -> list[Vertex]:
    """Rounds 1 to ``last`` of the committee; ``leaderless`` rounds lack their leader's
    vertex and the last round has f + 1 vertices, enough to commit the leader before it."""
    rounds = [ROUND1]
    for r in range(2, last + 1):
        authors = [i for i in range(4) if not (r in leaderless and i == C.index(r))]
        if r == last:
            authors = authors[:2]
        parents = [v.id for v in rounds[-1]]
        rounds.append([C.vertex(i, r, parents, txs=[f"r{r}-v{i}".encode()]) for i in authors])
    return [v for round_ in rounds for v in round_]


def test_skipped_leader_rounds_are_counted() -> None:
    metrics = Metrics("1.2.3")
    events = feed(C.observer(), *_rounds_without_leaders(7, {2, 4}))
    [commit] = [e for e in events if isinstance(e, LeaderCommitted)]
    assert (commit.round, commit.skipped) == (6, (2, 4))
    _count(metrics, events)
    assert _value(metrics, "qudag_leaders_committed_total") == 1
    assert _value(metrics, "qudag_leaders_skipped_total") == 2
    metrics.on_facts([LeaderCommitted(8, commit.leader, (), ())])
    assert _value(metrics, "qudag_leaders_committed_total") == 2
    assert _value(metrics, "qudag_leaders_skipped_total") == 2


def _rejections(*messages: bytes) -> list[Output]:
    engine = C.observer()
    for data in messages:
        engine.receive_message(PEER, data, moment(NOW))
    return drain(engine)


def _certified_by(vertex: Vertex, voters: tuple[int, ...]) -> bytes:
    """A CERTIFIED message for ``vertex`` whose certificate holds the votes of ``voters``."""
    return encode_message(CertifiedMessage(vertex, C.certificate(vertex, voters)))


def test_equivocations_and_rejected_vertices_are_counted() -> None:
    metrics = Metrics("1.2.3")
    first, twin = ROUND1[1], C.vertex(1, 1, txs=[b"twin"])
    events = _rejections(proposal(first), proposal(twin))
    assert sum(isinstance(e, EquivocationDetected) for e in events) == 1
    _count(metrics, events)
    assert _value(metrics, "qudag_equivocations_total") == 1
    assert _value(metrics, "qudag_vertices_rejected_total", reason="equivocation") == 1
    assert _value(metrics, "qudag_messages_rejected_total", reason="equivocation") == 1

    events = _rejections(
        _certified_by(ROUND1[2], (0,)),  # one vote, below the quorum
        message(ROUND1[3])[:-1],  # a CERTIFIED message cut short
        vote(ROUND1[0], 1)[:-1],  # a VOTE cut short: not a vertex
    )
    kinds = [(e.kind, e.reason.value) for e in events if isinstance(e, MessageRejected)]
    assert kinds == [
        ("certified", "bad_certificate"),
        ("certified", "truncated"),
        ("vote", "truncated"),
    ]
    _count(metrics, events)
    assert _value(metrics, "qudag_vertices_rejected_total", reason="bad_certificate") == 1
    assert _value(metrics, "qudag_vertices_rejected_total", reason="truncated") == 1
    assert _value(metrics, "qudag_messages_rejected_total", reason="truncated") == 2
    assert _value(metrics, "qudag_equivocations_total") == 1


def test_finality_latencies_fill_the_histogram() -> None:
    metrics = Metrics("1.2.3")
    metrics.on_finality([0.004, 0.2, 3.0])
    metrics.on_finality([])
    metrics.on_finality([75.0])
    assert _value(metrics, "qudag_finality_seconds_count") == 4
    assert _value(metrics, "qudag_finality_seconds_sum") == pytest.approx(78.204)
    expected = {0.01: 1, 0.1: 1, 0.25: 2, 2.5: 2, 5.0: 3, 60.0: 3}
    for le, count in expected.items():
        assert le in FINALITY_BUCKETS
        assert _value(metrics, "qudag_finality_seconds_bucket", le=str(le)) == count
    assert _value(metrics, "qudag_finality_seconds_bucket", le="+Inf") == 4


def test_buffer_and_peer_statistics() -> None:
    """Gauges copy the engine's buffer and peer counts; drops grow by the new ones only."""
    metrics = Metrics("1.2.3")
    engine = C.observer(Params(max_buffered=2))
    engine.peer_connected(PEER, C.signers[1].node_id)
    engine.peer_connected(PeerId("peer-2"), C.signers[2].node_id)
    unknown = [C.vertex(i, 2).id for i in range(3)]
    waiting = [C.vertex(i, 3, unknown) for i in range(4)]  # their parents are unknown
    for v in waiting[:3]:
        engine.receive_message(PEER, message(v), moment(NOW))
    stats = engine.statistics()
    assert (stats.buffered, stats.buffer_dropped, stats.peers) == (2, 1, 2)
    metrics.on_statistics(stats)
    assert _value(metrics, "qudag_vertices_buffered") == 2
    assert _value(metrics, "qudag_peers_connected") == 2
    assert _value(metrics, "qudag_vertices_buffer_dropped_total") == 1
    metrics.on_statistics(engine.statistics())  # nothing new was dropped
    assert _value(metrics, "qudag_vertices_buffer_dropped_total") == 1

    engine.receive_message(PEER, message(waiting[3]), moment(NOW))
    engine.peer_disconnected(PeerId("peer-2"))
    metrics.on_statistics(engine.statistics())
    metrics.on_statistics(engine.statistics())
    assert engine.statistics().buffer_dropped == 2
    assert _value(metrics, "qudag_vertices_buffer_dropped_total") == 2
    assert _value(metrics, "qudag_vertices_buffered") == 2
    assert _value(metrics, "qudag_peers_connected") == 1


def test_each_instance_has_its_own_registry() -> None:
    first, second = Metrics("1"), Metrics("1")
    first.on_store_commit(0.01)
    assert _value(first, "qudag_store_commit_seconds_count") == 1
    assert _value(second, "qudag_store_commit_seconds_count") == 0
