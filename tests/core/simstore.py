"""An in-memory store for the simulation: what ``qudag_node.store.Store`` keeps, in dicts.

It applies drained engine events the way ``Store.persist`` does and rebuilds a
:class:`Snapshot` the way ``Store.load_snapshot`` does, so a simulated node can crash
and restart from it. ``tests/adapters/test_store_consensus.py`` feeds the same event
stream to both and compares their snapshots, which keeps the two in step.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from qudag_node.core.certificate import Certificate
from qudag_node.core.engine import Snapshot, StoredVertex
from qudag_node.core.events import (
    EquivocationDetected,
    Event,
    LeaderCommitted,
    LogEntry,
    TransactionsAdmitted,
    VertexCertified,
    VertexStored,
)
from qudag_node.core.evidence import Equivocation
from qudag_node.core.messages import CertifiedMessage, encode_message
from qudag_node.core.types import PublicKey, TxId, VertexId
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

    def persist(self, events: Iterable[Event]) -> None:
        """Apply one engine step's events."""
        for ev in events:
            if isinstance(ev, TransactionsAdmitted):
                self._add_transactions(ev.ids, ev.transactions)
            elif isinstance(ev, VertexStored):
                self.vertices.setdefault(ev.vertex.id, _Row(ev.vertex))
                self._add_transactions(ev.vertex.tx_ids, ev.vertex.transactions)
            elif isinstance(ev, VertexCertified):
                self.vertices[ev.vertex].certificate = ev.certificate
            elif isinstance(ev, LeaderCommitted):
                for entry in ev.entries:
                    self.log.append(entry)
                    self.unfinal.pop(entry.tx_id, None)
                for vid in ev.ordered:
                    self.vertices[vid].ordered = True
                self.committed_round = ev.round
            elif isinstance(ev, EquivocationDetected):
                self.evidence.append(ev.evidence)

    def _add_transactions(self, ids: Iterable[TxId], txs: Iterable[bytes]) -> None:
        for i, tx in zip(ids, txs, strict=True):
            if i not in self.transactions:
                self.transactions[i] = tx
                self.unfinal[i] = None

    @property
    def log_hash(self) -> bytes:
        """The running hash after the last entry."""
        return self.log[-1].hash if self.log else self.log_start

    def certified(self, vid: VertexId) -> bytes | None:
        """A CERTIFIED message for a stored, certified vertex, else None."""
        row = self.vertices.get(vid)
        if row is None or row.certificate is None:
            return None
        return encode_message(CertifiedMessage(row.vertex, row.certificate))

    def snapshot(self, own_key: PublicKey, gc_depth: int) -> Snapshot:
        """The state an engine restarts from."""
        floor = max(0, self.committed_round - gc_depth)
        rows = sorted(
            (r for r in self.vertices.values() if r.vertex.round >= floor),
            key=lambda r: r.vertex.round,
        )
        own = [r for r in self.vertices.values() if r.vertex.author == own_key]
        latest = max(own, key=lambda r: r.vertex.round, default=None)
        return Snapshot(
            log_length=len(self.log),
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
        )
