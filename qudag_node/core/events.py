"""What one engine step produces, in three kinds, handed over by
:meth:`~qudag_node.core.engine.Engine.take_output` as one :class:`StepOutput`.

*Facts* are what the step changed that must be durable before anything it sends
leaves (persist before announce): transactions admitted, vertices stored and
certified, leaders committed, equivocation evidence, checkpoints made and certified.
*Effects* are what the step asks its driver to do: messages to send, a peer's fetch to
answer from the store, orphaned transactions to read back and requeue, forwarded
transactions to admit. *Notices* are only reported (logged and counted): a peer's
message that was rejected.
"""

from __future__ import annotations

from dataclasses import dataclass

from qudag_node.core.certificate import Certificate
from qudag_node.core.checkpoint import Checkpoint
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
class CheckpointMade:
    """This node computed ``checkpoint`` after a commit; ``window`` lists its window's
    vertex ids (keep both, not certified yet)."""

    checkpoint: Checkpoint
    window: tuple[VertexId, ...]


@dataclass(frozen=True, slots=True)
class CheckpointCertified:
    """A quorum of validators signed the checkpoint this node computed for ``number``."""

    number: int
    certificate: Certificate


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
    ``certified``, ``fetch``, ``transactions``, ``checkpoint_signature``) or is
    ``unknown``.
    """

    peer: PeerId
    reason: Reason
    detail: str
    kind: str = "unknown"


Fact = (
    TransactionsAdmitted
    | VertexStored
    | VertexCertified
    | LeaderCommitted
    | EquivocationDetected
    | CheckpointMade
    | CheckpointCertified
)
"""What a step changed that must be persisted before the step's messages leave."""

Effect = VerticesRequested | TransactionsOrphaned | TransactionsForwarded
"""What a step asks its driver to do with the store, besides sending messages."""

Notice = MessageRejected
"""What a step only reports."""

#: A message to send: the peer and the encoded bytes.
Outgoing = tuple[PeerId, bytes]


@dataclass(frozen=True, slots=True)
class StepOutput:
    """Everything the engine produced since the last hand-over, each kind in order.

    ``messages`` are effects too, kept as plain (peer, bytes) pairs since they are the
    bulk of every step; like the other effects they are acted on only once ``facts``
    are durable.
    """

    facts: tuple[Fact, ...] = ()
    effects: tuple[Effect, ...] = ()
    messages: tuple[Outgoing, ...] = ()
    notices: tuple[Notice, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.facts or self.effects or self.messages or self.notices)
