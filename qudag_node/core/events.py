"""Events the engine emits; the pump drains them, persists, then acts on them."""

from __future__ import annotations

from dataclasses import dataclass

from qudag_node.core.errors import Reason
from qudag_node.core.types import PeerId, Seq, TxId, VertexId
from qudag_node.core.vertex import Vertex


@dataclass(frozen=True, slots=True)
class TransactionsAdmitted:
    """New transactions entered the pending pool (persist them as pending)."""

    ids: tuple[TxId, ...]
    transactions: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class VertexAdded:
    """A vertex joined the DAG (persist it; its transactions are now included)."""

    vertex: Vertex
    own: bool


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One finalized transaction: its log position and the running hash after it."""

    seq: Seq
    tx_id: TxId
    vertex: VertexId
    hash: bytes


@dataclass(frozen=True, slots=True)
class LeaderCommitted:
    """A leader committed; ``ordered`` vertices and ``entries`` joined the log."""

    round: int
    leader: VertexId
    ordered: tuple[VertexId, ...]
    entries: tuple[LogEntry, ...]


@dataclass(frozen=True, slots=True)
class MessageRejected:
    """A peer's message broke a rule and was dropped."""

    peer: PeerId
    reason: Reason
    detail: str


Event = TransactionsAdmitted | VertexAdded | LeaderCommitted | MessageRejected
