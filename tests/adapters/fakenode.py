"""A fake of the API's port (:class:`~qudag_node.ports.NodeApi`): the node's state in
plain attributes a test sets, and the calls the API made, for testing the routes
without a node, a database or a peer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from qudag_node import __version__
from qudag_node.core.crypto import Scheme, Signer, tx_ids
from qudag_node.core.genesis import Genesis, Validator
from qudag_node.core.types import TxId, VertexId
from qudag_node.ports import (
    BackfillInfo,
    Check,
    CheckpointInfo,
    CheckpointRecord,
    DagInfo,
    DagWindow,
    EvidenceRecord,
    HeldRange,
    LogInfo,
    LogRecord,
    NetworkInfo,
    NodeInfo,
    NodeStatus,
    P2pInfo,
    PeerView,
    Pruned,
    QuorumInfo,
    RetentionInfo,
    StateSyncInfo,
    SubmitReceipt,
    SyncInfo,
    TransactionsInfo,
    TxRecord,
    TxState,
    ValidatorInfo,
    VertexRecord,
)

#: The two validators of the fake's network: composite keys made from fixed seeds.
SIGNER_A = Signer(bytes(range(64)))
SIGNER_B = Signer(bytes(range(64, 128)))
KEY_A, KEY_B = SIGNER_A.public_key, SIGNER_B.public_key
ID_A, ID_B = SIGNER_A.node_id, SIGNER_B.node_id
GENESIS = Genesis(
    "testnet", (Validator("v1", KEY_A), Validator("v2", KEY_B)), Scheme.MLDSA65_ED25519
)


def sample_status() -> NodeStatus:
    """A validator of two (of :data:`GENESIS`), linked to the other, in step, with a log
    of 3 entries, and checkpoint 1 certified."""
    return NodeStatus(
        node=NodeInfo(
            id="node1",
            version=__version__,
            role="validator",
            node_id=ID_A,
            public_key=KEY_A,
            uptime_seconds=12.3456,
            platform={"region": "ams"},
            peer_transport="tls",
            openssl="OpenSSL 3.5.4 30 Sep 2025",
        ),
        network=NetworkInfo(
            id="testnet",
            mode="committee",
            genesis=GENESIS.hash,
            scheme=GENESIS.scheme.label,
            validators=(ValidatorInfo("v1", ID_A, KEY_A), ValidatorInfo("v2", ID_B, KEY_B)),
            f=0,
            quorum=2,
        ),
        dag=DagInfo(
            round=5,
            highest_round=6,
            vertices=11,
            committed_round=4,
            window=50,
            buffered=1,
            buffer_dropped=0,
            fetching=2,
        ),
        log=LogInfo(3, b"\x09" * 32),
        transactions=TransactionsInfo(pending=7, in_flight=8),
        p2p=P2pInfo(
            peers=1,
            port=7000,
            quorum=QuorumInfo(
                can_finalize=True,
                validators_linked=2,
                needed=2,
                since=datetime(2026, 1, 2, 3, 4, 5, 600_000, tzinfo=UTC),
                for_seconds=61.23456,
            ),
        ),
        sync=SyncInfo(
            catching_up=False,
            gap_rounds=0,
            in_step=True,
            detail="in step",
            state_sync=StateSyncInfo(enabled=True, active=False, done=0, last_seconds=None),
            backfill=BackfillInfo(enabled=True, active=False, base=0, entries=0),
        ),
        checkpoint=CheckpointInfo(number=1, round=4, log_length=2),
        retention=RetentionInfo("archive", "archive", HeldRange(1, 1)),
    )


@dataclass
class FakeNode:
    """A :class:`NodeApi` over dictionaries. ``refusal``, when set, is what the next
    submits raise; ``final`` holds the ids ``wait_final`` reports final."""

    transactions: dict[TxId, TxRecord] = field(default_factory=dict)
    vertices: dict[VertexId, VertexRecord] = field(default_factory=dict)
    entries: list[LogRecord] = field(default_factory=list)
    log_base: int = 0  # positions up to it are not held
    equivocations: list[EvidenceRecord] = field(default_factory=list)
    checkpoints: dict[int, CheckpointRecord] = field(default_factory=dict)
    window: DagWindow = field(default_factory=lambda: DagWindow((), ()))
    current: NodeStatus = field(default_factory=sample_status)
    network: Genesis = GENESIS
    peer_views: list[PeerView] = field(default_factory=list)
    live: list[Check] = field(default_factory=lambda: [Check("event_loop", True, "answering")])
    ready: list[Check] = field(default_factory=lambda: [Check("started", True, "running")])
    refusal: Exception | None = None
    final: set[TxId] = field(default_factory=set)
    #: what the API asked: each submitted batch, each wait's timeout, each log page,
    #: each DAG window's rounds
    submitted: list[list[bytes]] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)
    pages: list[tuple[int, int]] = field(default_factory=list)
    dag_rounds: list[int] = field(default_factory=list)

    async def submit(self, transactions: Sequence[bytes]) -> SubmitReceipt:
        """Record the batch as pending; ids seen before count as duplicates."""
        if self.refusal is not None:
            raise self.refusal
        self.submitted.append(list(transactions))
        ids = tx_ids(transactions)
        duplicates = sum(1 for i in ids if i in self.transactions)
        for i, tx in zip(ids, transactions, strict=True):
            self.transactions.setdefault(i, TxRecord(i, TxState.PENDING, None, None, len(tx)))
        return SubmitReceipt(tuple(ids), duplicates)

    async def wait_final(self, ids: Sequence[TxId], timeout: float) -> bool:
        """Whether every id is in :attr:`final`, at once (the timeout is recorded)."""
        self.waits.append(timeout)
        return set(ids) <= self.final

    async def transaction(self, tx_id: TxId) -> TxRecord | None:
        """The record set for ``tx_id``."""
        return self.transactions.get(tx_id)

    async def vertex(self, vertex_id: VertexId) -> VertexRecord | None:
        """The record set for ``vertex_id``."""
        return self.vertices.get(vertex_id)

    async def log(self, start: int, limit: int) -> list[LogRecord]:
        """The entries from ``start`` on, at most ``limit``; :class:`Pruned` below the
        oldest log position of :attr:`current`."""
        self.pages.append((start, limit))
        if start <= self.log_base:
            raise Pruned(f"log position {start}", self.log_base)
        return [e for e in self.entries if e.seq >= start][:limit]

    async def dag(self, rounds: int) -> DagWindow:
        """:attr:`window`, whatever ``rounds`` (which is recorded)."""
        self.dag_rounds.append(rounds)
        return self.window

    async def evidence(self, limit: int) -> list[EvidenceRecord]:
        """The first ``limit`` evidence records."""
        return self.equivocations[:limit]

    async def checkpoint(self, number: int | None) -> CheckpointRecord | None:
        """The record set for ``number`` (None: the highest number set)."""
        if number is None:
            number = max(self.checkpoints, default=0)
        return self.checkpoints.get(number)

    def status(self) -> NodeStatus:
        """:attr:`current`."""
        return self.current

    def genesis(self) -> Genesis:
        """:attr:`network`."""
        return self.network

    def peers(self) -> list[PeerView]:
        """:attr:`peer_views`."""
        return self.peer_views

    async def liveness(self) -> list[Check]:
        """:attr:`live`."""
        return self.live

    def readiness(self) -> list[Check]:
        """:attr:`ready`."""
        return self.ready
