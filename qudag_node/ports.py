"""Interfaces between the adapters, and the plain records that cross them.

The HTTP API sees the node only through :class:`NodeApi`, and reads its state through
the frozen views defined here (:class:`NodeStatus`, :class:`PeerView`), which it turns
into JSON; the store returns the records defined here. Both sides import this module,
never each other.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from qudag_node.core.checkpoint import CertifiedCheckpoint
from qudag_node.core.genesis import Genesis
from qudag_node.core.types import NodeId, PublicKey, TxId, VertexId


class TxState(enum.Enum):
    """Where a transaction stands."""

    PENDING = "pending"  # stored, waiting for a vertex
    INCLUDED = "included"  # carried by a vertex that is not ordered yet
    FINAL = "final"  # has a position in the finalized log


class StorageFull(Exception):
    """A write refused for lack of disk space (HTTP 507 ``insufficient_storage``):
    nothing of it was stored or acknowledged. The node's fault, not the client's;
    writes resume once space is freed."""


@dataclass(frozen=True, slots=True)
class HeldRange:
    """The oldest round and log position a node still holds."""

    oldest_round: int
    oldest_log_position: int


@dataclass(frozen=True, slots=True)
class TxRecord:
    """A stored transaction's status."""

    id: TxId
    state: TxState
    vertex: VertexId | None
    seq: int | None
    size: int


@dataclass(frozen=True, slots=True)
class VertexRecord:
    """A stored vertex, without its transaction bytes."""

    id: VertexId
    round: int
    author: NodeId
    timestamp_ms: int
    parents: tuple[VertexId, ...]
    tx_ids: tuple[TxId, ...]
    header: bytes  # the canonical header: what the vertex id hashes
    scheme: int
    signature: bytes
    ordered: bool
    certificate: bytes | None  # None until a quorum of validators voted for it


@dataclass(frozen=True, slots=True)
class EvidenceRecord:
    """Proof that a validator signed two vertices for one round."""

    author: NodeId
    round: int
    data: bytes  # two signed headers; format in docs/protocol.md


class Pruned(Exception):
    """What was asked for is older than what this node holds (HTTP 410 ``pruned``): its
    retention pruned it, or the node joined from a checkpoint after it; ``base`` is the
    last log position not held."""

    def __init__(self, what: str, base: int) -> None:
        super().__init__(f"{what} is not held: this node holds the log from position {base + 1}")
        self.base = base


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One finalized log entry."""

    seq: int
    tx_id: TxId
    vertex: VertexId | None  # None once the DAG's retention pruned the vertex
    hash: bytes


@dataclass(frozen=True, slots=True)
class DagVertexRecord:
    """A stored vertex as the DAG's picture needs it: place, links and state."""

    id: VertexId
    round: int
    author: NodeId
    parents: tuple[VertexId, ...]
    certified: bool
    ordered: bool


@dataclass(frozen=True, slots=True)
class DagWindow:
    """The stored vertices of the last rounds, and which of them are committed leaders
    (highest round first)."""

    vertices: tuple[DagVertexRecord, ...]
    committed_leaders: tuple[VertexId, ...]


@dataclass(frozen=True, slots=True)
class CheckpointRecord:
    """A certified checkpoint held here, and the ids of its window's vertices."""

    certified: CertifiedCheckpoint
    window: tuple[VertexId, ...]


@dataclass(frozen=True, slots=True)
class SubmitReceipt:
    """What a submit stored: every id, and which were already known."""

    ids: tuple[TxId, ...]
    duplicates: int


@dataclass(frozen=True, slots=True)
class Check:
    """One readiness or liveness condition."""

    name: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """Who the node is: its name, software, role and key, and how long it has run."""

    id: str
    version: str
    role: str  # "validator" or "observer"
    node_id: NodeId
    public_key: PublicKey
    uptime_seconds: float
    platform: Mapping[str, str]  # where it runs (Fly's region, machine, ...)
    peer_transport: str  # "tls" or "plain"
    openssl: str  # the OpenSSL the TLS links use


@dataclass(frozen=True, slots=True)
class ValidatorInfo:
    """One validator of the genesis."""

    name: str
    node_id: NodeId
    public_key: PublicKey


@dataclass(frozen=True, slots=True)
class NetworkInfo:
    """The network the node belongs to, as its genesis defines it."""

    id: str
    mode: str
    genesis: bytes  # the genesis hash
    scheme: str  # the signature scheme's name
    validators: tuple[ValidatorInfo, ...]
    f: int
    quorum: int


@dataclass(frozen=True, slots=True)
class DagInfo:
    """The node's view of the DAG."""

    round: int
    highest_round: int
    vertices: int  # stored, over the node's whole life
    committed_round: int
    window: int
    buffered: int
    buffer_dropped: int
    fetching: int


@dataclass(frozen=True, slots=True)
class LogInfo:
    """The head of the finalized log: its length and running hash."""

    length: int
    hash: bytes


@dataclass(frozen=True, slots=True)
class CheckpointInfo:
    """The latest checkpoint certified here: its number, round and log length."""

    number: int
    round: int
    log_length: int


@dataclass(frozen=True, slots=True)
class TransactionsInfo:
    """Transactions not final yet."""

    pending: int
    in_flight: int


@dataclass(frozen=True, slots=True)
class QuorumInfo:
    """Whether a validator links to enough validators (itself included) to finalize."""

    can_finalize: bool
    validators_linked: int
    needed: int
    since: datetime  # the last change, timezone-aware
    for_seconds: float


@dataclass(frozen=True, slots=True)
class P2pInfo:
    """The peer links: how many peers, the peer port, and a validator's quorum."""

    peers: int
    port: int | None  # None when the node has no peer port
    quorum: QuorumInfo | None  # None for an observer


@dataclass(frozen=True, slots=True)
class StateSyncInfo:
    """Joining from a peer's certified checkpoint: allowed, under way, done."""

    enabled: bool
    active: bool
    done: int
    last_seconds: float | None  # None before any


@dataclass(frozen=True, slots=True)
class BackfillInfo:
    """Fetching the log before a joined checkpoint: allowed, under way, where."""

    enabled: bool
    active: bool
    base: int  # the log is held from base + 1 on
    entries: int  # backfilled since the start


@dataclass(frozen=True, slots=True)
class SyncInfo:
    """Whether the node is catching up, and how far behind its peers it is."""

    catching_up: bool
    gap_rounds: int | None  # None before any peer told its position
    in_step: bool
    detail: str
    state_sync: StateSyncInfo
    backfill: BackfillInfo


@dataclass(frozen=True, slots=True)
class RetentionInfo:
    """How long final data is kept (the settings' text), and what is held now."""

    dag: str
    transactions: str
    held: HeldRange


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """The node's status, as ``/api/v1/status`` shows it."""

    node: NodeInfo
    network: NetworkInfo
    dag: DagInfo
    log: LogInfo
    transactions: TransactionsInfo
    p2p: P2pInfo
    sync: SyncInfo
    checkpoint: CheckpointInfo | None  # the latest certified here; None until one is
    retention: RetentionInfo


@dataclass(frozen=True, slots=True)
class PeerPosition:
    """Where a linked peer last told us it stands."""

    highest_round: int
    committed_round: int
    log_length: int


@dataclass(frozen=True, slots=True)
class PeerTls:
    """The TLS session of a link: version, cipher suite, and key-exchange group where
    the Python in use can tell it (else None)."""

    version: str
    cipher: str
    group: str | None


@dataclass(frozen=True, slots=True)
class PeerView:
    """One peer or candidate address, as ``/api/v1/peers`` shows it."""

    name: str | None
    node_id: str | None
    address: str
    role: str | None
    state: str
    direction: str | None
    last_seen_seconds: float | None
    failures: int
    last_error: str | None
    position: PeerPosition | None = None  # connected peers that sent their position
    transport: str | None = None  # "tls" or "plain", for a connected peer
    tls: PeerTls | None = None  # the session of a TLS link


class NodeApi(Protocol):
    """What the HTTP API may ask of the node."""

    async def submit(self, transactions: Sequence[bytes]) -> SubmitReceipt:
        """Store a batch durably, then return; raises ``InputRejected`` on bad input."""
        ...

    async def wait_final(self, ids: Sequence[TxId], timeout: float) -> bool:
        """True once every id is final; False when ``timeout`` passes first."""
        ...

    async def transaction(self, tx_id: TxId) -> TxRecord | None:
        """A transaction's status, or None when unknown."""
        ...

    async def vertex(self, vertex_id: VertexId) -> VertexRecord | None:
        """A stored vertex, or None when unknown."""
        ...

    async def log(self, start: int, limit: int) -> list[LogRecord]:
        """Finalized entries with ``seq >= start``, in order, at most ``limit``."""
        ...

    async def dag(self, rounds: int) -> DagWindow:
        """The stored vertices of the last ``rounds`` rounds, and the committed leaders."""
        ...

    async def evidence(self, limit: int) -> list[EvidenceRecord]:
        """Equivocation evidence held, most recent rounds first, at most ``limit``."""
        ...

    async def checkpoint(self, number: int | None) -> CheckpointRecord | None:
        """Certified checkpoint ``number`` (None: the latest), or None when not held."""
        ...

    def status(self) -> NodeStatus:
        """The node's status now."""
        ...

    def genesis(self) -> Genesis:
        """The network's genesis."""
        ...

    def peers(self) -> list[PeerView]:
        """Each linked peer and each candidate peer address."""
        ...

    async def liveness(self) -> list[Check]:
        """Checks that the event loop and the database answer."""
        ...

    def readiness(self) -> list[Check]:
        """Checks that decide whether the node should get traffic."""
        ...
