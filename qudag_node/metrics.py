"""Prometheus metrics: one :class:`Metrics` object on its own registry.

The node feeds it engine events, statistics and store timings; the HTTP API feeds
it request outcomes. Series names are a contract with dashboards. Labels never use
the names Fly rewrites (``app``, ``region``, ``host``, ``instance``) and their values
are low-cardinality: route templates, reason codes, fixed result names.
"""

from __future__ import annotations

import math
import platform
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import assert_never

from prometheus_client import CollectorRegistry, Counter, Gauge, GCCollector, Histogram, Metric
from prometheus_client.core import GaugeMetricFamily

from qudag_node.core.engine import Statistics
from qudag_node.core.errors import Reason
from qudag_node.core.events import (
    CheckpointCertified,
    CheckpointMade,
    EquivocationDetected,
    Fact,
    LeaderCommitted,
    MessageRejected,
    Notice,
    TransactionsAdmitted,
    VertexCertified,
    VertexStored,
)
from qudag_node.core.handshake import REFUSAL_REASONS, UNKNOWN_REFUSAL

#: Buckets for one SQLite commit (an fsync or two): 0.5 ms to 2 s.
STORE_COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0)
#: Buckets for an HTTP request, up to the longest ``wait=final`` submit.
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Buckets for finality latency (submit to final), 10 ms to 60 s.
FINALITY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Buckets for the stream's delivery delay (durably final to written to a subscriber).
STREAM_DELAY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: Message kinds that carry a vertex ("waiting": one held for its parents, rejected once
#: they arrived).
VERTEX_MESSAGES = frozenset({"proposal", "certified", "waiting"})
#: HTTP methods kept as label values; any other method is counted as ``other``.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: Most (method, route, status) keys whose series are kept looked up (methods outside
#: HTTP_METHODS share one label, but each spelling would be a key of its own).
_MAX_HTTP_SERIES = 256


def _retention_series(r: CollectorRegistry) -> tuple[Counter, Gauge, Gauge]:
    """The pruner's series: rows pruned by kind, the oldest round and log position held."""
    pruned = Counter(
        "qudag_pruned_rows",
        "Rows the retention pruned, by kind (vertices, transactions, log, evidence, checkpoints).",
        ["kind"],
        registry=r,
    )
    oldest_round = Gauge(
        "qudag_oldest_round_held", "The oldest DAG round this node holds.", registry=r
    )
    oldest_log_position = Gauge(
        "qudag_oldest_log_position_held",
        "The oldest finalized log position this node holds.",
        registry=r,
    )
    return pruned, oldest_round, oldest_log_position


def _tls_handshake_series(r: CollectorRegistry) -> Histogram:
    """Seconds of each peer link's TLS handshake (either end)."""
    return Histogram(
        "qudag_peer_tls_handshake_seconds",
        "Seconds a peer link's TLS handshake took (either end), before the link handshake.",
        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        registry=r,
    )


def _stream_series(r: CollectorRegistry) -> tuple[Gauge, Counter, Counter, Histogram]:
    """The stream's series (``GET /api/v1/stream``): subscribers, events sent by kind,
    subscribers dropped by reason, and the delivery delay."""
    subscribers = Gauge(
        "qudag_stream_subscribers", "Clients subscribed to the log stream.", registry=r
    )
    events = Counter(
        "qudag_stream_events",
        "Events written to stream subscribers, by event (entry, certified, committed).",
        ["event"],
        registry=r,
    )
    dropped = Counter(
        "qudag_stream_dropped",
        "Stream subscribers dropped by the node, by reason (slow_reader, pruned).",
        ["reason"],
        registry=r,
    )
    delay = Histogram(
        "qudag_stream_delivery_delay_seconds",
        "Time from a log entry being durably final to its being written to a subscriber"
        " (each write, its oldest entry).",
        buckets=STREAM_DELAY_BUCKETS,
        registry=r,
    )
    return subscribers, events, dropped, delay


class _StorageCollector:
    """Disk space of the data directory's filesystem and the database's size, read at each
    scrape (one ``statvfs`` and two ``stat`` calls). Until :meth:`watch` names the paths
    the families are exposed without samples."""

    def __init__(self) -> None:
        self._data_dir: Path | None = None
        self._database: Path | None = None

    def watch(self, data_dir: Path, database: Path) -> None:
        """Report on ``data_dir``'s filesystem and on the SQLite file ``database``."""
        self._data_dir, self._database = data_dir, database

    def collect(self) -> Iterable[Metric]:
        """The three gauges; NaN for a value that cannot be read."""
        free = GaugeMetricFamily(
            "qudag_data_disk_free_bytes",
            "Bytes available to the node on the data directory's filesystem.",
        )
        size = GaugeMetricFamily(
            "qudag_data_disk_size_bytes", "Size in bytes of the data directory's filesystem."
        )
        database = GaugeMetricFamily(
            "qudag_database_bytes", "Bytes of the database file and its write-ahead log."
        )
        if self._data_dir is not None and self._database is not None:
            try:
                usage = shutil.disk_usage(self._data_dir)
                free.add_metric([], usage.free)
                size.add_metric([], usage.total)
            except OSError:
                free.add_metric([], math.nan)
                size.add_metric([], math.nan)
            wal = self._database.with_name(self._database.name + "-wal")
            database.add_metric([], _file_bytes(self._database) + _file_bytes(wal))
        return [free, size, database]


class _QuorumCollector:
    """A validator's quorum gauges. Only validators set :attr:`state`; until then (and
    on an observer, always) the families have no samples, so an observer never looks
    unable to finalize."""

    def __init__(self) -> None:
        #: (able, validators linked with itself, Unix time of the last change)
        self.state: tuple[bool, int, float] | None = None

    def collect(self) -> Iterable[Metric]:
        """The three gauges."""
        able = GaugeMetricFamily(
            "qudag_quorum_linked",
            "1 while this validator links to a quorum of validators (itself included) and"
            " can finalize; 0 while it cannot.",
        )
        linked = GaugeMetricFamily(
            "qudag_quorum_validators_linked",
            "Validators this validator links to by live links, itself included.",
        )
        changed = GaugeMetricFamily(
            "qudag_quorum_changed_timestamp_seconds",
            "Unix time when qudag_quorum_linked last changed (or was first known).",
        )
        if self.state is not None:
            state, count, since = self.state
            able.add_metric([], 1 if state else 0)
            linked.add_metric([], count)
            changed.add_metric([], since)
        return [able, linked, changed]


def _file_bytes(path: Path) -> float:
    """The size of ``path``: 0 when it does not exist, NaN when it cannot be read."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
    except OSError:
        return math.nan


class Metrics:
    """Every series the node exposes, registered on :attr:`registry`."""

    def __init__(self, version: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        GCCollector(registry=r)  # python_gc_*: collections by generation, objects collected
        self._dag_nodes = Counter(
            "qudag_dag_nodes", "Certified vertices added to the DAG.", registry=r
        )
        self._transactions = Counter(
            "qudag_transactions",
            "Submitted transactions by result: admitted, duplicate or rejected.",
            ["result"],
            registry=r,
        )
        self._admitted = self._transactions.labels(result="admitted")
        self._duplicate = self._transactions.labels(result="duplicate")
        self._rejected = self._transactions.labels(result="rejected")
        self._submits_rejected = Counter(
            "qudag_submits_rejected",
            "Submit requests refused, by reason code.",
            ["reason"],
            registry=r,
        )
        self._finalized = Counter(
            "qudag_transactions_finalized", "Entries appended to the finalized log.", registry=r
        )
        self._leaders = Counter("qudag_leaders_committed", "Leader vertices committed.", registry=r)
        self._skipped = Counter(
            "qudag_leaders_skipped",
            "Leader rounds passed over: no leader vertex, or not reached by the next commit.",
            registry=r,
        )
        self._finality = Histogram(
            "qudag_finality_seconds",
            "Time from a client submit admitted at this node to the transaction's finality here.",
            buckets=FINALITY_BUCKETS,
            registry=r,
        )
        self._equivocations = Counter(
            "qudag_equivocations",
            "Validators caught signing two vertices for one round (evidence kept).",
            registry=r,
        )
        self._vertices_rejected = Counter(
            "qudag_vertices_rejected",
            "Vertices (proposed or certified) dropped for breaking a rule, by reason code.",
            ["reason"],
            registry=r,
        )
        self._buffered = Gauge(
            "qudag_vertices_buffered", "Vertices held while their parents are fetched.", registry=r
        )
        self._buffer_dropped = Counter(
            "qudag_vertices_buffer_dropped",
            "Buffered vertices dropped, oldest first, to keep the buffer bounded.",
            registry=r,
        )
        self._buffer_dropped_seen = 0
        self._peers = Gauge("qudag_peers_connected", "Peer links up.", registry=r)
        self._messages_rejected = Counter(
            "qudag_messages_rejected",
            "Peer messages dropped for breaking a rule, by reason code.",
            ["reason"],
            registry=r,
        )
        self._round = Gauge("qudag_round", "This node's latest proposed round.", registry=r)
        self._highest_round = Gauge(
            "qudag_highest_round", "Highest round seen in the DAG.", registry=r
        )
        self._committed_round = Gauge(
            "qudag_committed_round", "Round of the last committed leader.", registry=r
        )
        self._pending = Gauge(
            "qudag_pending_transactions", "Transactions waiting for a vertex.", registry=r
        )
        self._log_length = Gauge("qudag_log_length", "Entries in the finalized log.", registry=r)
        self._dag_window = Gauge(
            "qudag_dag_window_vertices", "Vertices held in memory.", registry=r
        )
        self._store_commit = Histogram(
            "qudag_store_commit_seconds",
            "Time to end one store transaction (the steps written since the last).",
            buckets=STORE_COMMIT_BUCKETS,
            registry=r,
        )
        self._http_requests = Counter(
            "qudag_http_requests",
            "HTTP requests by method, route template and status.",
            ["method", "route", "status"],
            registry=r,
        )
        #: (method, route, status) -> the series they count in, looked up once
        self._http_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._http_duration = Histogram(
            "qudag_http_request_duration_seconds",
            "HTTP request duration by route template.",
            ["route"],
            buckets=HTTP_BUCKETS,
            registry=r,
        )
        self._http_connections = Gauge(
            "qudag_http_connections", "Open connections to the HTTP API.", registry=r
        )
        self._http_closed = Counter(
            "qudag_http_connections_closed",
            "HTTP API connections the node closed on a limit, by reason.",
            ["reason"],
            registry=r,
        )
        self._http_refused = Counter(
            "qudag_http_requests_refused",
            "HTTP requests refused before reaching a route (unparsable), by error code.",
            ["code"],
            registry=r,
        )
        self._accept_errors = Counter(
            "qudag_accept_errors",
            "Failed accept() calls on a listening socket, by errno name.",
            ["errno"],
            registry=r,
        )
        self._peer_messages = Counter(
            "qudag_peer_messages",
            "Peer messages by direction (sent, received) and message type.",
            ["direction", "type"],
            registry=r,
        )
        self._peer_bytes = Counter(
            "qudag_peer_bytes",
            "Bytes of peer frames (length prefix included) by direction and message type.",
            ["direction", "type"],
            registry=r,
        )
        self._handshake_failures = Counter(
            "qudag_peer_handshake_failures",
            "Peer handshakes that failed, by reason code (either end may have refused).",
            ["reason"],
            registry=r,
        )
        self._links_closed = Counter(
            "qudag_peer_links_closed",
            "Established peer links that closed, by reason (slow_peer, malformed_frame, ...).",
            ["reason"],
            registry=r,
        )
        self._last_message_age = Gauge(
            "qudag_peer_last_message_age_seconds",
            "Seconds since each linked peer last sent a frame.",
            ["peer"],
            registry=r,
        )
        self._aged_peers: set[str] = set()
        self._quorum = _QuorumCollector()
        r.register(self._quorum)
        self._sync_rounds = Counter(
            "qudag_sync_rounds",
            "Anti-entropy summaries received from peers, by result (in_sync, differences).",
            ["result"],
            registry=r,
        )
        self._sync_vertices = Counter(
            "qudag_sync_vertices",
            "Vertices that anti-entropy found missing, by direction (fetched, pushed).",
            ["direction"],
            registry=r,
        )
        self._catchup_gap = Gauge(
            "qudag_catchup_gap_rounds",
            "Rounds this node is behind its most advanced peer.",
            registry=r,
        )
        (
            self._checkpoint_certified,
            self._state_syncs,
            self._state_sync_seconds,
            self._backfill_entries,
            self._log_base,
            self._pruned,
            self._oldest_round,
            self._oldest_log_position,
            self._tls_handshake,
            self._stream_subscribers,
            self._stream_events,
            self._stream_dropped,
            self._stream_delay,
        ) = (
            *_checkpoint_series(r),
            *_retention_series(r),
            _tls_handshake_series(r),
            *_stream_series(r),
        )
        build = Gauge(
            "qudag_build_info",
            "Build of this node (always 1).",
            ["version", "python"],
            registry=r,
        )
        build.labels(version=version, python=platform.python_version()).set(1)
        self._storage = _StorageCollector()
        r.register(self._storage)

    def watch_storage(self, data_dir: Path, database: Path) -> None:
        """Report the free space of ``data_dir``'s filesystem and the size of the SQLite
        file ``database`` (with its write-ahead log) at each scrape."""
        self._storage.watch(data_dir, database)

    def set_totals(self, vertices: int, transactions: int, log_length: int) -> None:
        """Start the counters at the store's totals; call once, at start."""
        self._dag_nodes.inc(vertices)
        self._admitted.inc(transactions)
        self._finalized.inc(log_length)
        self._log_length.set(log_length)

    def on_facts(self, facts: Sequence[Fact]) -> None:
        """Count what one persisted engine step produced.

        Admitted transactions are counted by :meth:`on_submit`, not here.
        """
        for fact in facts:
            match fact:
                case VertexCertified():
                    self._dag_nodes.inc()
                case LeaderCommitted():
                    self._leaders.inc()
                    self._skipped.inc(len(fact.skipped))
                    self._finalized.inc(len(fact.entries))
                case EquivocationDetected():
                    self._equivocations.inc()
                case (
                    TransactionsAdmitted()
                    | VertexStored()
                    | CheckpointMade()
                    | CheckpointCertified()
                ):
                    pass
                case _:
                    assert_never(fact)

    def on_notices(self, notices: Sequence[Notice]) -> None:
        """Count the peers' messages one engine step rejected."""
        for notice in notices:
            match notice:
                case MessageRejected(reason=reason, kind=kind):
                    self._messages_rejected.labels(reason=reason.value).inc()
                    if kind in VERTEX_MESSAGES:
                        self._vertices_rejected.labels(reason=reason.value).inc()
                case _:
                    assert_never(notice)

    def on_finality(self, latencies: Sequence[float]) -> None:
        """Transactions acknowledged here became final after ``latencies`` seconds."""
        for seconds in latencies:
            self._finality.observe(seconds)

    def on_submit(self, admitted: int, duplicates: int) -> None:
        """Submits were stored: ``admitted`` new transactions, ``duplicates`` known ones."""
        self._admitted.inc(admitted)
        self._duplicate.inc(duplicates)

    def on_submit_rejected(self, reason: Reason, transactions: int) -> None:
        """A submit request of ``transactions`` transactions was refused as a whole."""
        self._rejected.inc(transactions)
        self._submits_rejected.labels(reason=reason.value).inc()

    def on_statistics(self, stats: Statistics) -> None:
        """Copy the engine's positions and sizes into the gauges."""
        self._round.set(stats.round)
        self._highest_round.set(stats.highest_round)
        self._committed_round.set(stats.committed_round)
        self._pending.set(stats.pending)
        self._log_length.set(stats.log_length)
        self._dag_window.set(stats.dag_window)
        self._buffered.set(stats.buffered)
        self._peers.set(stats.peers)
        if stats.checkpoint is not None:
            self._checkpoint_certified.set(stats.checkpoint.number)
        if stats.buffer_dropped > self._buffer_dropped_seen:
            self._buffer_dropped.inc(stats.buffer_dropped - self._buffer_dropped_seen)
            self._buffer_dropped_seen = stats.buffer_dropped

    def on_peer_message(self, direction: str, kind: str, size: int) -> None:
        """A peer frame of ``size`` bytes carrying a ``kind`` message was sent or received."""
        self._peer_messages.labels(direction=direction, type=kind).inc()
        self._peer_bytes.labels(direction=direction, type=kind).inc(size)

    def on_handshake_failure(self, reason: str) -> None:
        """A peer handshake failed for ``reason``; one outside the known set (text a
        peer made up, say) is counted as ``unknown``, so peers cannot add series."""
        label = reason if reason in REFUSAL_REASONS else UNKNOWN_REFUSAL
        self._handshake_failures.labels(reason=label).inc()

    def on_tls_handshake(self, seconds: float) -> None:
        """A peer link's TLS handshake finished in ``seconds``."""
        self._tls_handshake.observe(seconds)

    def on_link_closed(self, reason: str) -> None:
        """An established peer link closed for ``reason``."""
        self._links_closed.labels(reason=reason).inc()

    def on_peer_ages(self, ages: Mapping[str, float]) -> None:
        """Seconds since each linked peer's last frame; peers not listed are removed."""
        for peer in self._aged_peers - ages.keys():
            self._last_message_age.remove(peer)
        self._aged_peers = set(ages)
        for peer, age in ages.items():
            self._last_message_age.labels(peer=peer).set(age)

    def on_quorum(self, able: bool, linked: int, since: float) -> None:
        """A validator's view of its quorum: whether ``linked`` validators (itself
        included) reach it, and the Unix time ``since`` when that last changed."""
        self._quorum.state = (able, linked, since)

    def on_sync_rejected(self, reason: Reason) -> None:
        """A peer's sync message was dropped for ``reason``."""
        self._messages_rejected.labels(reason=reason.value).inc()

    def on_sync_round(self, result: str) -> None:
        """A peer's anti-entropy summary was compared with ours."""
        self._sync_rounds.labels(result=result).inc()

    def on_sync_vertices(self, fetched: int, pushed: int) -> None:
        """Anti-entropy found vertices to fetch from a peer and to push to it."""
        self._sync_vertices.labels(direction="fetched").inc(fetched)
        self._sync_vertices.labels(direction="pushed").inc(pushed)

    def on_catchup_gap(self, rounds: int) -> None:
        """Rounds behind the most advanced peer."""
        self._catchup_gap.set(rounds)

    def on_state_sync(self, seconds: float) -> None:
        """A state sync ended, ``seconds`` after it began."""
        self._state_syncs.inc()
        self._state_sync_seconds.set(seconds)

    def on_pruned(self, counts: Mapping[str, int]) -> None:
        """The retention deleted ``counts`` rows, by kind."""
        for kind, count in counts.items():
            if count:
                self._pruned.labels(kind=kind).inc(count)

    def on_holdings(self, oldest_round: int, oldest_log_position: int) -> None:
        """What this node holds now, after a prune or at start."""
        self._oldest_round.set(oldest_round)
        self._oldest_log_position.set(oldest_log_position)

    def on_backfill_staged(self, entries: int) -> None:
        """``entries`` log entries below the base were fetched and checked."""
        self._backfill_entries.inc(entries)

    def on_backfill_base(self, position: int) -> None:
        """The log is held from ``position`` + 1 on (a segment landed, or at start)."""
        self._log_base.set(position)

    def on_store_commit(self, seconds: float) -> None:
        """One store commit took ``seconds``."""
        self._store_commit.observe(seconds)

    def on_stream_subscribers(self, count: int) -> None:
        """``count`` clients are subscribed to the log stream now."""
        self._stream_subscribers.set(count)

    def on_stream_sent(self, counts: Mapping[str, int], delay: float | None) -> None:
        """One write to a subscriber: ``counts`` events by kind; ``delay``, seconds
        since its oldest live entry became final (None: no live entry in it)."""
        for event, count in counts.items():
            self._stream_events.labels(event=event).inc(count)
        if delay is not None:
            self._stream_delay.observe(delay)

    def on_stream_dropped(self, reason: str) -> None:
        """The node dropped a subscriber (``slow_reader``, ``pruned``)."""
        self._stream_dropped.labels(reason=reason).inc()

    def on_http(self, method: str, route: str, status: int, seconds: float) -> None:
        """An HTTP request on ``route`` (a template) ended with ``status``."""
        key = (method, route, status)
        children = self._http_children.get(key)
        if children is None:  # first time: find the labelled series once, then reuse them
            label = method if method in HTTP_METHODS else "other"
            children = (
                self._http_requests.labels(method=label, route=route, status=str(status)),
                self._http_duration.labels(route=route),
            )
            if len(self._http_children) < _MAX_HTTP_SERIES:
                self._http_children[key] = children
        count, duration = children
        count.inc()
        duration.observe(seconds)

    def on_http_connections(self, count: int) -> None:
        """``count`` connections to the HTTP API are open."""
        self._http_connections.set(count)

    def on_http_connection_closed(self, reason: str) -> None:
        """The node closed an HTTP API connection on a limit (a timeout, or to make room)."""
        self._http_closed.labels(reason=reason).inc()

    def on_http_refused(self, code: str) -> None:
        """An HTTP request was refused with ``code`` before it reached a route."""
        self._http_refused.labels(code=code).inc()

    def on_accept_error(self, errno_name: str) -> None:
        """accept() on a listening socket failed with ``errno_name`` (e.g. EMFILE)."""
        self._accept_errors.labels(errno=errno_name).inc()


def _checkpoint_series(r: CollectorRegistry) -> tuple[Gauge, Counter, Gauge, Counter, Gauge]:
    """The series of checkpoints, state sync and backfill: the latest certified
    checkpoint, joins done, the last one's seconds, entries backfilled, the log's base."""
    return (
        *_join_series(r),
        Counter(
            "qudag_backfill_entries",
            "Log entries below the base fetched from peers and checked.",
            registry=r,
        ),
        Gauge(
            "qudag_log_base",
            "Log position up to which no entry is held here (0: the whole log).",
            registry=r,
        ),
    )


def _join_series(r: CollectorRegistry) -> tuple[Gauge, Counter, Gauge]:
    """The series of checkpoints and state sync: the latest certified checkpoint, joins
    done, and the last one's seconds."""
    return (
        Gauge(
            "qudag_checkpoint_certified_number",
            "Number of the latest checkpoint certified here (0: none yet).",
            registry=r,
        ),
        Counter("qudag_state_syncs", "Joins from a peer's certified checkpoint.", registry=r),
        Gauge("qudag_state_sync_seconds", "Seconds the last state sync took.", registry=r),
    )
