"""An in-memory store for the simulation: what ``qudag_node.store.Store`` keeps, in dicts.

It applies an engine step's facts the way ``Store.persist`` does, answers the reads of
the pump (:class:`qudag_node.pump.PumpStore`) at once, without suspending, and
rebuilds a :class:`Snapshot` the way ``Store.load_snapshot`` does, so a simulated node
can crash and restart from it. ``tests/adapters/test_store_consensus.py`` feeds the
same facts to both and compares their snapshots, which keeps the two in step.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import assert_never

from qudag_node.core.certificate import Certificate
from qudag_node.core.checkpoint import Checkpoint
from qudag_node.core.checkpoints import KEEP, RestoredCheckpoint
from qudag_node.core.engine import Snapshot, StoredVertex
from qudag_node.core.events import (
    CheckpointCertified,
    CheckpointMade,
    EquivocationDetected,
    Fact,
    LeaderCommitted,
    LogEntry,
    TransactionsAdmitted,
    VertexCertified,
    VertexStored,
)
from qudag_node.core.evidence import Equivocation
from qudag_node.core.messages import CertifiedMessage, encode_message
from qudag_node.core.retention import CheckpointMark, Retention, checkpoint_to_keep
from qudag_node.core.types import NodeId, TxId, VertexId
from qudag_node.core.vertex import Vertex


@dataclass(slots=True)
class _Row:
    vertex: Vertex
    certificate: Certificate | None = None
    ordered: bool = False


@dataclass(slots=True)
class MemoryStore:
    """Durable state of one simulated node."""

    log_start: bytes
    transactions: dict[TxId, bytes] = field(default_factory=dict)
    unfinal: dict[TxId, None] = field(default_factory=dict)  # insertion-ordered set
    vertices: dict[VertexId, _Row] = field(default_factory=dict)
    log: list[LogEntry] = field(default_factory=list)
    committed_round: int = 0
    evidence: list[Equivocation] = field(default_factory=list)
    checkpoints: dict[int, Checkpoint] = field(default_factory=dict)
    certificates: dict[int, Certificate] = field(default_factory=dict)  # certified checkpoints
    #: positions up to ``log_base`` are not held (the node joined from a checkpoint),
    #: ``base_hash`` is the running hash there
    log_base: int = 0
    base_hash: bytes | None = None
    #: ids of the final transactions whose log entries the retention pruned
    pruned_final: set[TxId] = field(default_factory=set)
    #: vertices the retention pruned
    pruned_vertices: int = 0

    def persist(self, facts: Iterable[Fact]) -> None:
        """Apply one engine step's facts."""
        for fact in facts:
            match fact:
                case TransactionsAdmitted(ids, transactions):
                    self._add_transactions(ids, transactions)
                case VertexStored(vertex):
                    self.vertices.setdefault(vertex.id, _Row(vertex))
                    self._add_transactions(vertex.tx_ids, vertex.transactions)
                case VertexCertified(vid, _, certificate):
                    self.vertices[vid].certificate = certificate
                case LeaderCommitted():
                    for entry in fact.entries:
                        self.log.append(entry)
                        self.unfinal.pop(entry.tx_id, None)
                    for vid in fact.ordered:
                        self.vertices[vid].ordered = True
                    self.committed_round = fact.round
                case EquivocationDetected(evidence):
                    self.evidence.append(evidence)
                case CheckpointMade(checkpoint):
                    self.checkpoints.setdefault(checkpoint.number, checkpoint)
                case CheckpointCertified(number, certificate):
                    if number in self.checkpoints:  # not pruned meanwhile
                        self.certificates.setdefault(number, certificate)
                case _:
                    assert_never(fact)

    def prune(self, retention: Retention, gc_depth: int) -> None:
        """Delete what ``retention`` no longer keeps, as the node's pruner does
        (``qudag_node/retention.py``): below the oldest certified checkpoint it keeps,
        the vertices of rounds under its window, the log entries up to its position and
        their transactions (but those a held vertex carries), and older checkpoints."""
        marks = [
            CheckpointMark(n, cp.round, cp.log_length, cp.timestamp_ms)
            for n, cp in sorted(self.checkpoints.items())
            if n in self.certificates
        ]
        keep = checkpoint_to_keep(marks, retention)
        if keep is None or keep.log_length < self.log_base:
            return
        floor = keep.round - gc_depth
        dropped = [vid for vid, row in self.vertices.items() if row.vertex.round < floor]
        for vid in dropped:
            del self.vertices[vid]
        self.pruned_vertices += len(dropped)
        carried = {i for row in self.vertices.values() for i in row.vertex.tx_ids}
        gone = [e for e in self.log if e.seq <= keep.log_length]
        if gone:
            self.log = self.log[len(gone) :]
            self.log_base, self.base_hash = keep.log_length, gone[-1].hash
        for entry in gone:
            self.pruned_final.add(entry.tx_id)
            if entry.tx_id not in carried:
                self.transactions.pop(entry.tx_id, None)
        for number in [n for n in self.checkpoints if n < keep.number]:
            del self.checkpoints[number]
            self.certificates.pop(number, None)

    def _add_transactions(self, ids: Iterable[TxId], txs: Iterable[bytes]) -> None:
        for i, tx in zip(ids, txs, strict=True):
            if i not in self.transactions:
                self.transactions[i] = tx
                self.unfinal[i] = None

    @property
    def log_hash(self) -> bytes:
        """The running hash after the last entry."""
        if self.log:
            return self.log[-1].hash
        return self.log_start if self.base_hash is None else self.base_hash

    async def known_ids(self, ids: Sequence[TxId]) -> set[TxId]:
        """Which of ``ids`` are stored."""
        return {i for i in ids if i in self.transactions}

    async def transactions_data(self, ids: Sequence[TxId]) -> list[tuple[TxId, bytes]]:
        """Stored, not final transactions among ``ids``, with their bytes, in ``ids`` order."""
        return [(i, self.transactions[i]) for i in ids if i in self.unfinal]

    async def certified_messages(self, ids: Sequence[VertexId]) -> AsyncIterator[bytes]:
        """CERTIFIED messages for the stored, certified vertices among ``ids``, in order."""
        for vid in ids:
            row = self.vertices.get(vid)
            if row is not None and row.certificate is not None:
                yield encode_message(CertifiedMessage(row.vertex, row.certificate))

    def snapshot(self, own_key: NodeId, gc_depth: int) -> Snapshot:
        """The state an engine restarts from."""
        floor = max(0, self.committed_round - gc_depth)
        rows = sorted(
            (r for r in self.vertices.values() if r.vertex.round >= floor),
            key=lambda r: r.vertex.round,
        )
        own = [r for r in self.vertices.values() if r.vertex.author == own_key]
        latest = max(own, key=lambda r: r.vertex.round, default=None)
        return Snapshot(
            log_length=self.log_base + len(self.log),
            log_hash=self.log_hash,
            committed_round=self.committed_round,
            vertices=tuple(
                StoredVertex(
                    r.vertex.id,
                    r.vertex.header,
                    r.vertex.header_bytes,
                    r.vertex.signature,
                    r.vertex.tx_ids,
                    r.ordered,
                    r.certificate,
                )
                for r in rows
            ),
            pending=tuple((i, self.transactions[i]) for i in self.unfinal),
            own_proposal=latest.vertex
            if latest is not None and latest.certificate is None
            else None,
            equivocations=tuple(
                sorted({(e.round, e.author) for e in self.evidence if e.round >= floor})
            ),
            checkpoints=tuple(
                RestoredCheckpoint(self.checkpoints[n], n in self.certificates)
                for n in sorted(self.checkpoints)[-KEEP:]
            ),
        )
