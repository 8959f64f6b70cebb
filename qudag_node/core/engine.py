"""The node's state machine: transactions in, vertices and finalized log entries out.

Inputs are method calls that take the current time; outputs are drained by the
caller (the pump in ``node.py``): :meth:`Engine.next_event` for what to persist and
report, :meth:`Engine.messages_to_send` for what to send, :meth:`Engine.get_timer`
for when to call :meth:`Engine.handle_timer` next. Peer faults become
:class:`~qudag_node.core.events.MessageRejected` events; they never raise.
"""

from __future__ import annotations

import enum
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass

from qudag_node.core.consensus import CommittedLeader, Consensus
from qudag_node.core.crypto import Signer, extend_log_hash, log_hash_start
from qudag_node.core.dag import Dag, DagVertex
from qudag_node.core.errors import InputRejected, Reason, UsageError
from qudag_node.core.events import (
    Event,
    LeaderCommitted,
    LogEntry,
    MessageRejected,
    TransactionsAdmitted,
    VertexAdded,
)
from qudag_node.core.genesis import Genesis
from qudag_node.core.messages import VertexMessage, decode_message, encode_message
from qudag_node.core.params import Params
from qudag_node.core.rules import check_batch, check_vertex
from qudag_node.core.types import PeerId, Seq, TxId, VertexId
from qudag_node.core.vertex import Vertex, VertexHeader, make_vertex


class Role(enum.Enum):
    """A validator proposes vertices; an observer only follows."""

    VALIDATOR = "validator"
    OBSERVER = "observer"


@dataclass(frozen=True, slots=True)
class StoredVertex:
    """A vertex as the store returns it at start-up."""

    id: VertexId
    header: VertexHeader
    tx_ids: tuple[TxId, ...]
    ordered: bool


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Durable state the engine resumes from after a restart."""

    log_length: int
    log_hash: bytes
    committed_round: int
    vertices: tuple[StoredVertex, ...]
    pending: tuple[tuple[TxId, bytes], ...]


@dataclass(frozen=True, slots=True)
class SubmitResult:
    """Which submitted transactions are new and which were already known."""

    admitted: tuple[TxId, ...]
    duplicates: tuple[TxId, ...]


@dataclass(frozen=True, slots=True)
class Statistics:
    """A read-only summary of the engine's state."""

    role: Role
    round: int
    highest_round: int
    committed_round: int
    pending: int
    in_flight: int
    dag_window: int
    log_length: int
    log_hash: bytes


class Engine:
    """One node's consensus engine. Exactly one task may drive it."""

    def __init__(
        self,
        genesis: Genesis,
        params: Params,
        signer: Signer,
        snapshot: Snapshot | None = None,
    ) -> None:
        self._genesis = genesis
        self._params = params
        self._signer = signer
        self.role = (
            Role.VALIDATOR if genesis.index_of(signer.public_key) is not None else Role.OBSERVER
        )
        self._dag = Dag()
        self._consensus = Consensus(genesis)
        self._pending: OrderedDict[TxId, bytes] = OrderedDict()
        self._in_flight: dict[TxId, VertexId] = {}  # included, not final: id -> carrier
        self._events: deque[Event] = deque()
        self._outbox: list[tuple[PeerId, bytes]] = []
        self._peers: set[PeerId] = set()
        self._own_round = 0
        self._log_length = 0
        self._log_hash = log_hash_start(genesis.hash)
        self._last_proposal_at: float | None = None
        self._seen_time = False  # no input has told us the time yet
        self._ready_round: int | None = None  # highest round with a quorum, if >= ours
        self._ready_at = 0.0
        if snapshot is not None:
            self._restore(snapshot)

    # ----------------------------------------------------------------- inputs

    def submit_transactions(
        self, ids: Sequence[TxId], transactions: Sequence[bytes], now: float
    ) -> SubmitResult:
        """Admit a client batch, all or nothing; ``ids`` must be ``tx_ids(transactions)``.

        Raises :class:`InputRejected` for a bad transaction or a full pool, in which
        case nothing was admitted.
        """
        if len(ids) != len(transactions):
            raise UsageError("ids and transactions differ in length")
        check_batch(transactions, self._params)
        new: dict[TxId, bytes] = {}
        duplicates: list[TxId] = []
        for i, tx in zip(ids, transactions, strict=True):
            if i in new or i in self._pending or i in self._in_flight:
                duplicates.append(i)
            else:
                new[i] = tx
        if len(self._pending) + len(new) > self._params.max_pending:
            raise InputRejected(
                Reason.POOL_FULL,
                f"{len(self._pending)} transactions pending, limit {self._params.max_pending}",
            )
        if new:
            self._pending.update(new)
            self._events.append(TransactionsAdmitted(tuple(new), tuple(new.values())))
        self._refresh(now)
        return SubmitResult(tuple(new), tuple(duplicates))

    def receive_message(self, peer: PeerId, data: bytes, now: float) -> None:
        """Handle bytes from a peer; a bad message becomes a ``MessageRejected`` event."""
        try:
            message = decode_message(data, self._params)
            self._on_vertex(message.vertex, now)
        except InputRejected as e:
            self._events.append(MessageRejected(peer, e.reason, e.message))
        self._refresh(now)

    def peer_connected(self, peer: PeerId) -> None:
        """A link to ``peer`` is up: our new vertices will be sent to it."""
        self._peers.add(peer)

    def peer_disconnected(self, peer: PeerId) -> None:
        """The link to ``peer`` is gone."""
        self._peers.discard(peer)

    def handle_timer(self, now: float) -> None:
        """Called at (or after) the time :meth:`get_timer` named."""
        self._refresh(now)

    # ---------------------------------------------------------------- outputs

    def next_event(self) -> Event | None:
        """The oldest undrained event, or None."""
        return self._events.popleft() if self._events else None

    def messages_to_send(self) -> list[tuple[PeerId, bytes]]:
        """Messages queued since the last call, as (peer, bytes)."""
        out, self._outbox = self._outbox, []
        return out

    def carrier(self, tx_id: TxId) -> VertexId | None:
        """The vertex carrying ``tx_id`` while it is included but not final, else None."""
        return self._in_flight.get(tx_id)

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` should next be called, or None for never.

        Before the first input the engine has not seen the time yet and asks to be
        called at once (0.0).
        """
        if not self._seen_time and self.role is Role.VALIDATOR:
            return 0.0
        return self._proposal_time()

    def statistics(self) -> Statistics:
        """Current counters and positions."""
        return Statistics(
            role=self.role,
            round=self._own_round,
            highest_round=max(self._dag.highest_round(), self._own_round),
            committed_round=self._consensus.committed_round,
            pending=len(self._pending),
            in_flight=len(self._in_flight),
            dag_window=len(self._dag),
            log_length=self._log_length,
            log_hash=self._log_hash,
        )

    # -------------------------------------------------------------- internals

    def _restore(self, snapshot: Snapshot) -> None:
        self._log_length = snapshot.log_length
        self._log_hash = snapshot.log_hash
        self._consensus.committed_round = snapshot.committed_round
        for sv in sorted(snapshot.vertices, key=lambda s: s.header.round):
            h = sv.header
            self._dag.add(
                DagVertex(sv.id, h.round, h.author, h.parents, h.tx_count), sv.tx_ids, sv.ordered
            )
            if not sv.ordered:
                self._carry(sv.tx_ids, sv.id)
            if h.author == self._signer.public_key:
                self._own_round = max(self._own_round, h.round)
        if snapshot.vertices:
            self._dag.prune_below(min(s.header.round for s in snapshot.vertices))
        for i, tx in snapshot.pending:
            if i not in self._in_flight:
                self._pending[i] = tx

    def _carry(self, ids: Sequence[TxId], vertex_id: VertexId) -> None:
        for i in ids:
            self._in_flight.setdefault(i, vertex_id)

    def _release(self, ids: Sequence[TxId]) -> None:
        for i in ids:
            self._in_flight.pop(i, None)

    def _on_vertex(self, vertex: Vertex, now: float) -> None:
        if vertex.id in self._dag:
            return  # a copy of what we hold: harmless
        if vertex.round < self._dag.floor:
            raise InputRejected(Reason.STALE_ROUND, f"round {vertex.round} is below the window")
        check_vertex(vertex, self._genesis, self._params, now)
        if self._dag.at(vertex.round, vertex.author) is not None:
            raise InputRejected(Reason.EQUIVOCATION, f"second vertex for round {vertex.round}")
        authors = set()
        for pid in vertex.parents:
            parent = self._dag.get(pid)
            if parent is None:
                raise InputRejected(Reason.BAD_PARENT, f"unknown parent {pid.hex()[:16]}")
            if parent.round != vertex.round - 1:
                raise InputRejected(Reason.BAD_PARENT, "parent from the wrong round")
            authors.add(parent.author)
        if len(authors) != len(vertex.parents):
            raise InputRejected(Reason.BAD_PARENT, "two parents from one validator")
        self._insert(vertex, own=False)

    def _insert(self, vertex: Vertex, own: bool) -> None:
        dv = DagVertex(vertex.id, vertex.round, vertex.author, vertex.parents, len(vertex.tx_ids))
        self._dag.add(dv, vertex.tx_ids, ordered=False)
        self._carry(vertex.tx_ids, vertex.id)
        if not own:
            for i in vertex.tx_ids:
                self._pending.pop(i, None)
        self._events.append(VertexAdded(vertex, own))
        for committed in self._consensus.on_vertex_added(self._dag, dv):
            self._append_to_log(committed)

    def _append_to_log(self, committed: CommittedLeader) -> None:
        ids: list[TxId] = []
        carriers: list[VertexId] = []
        seen: set[TxId] = set()
        for dv, tx_ids in committed.ordered:
            self._release(tx_ids)
            for i in tx_ids:
                if i not in seen:
                    seen.add(i)
                    ids.append(i)
                    carriers.append(dv.id)
        hashes = extend_log_hash(self._log_hash, ids)
        start = self._log_length
        entries = tuple(
            LogEntry(Seq(start + k + 1), i, vid, h)
            for k, (i, vid, h) in enumerate(zip(ids, carriers, hashes, strict=True))
        )
        if hashes:
            self._log_hash = hashes[-1]
            self._log_length += len(hashes)
        self._events.append(
            LeaderCommitted(
                committed.leader.round,
                committed.leader.id,
                tuple(dv.id for dv, _ in committed.ordered),
                entries,
            )
        )
        floor = self._consensus.committed_round - self._params.gc_depth
        if floor > self._dag.floor:
            self._release(self._dag.prune_below(floor))

    def _quorum_round(self) -> int | None:
        """The highest round, at or above our own, that holds a quorum (0 is genesis)."""
        top = max(self._dag.highest_round(), self._own_round)
        for r in range(top, self._own_round - 1, -1):
            if r == 0 or len(self._dag.round(r)) >= self._genesis.quorum:
                return r
        return None

    def _refresh(self, now: float) -> None:
        self._seen_time = True
        self._update_ready(now)
        when = self._proposal_time()
        if when is not None and when <= now and self._ready_round is not None:
            self._propose(self._ready_round + 1, now)
            self._update_ready(now)

    def _update_ready(self, now: float) -> None:
        ready = self._quorum_round()
        if ready != self._ready_round:
            self._ready_round = ready
            if ready is not None:
                self._ready_at = now

    def _has_work(self) -> bool:
        return bool(self._pending) or self._dag.has_unordered_payload()

    def _proposal_time(self) -> float | None:
        if self.role is not Role.VALIDATOR or self._ready_round is None:
            return None
        r = self._ready_round
        when = self._ready_at
        if self._last_proposal_at is not None:
            when = max(when, self._last_proposal_at + self._params.min_round_interval)
        if r >= 2 and r % 2 == 0 and self._consensus.leader_vertex(self._dag, r) is None:
            when = max(when, self._ready_at + self._params.leader_timeout)
        if not self._has_work():
            idle_since = (
                self._ready_at if self._last_proposal_at is None else self._last_proposal_at
            )
            when = max(when, idle_since + self._params.heartbeat_interval)
        return when

    def _take_batch(self) -> tuple[list[TxId], list[bytes]]:
        ids: list[TxId] = []
        txs: list[bytes] = []
        size = 0
        limit_n, limit_bytes = self._params.max_vertex_txs, self._params.max_vertex_bytes
        while self._pending and len(ids) < limit_n:
            i, tx = next(iter(self._pending.items()))
            if size + len(tx) > limit_bytes:
                break
            del self._pending[i]
            ids.append(i)
            txs.append(tx)
            size += len(tx)
        return ids, txs

    def _propose(self, round_: int, now: float) -> None:
        if round_ <= self._own_round:
            raise UsageError(f"round {round_} proposed again")
        parents = [v.id for v in self._dag.round(round_ - 1).values()] if round_ > 1 else []
        ids, txs = self._take_batch()
        vertex = make_vertex(
            self._signer, self._genesis.hash, round_, int(now * 1000), parents, txs, ids
        )
        self._own_round = round_
        self._last_proposal_at = now
        self._insert(vertex, own=True)
        if self._peers:
            data = encode_message(VertexMessage(vertex))
            self._outbox.extend((p, data) for p in sorted(self._peers))
