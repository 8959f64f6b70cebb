"""The read side of a running node: implements :class:`qudag_node.ports.NodeApi`, the
only way the HTTP API sees the node, by reading the parts the composition root built
(the store, the live engine, the submissions, the syncer, the links, the quorum watch,
the disk guard) into the typed views of :mod:`qudag_node.ports`."""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol

from qudag_node import __version__
from qudag_node.config import Settings
from qudag_node.core.consensus import committed_leaders
from qudag_node.core.dag import Dag, DagVertex
from qudag_node.core.engine import Engine
from qudag_node.core.genesis import Genesis
from qudag_node.core.types import NodeId, PeerId, PublicKey, TxId, VertexId
from qudag_node.disk import DiskGuard
from qudag_node.gossip import PeerNetwork
from qudag_node.logs import get_logger
from qudag_node.ports import (
    BackfillInfo,
    Check,
    CheckpointInfo,
    CheckpointRecord,
    DagInfo,
    DagWindow,
    EvidenceRecord,
    LogInfo,
    LogRecord,
    NetworkInfo,
    NodeInfo,
    NodeStatus,
    P2pInfo,
    PeerPosition,
    PeerView,
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
from qudag_node.quorum import QuorumWatch
from qudag_node.retention import Pruner
from qudag_node.store import Store, StoreError
from qudag_node.submissions import Submissions
from qudag_node.sync import Syncer

log = get_logger("qudag.node")


class PumpState(Protocol):
    """What the read side asks of the task that drives the engine."""

    @property
    def engine(self) -> Engine:
        """The live engine (a disk-full recovery replaces it)."""
        ...

    @property
    def durable_log(self) -> LogInfo:
        """The head of the log as far as it is durable."""
        ...

    @property
    def vertices(self) -> int:
        """Vertices stored over the node's whole life."""
        ...

    @property
    def running(self) -> bool:
        """Whether the pump runs."""
        ...

    @property
    def closing(self) -> bool:
        """Whether the shutdown has begun (no new client work is taken)."""
        ...


class NodeView:
    """What the API asks of a running node (:class:`qudag_node.ports.NodeApi`), read
    from the parts it is given; built by :func:`qudag_node.root.serve`."""

    def __init__(
        self,
        settings: Settings,
        *,
        genesis: Genesis,
        node_id: NodeId,
        public_key: PublicKey,
        store: Store,
        pump: PumpState,
        submissions: Submissions,
        syncer: Syncer,
        network: PeerNetwork | None,
        p2p_port: int | None,
        quorum: QuorumWatch,
        disk: DiskGuard,
        pruner: Pruner,
    ) -> None:
        self._settings = settings
        self._genesis = genesis
        self._node_id = node_id
        self._public_key = public_key
        self._store = store
        self._pump = pump
        self._submissions = submissions
        self._syncer = syncer
        self._network = network
        self._p2p_port = p2p_port
        self._quorum = quorum
        self._disk = disk
        self._pruner = pruner
        self._started_at = time.time()
        self._started = False  # every task runs: the node takes traffic

    def mark_started(self) -> None:
        """Every task runs: the node reports ready (as far as sync and disk allow)."""
        self._started = True
        self._quorum.observe()
        log.info(
            "ready",
            role=self._pump.engine.role.value,
            node_id=self._node_id.hex(),
            scheme=self._genesis.scheme.label,
            network=self._genesis.network_id,
        )

    async def submit(self, transactions: Sequence[bytes]) -> SubmitReceipt:
        """Queue a client batch for the next engine step; return once it is stored."""
        return await self._submissions.submit(transactions)

    async def wait_final(self, ids: Sequence[TxId], timeout: float) -> bool:
        """True once every id is final; False after ``timeout`` seconds."""
        return await self._submissions.wait_final(ids, timeout)

    async def transaction(self, tx_id: TxId) -> TxRecord | None:
        """A transaction's status: final from the store, included from the engine once
        the carrying vertex is stored (so a client can follow it), else pending."""
        carrier = self._pump.engine.carrier(tx_id)  # asked first: states only move forward
        stored = await self._store.transaction(tx_id)
        if stored is None:
            return None
        if stored.final:
            return TxRecord(tx_id, TxState.FINAL, stored.vertex, stored.seq, stored.size)
        if carrier is not None and await self._store.has_vertex(carrier):
            return TxRecord(tx_id, TxState.INCLUDED, carrier, None, stored.size)
        return TxRecord(tx_id, TxState.PENDING, None, None, stored.size)

    async def vertex(self, vertex_id: VertexId) -> VertexRecord | None:
        """A vertex from the store."""
        return await self._store.vertex(vertex_id)

    async def log(self, start: int, limit: int) -> list[LogRecord]:
        """Finalized log entries from the store."""
        return await self._store.log(start, limit)

    async def dag(self, rounds: int) -> DagWindow:
        """The last ``rounds`` rounds from the store; the committed leaders among them
        read back from the certified vertices' ordered flags."""
        # At most one certified vertex per (round, author); room for a twin proposal too.
        records = await self._store.dag_window(rounds, rounds * self._genesis.n * 2)
        dag = Dag()
        for r in records:
            if r.certified:
                vertex = DagVertex(r.id, r.round, r.author, r.parents, 0, 0)
                dag.add(vertex, (), r.ordered)
        low = min((r.round for r in records), default=0)
        leaders = committed_leaders(self._genesis, dag, low)
        return DagWindow(tuple(records), tuple(v.id for v in leaders))

    async def evidence(self, limit: int) -> list[EvidenceRecord]:
        """Equivocation evidence from the store."""
        return await self._store.evidence(limit)

    async def checkpoint(self, number: int | None) -> CheckpointRecord | None:
        """A certified checkpoint from the store (None: the latest)."""
        if number is None:
            return await self._store.latest_checkpoint()
        return await self._store.checkpoint(number)

    def genesis(self) -> Genesis:
        """The network's genesis."""
        return self._genesis

    def status(self) -> NodeStatus:
        """The node's status now."""
        st = self._pump.engine.statistics()
        g = self._genesis
        return NodeStatus(
            node=NodeInfo(
                id=self._settings.node_id,
                version=__version__,
                role=st.role.value,
                node_id=self._node_id,
                public_key=self._public_key,
                uptime_seconds=time.time() - self._started_at,
                platform=dict(self._settings.platform),
                peer_transport=self._settings.peer_transport,
                openssl=ssl.OPENSSL_VERSION,
            ),
            network=NetworkInfo(
                id=g.network_id,
                mode=self._settings.network_mode,
                genesis=g.hash,
                scheme=g.scheme.label,
                validators=tuple(
                    ValidatorInfo(v.name, node, v.public_key)
                    for v, node in zip(g.validators, g.ids, strict=True)
                ),
                f=g.f,
                quorum=g.quorum,
            ),
            dag=DagInfo(
                round=st.round,
                highest_round=st.highest_round,
                vertices=self._pump.vertices,
                committed_round=st.committed_round,
                window=st.dag_window,
                buffered=st.buffered,
                buffer_dropped=st.buffer_dropped,
                fetching=st.fetching,
            ),
            log=self._pump.durable_log,
            transactions=TransactionsInfo(st.pending, st.in_flight),
            p2p=P2pInfo(st.peers, self._p2p_port, self._quorum_info()),
            sync=self._sync_info(),
            checkpoint=None
            if st.checkpoint is None
            else CheckpointInfo(
                st.checkpoint.number, st.checkpoint.round, st.checkpoint.log_length
            ),
            retention=RetentionInfo(
                str(self._pruner.settings.dag),
                str(self._pruner.settings.transactions),
                self._pruner.held_range,
            ),
        )

    def _quorum_info(self) -> QuorumInfo | None:
        """For a validator: whether it links to enough validators (itself included) to
        finalize, how many, how many are needed, and since when; None for an observer."""
        state = self._quorum.observe()
        if state is None:
            return None
        return QuorumInfo(
            can_finalize=state.able,
            validators_linked=state.linked,
            needed=self._genesis.quorum,
            since=datetime.fromtimestamp(state.since, UTC),
            for_seconds=max(0.0, time.time() - state.since),
        )

    def _sync_info(self) -> SyncInfo:
        in_step, detail = self._syncer.readiness()
        joining = self._syncer.joining
        state_sync = (
            StateSyncInfo(False, False, 0, None)
            if joining is None
            else StateSyncInfo(joining.enabled, joining.active, joining.syncs, joining.last_seconds)
        )
        filling = self._syncer.backfill
        backfill = (
            BackfillInfo(False, False, 0, 0)
            if filling is None
            else BackfillInfo(filling.enabled, filling.active, filling.base, filling.entries)
        )
        return SyncInfo(
            self._syncer.catching_up, self._syncer.gap(), in_step, detail, state_sync, backfill
        )

    def peers(self) -> list[PeerView]:
        """Each linked peer (with the position it last told us) and each candidate
        address that is not linked."""
        if self._network is None:
            return []
        statuses = self._syncer.statuses()
        out = []
        for view in self._network.views():
            theirs = statuses.get(PeerId(view.name)) if view.name is not None else None
            if theirs is not None and view.state == "connected":
                position = PeerPosition(theirs.highest, theirs.committed, theirs.log_length)
                out.append(dataclasses.replace(view, position=position))
            else:
                out.append(view)
        return out

    async def liveness(self) -> list[Check]:
        """The event loop answers (we are running), the pump runs, the database answers."""
        checks = [Check("event_loop", True, "answering")]
        pump_ok = self._pump.running
        checks.append(Check("engine", pump_ok, "running" if pump_ok else "stopped"))
        try:
            async with asyncio.timeout(2.0):
                await self._store.ping()
            checks.append(Check("database", True, "answering"))
        except (TimeoutError, OSError, StoreError) as e:
            checks.append(Check("database", False, type(e).__name__))
        return checks

    def readiness(self) -> list[Check]:
        """Whether the node should get traffic now."""
        closing = self._pump.closing
        checks = [Check("started", self._started and not closing, self._phase())]
        if self._started:
            checks.append(Check("sync", *self._syncer.readiness()))
        checks.append(Check("disk", not self._disk.low(), f"{self._disk.detail()} MiB"))
        return checks

    def _phase(self) -> str:
        if self._pump.closing:
            return "shutting down"
        return "running" if self._started else "starting"
