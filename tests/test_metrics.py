"""Metrics fed by a real engine: counters, gauges, histograms and label hygiene."""

from __future__ import annotations

import platform

import pytest
from prometheus_client import generate_latest

from qudag_node.core.crypto import Signer, tx_ids
from qudag_node.core.engine import Engine
from qudag_node.core.errors import Reason
from qudag_node.core.events import LeaderCommitted, MessageRejected, VertexCertified
from qudag_node.core.genesis import Genesis
from qudag_node.core.params import Params
from qudag_node.core.types import PeerId
from qudag_node.metrics import Metrics
from tests.core.support import drain

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
)
FORBIDDEN_LABELS = {"app", "region", "host", "instance"}


def _engine() -> Engine:
    signer = Signer(bytes(range(32)))
    genesis = Genesis.solo("qudag-test", "n1", signer.public_key)
    return Engine(genesis, Params(min_round_interval=0.0), signer)


def _value(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    assert value is not None, f"{name}{labels} is not exposed"
    return value


def test_engine_run_is_counted_from_the_stored_totals() -> None:
    metrics = Metrics("1.2.3")
    metrics.set_totals(vertices=10, transactions=20, log_length=5)
    engine = _engine()
    now = 0.0
    engine.handle_timer(now)  # first round, before any transaction
    events = drain(engine)
    metrics.on_events(events)

    txs = [b"alpha", b"beta", b"gamma"]
    now = 1.0
    result = engine.submit_transactions(tx_ids(txs), txs, now)
    again = engine.submit_transactions(tx_ids(txs[:1]), txs[:1], now)
    metrics.on_submit(len(result.admitted), len(result.duplicates))
    metrics.on_submit(len(again.admitted), len(again.duplicates))
    step = drain(engine)
    events += step
    metrics.on_events(step)
    for _ in range(10):
        if any(isinstance(e, LeaderCommitted) and e.entries for e in events):
            break
        timer = engine.get_timer()
        assert timer is not None
        now = max(now, timer)
        engine.handle_timer(now)
        step = drain(engine)
        events += step
        metrics.on_events(step)
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
    engine.receive_message(PeerId("peer-a"), b"\x00", 0.0)
    events = drain(engine)
    rejected = [e for e in events if isinstance(e, MessageRejected)]
    assert len(rejected) == 1
    metrics.on_events(events)
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
    engine.receive_message(PeerId("peer-a"), b"\x00", 0.0)
    metrics.on_events(drain(engine))
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


def test_each_instance_has_its_own_registry() -> None:
    first, second = Metrics("1"), Metrics("1")
    first.on_store_commit(0.01)
    assert _value(first, "qudag_store_commit_seconds_count") == 1
    assert _value(second, "qudag_store_commit_seconds_count") == 0
