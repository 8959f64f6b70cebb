"""Events the engine emits; the pump drains them, persists, then acts on them."""

from __future__ import annotations

from dataclasses import dataclass

from qudag_node.core.certificate import Certificate
from qudag_node.core.errors import Reason
from qudag_node.core.evidence import Equivocation
from qudag_node.core.types import PeerId, Seq, TxId, VertexId
from qudag_node.core.vertex import Vertex


@dataclass(frozen=True, slots=True)
class TransactionsAdmitted:
    """New transactions entered the pending pool (persist them as pending)."""

    ids: tuple[TxId, ...]
    transactions: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class VertexStored:
    """A vertex to persist, not yet certified: one we proposed (``own``: its
    transactions were admitted here and are stored already), one we are about to vote
    for, or one that arrived certified (then :class:`VertexCertified` follows)."""

    vertex: Vertex
    own: bool


@dataclass(frozen=True, slots=True)
class VertexCertified:
    """A stored vertex got its certificate and joined the DAG."""

    vertex: VertexId
    round: int
    certificate: Certificate


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One finalized transaction: its log position and the running hash after it."""

    seq: Seq
    tx_id: TxId
    vertex: VertexId
    hash: bytes


@dataclass(frozen=True, slots=True)
class LeaderCommitted:
    """A leader committed; ``ordered`` vertices and ``entries`` joined the log.

    ``skipped`` lists the leader rounds passed over since the previous commit.
    """

    round: int
    leader: VertexId
    ordered: tuple[VertexId, ...]
    entries: tuple[LogEntry, ...]
    skipped: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class EquivocationDetected:
    """A validator signed two vertices for one round; keep the evidence."""

    evidence: Equivocation


@dataclass(frozen=True, slots=True)
class VerticesRequested:
    """A peer asks for certified vertices: answer from the store (after persisting)."""

    peer: PeerId
    ids: tuple[VertexId, ...]


@dataclass(frozen=True, slots=True)
class TransactionsOrphaned:
    """Our own certified vertices fell out of the window unordered: re-propose these."""

    ids: tuple[TxId, ...]


@dataclass(frozen=True, slots=True)
class TransactionsForwarded:
    """An observer forwarded client transactions: admit those the store does not hold
    with :meth:`~qudag_node.core.engine.Engine.submit_transactions`, as for a client."""

    peer: PeerId
    ids: tuple[TxId, ...]
    transactions: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class MessageRejected:
    """A peer's message broke a rule and was dropped.

    ``kind`` names the message type (``proposal``, ``vote``, ``certificate``,
    ``certified``, ``fetch``, ``transactions``) or is ``unknown``.
    """

    peer: PeerId
    reason: Reason
    detail: str
    kind: str = "unknown"


Event = (
    TransactionsAdmitted
    | VertexStored
    | VertexCertified
    | LeaderCommitted
    | EquivocationDetected
    | VerticesRequested
    | TransactionsOrphaned
    | TransactionsForwarded
    | MessageRejected
)
