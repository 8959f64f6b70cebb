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
                    self.certificates.setdefault(number, certificate)
                case _:
                    assert_never(fact)

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
