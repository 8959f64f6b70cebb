"""The task that steps the engine, and the read side of a running node (both built
by :mod:`qudag_node.root`).

Exactly one task drives the engine. Each step it takes the queued client
submissions, feeds them, the peers' messages and the timer to the engine, and lets the
:class:`~qudag_node.pump.Pump` take the engine's output to the group commit
(``commits.py``), which persists the facts (one database transaction for the steps
that queued behind the last one) and only then acknowledges clients, wakes finality
waiters, and sends messages: persist before announce, acknowledge after commit.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import assert_never

import nacl.signing

from qudag_node import __version__
from qudag_node.commits import GroupCommit
from qudag_node.config import ConfigError, Settings, read_small_file
from qudag_node.core.crypto import Signer
from qudag_node.core.engine import Engine, Role
from qudag_node.core.errors import InputRejected
from qudag_node.core.events import (
    EquivocationDetected,
    Fact,
    LeaderCommitted,
    MessageRejected,
    Notice,
    TransactionsAdmitted,
    VertexCertified,
    VertexStored,
)
from qudag_node.core.genesis import Genesis
from qudag_node.core.syncwire import Status
from qudag_node.core.types import Instant, PeerId, TxId, VertexId
from qudag_node.gossip import PeerNetwork
from qudag_node.inbox import PeerInbox
from qudag_node.logs import get_logger
from qudag_node.metrics import Metrics
from qudag_node.ports import (
    Check,
    DagInfo,
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
    StorageFull,
    SubmitReceipt,
    SyncInfo,
    TransactionsInfo,
    TxRecord,
    TxState,
    ValidatorInfo,
    VertexRecord,
)
from qudag_node.pump import ForwardRefused, Pump, PumpStep, deliver, feed_peer_inputs
from qudag_node.store import Store, StoreError, is_disk_full
from qudag_node.submissions import Submission, Submissions
from qudag_node.sync import Syncer
from qudag_node.verifier import ThreadedVerifier

KEY_FILENAME = "node.key"
#: Most database transactions a second on average (an fsync each, plus a few for
#: checkpoints): under load each carries every step since the last, within the volume's
#: IOPS. At most MAX_COMMIT_BURST more may end at once.
MAX_COMMITS_PER_SECOND = 180
MAX_COMMIT_BURST = 4
#: Most steps waiting for the group commit before the pump waits for the disk.
STEPS_WAITING = 8
#: Seconds a reading of the data dir's free space is used before it is read again.
DISK_CHECK_INTERVAL = 0.25
#: Least seconds between a write that failed for lack of space and the next attempt.
DISK_FULL_PAUSE = 1.0
#: Largest node key file read (the key is 64 hex characters and a newline).
MAX_KEY_FILE_BYTES = 4096
log = get_logger("qudag.node")


class NodeFailure(Exception):
    """The node cannot go on (bad data dir, storage failure); the process should exit 1."""


class DiskGuard:
    """The free space of the data dir's filesystem against ``QUDAG_MIN_FREE_DISK_MB``.

    One ``statvfs`` call, made again at most every :data:`DISK_CHECK_INTERVAL` seconds,
    so that every client write can ask it. Below the floor the node refuses client
    writes (507) and reports not ready; the space left is the consensus's reserve, and
    writes resume by themselves once the free space is back above the floor.
    """

    def __init__(
        self,
        path: Path,
        min_free_mb: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = path
        self._min_free = min_free_mb << 20
        self._min_free_mb = min_free_mb
        self._clock = clock
        self._free: int | None = None
        self._read_at = -math.inf

    def free_bytes(self) -> int | None:
        """Bytes available to the node, or None if the filesystem cannot be asked."""
        now = self._clock()
        if now - self._read_at >= DISK_CHECK_INTERVAL:
            self._read_at = now
            try:
                st = os.statvfs(self._path)
                self._free = st.f_bavail * st.f_frsize
            except OSError:
                self._free = None
        return self._free

    def low(self) -> bool:
        """Whether the free space is below the floor (an unreadable one counts as enough:
        the writes themselves then say whether the disk is full)."""
        free = self.free_bytes()
        return free is not None and free < self._min_free

    def detail(self) -> str:
        """The free space against the floor, in MiB, for readiness and errors."""
        free = self.free_bytes()
        shown = "unknown" if free is None else f"{free >> 20} MiB"
        return f"{shown} free, need {self._min_free_mb}"

    def shortage(self) -> str | None:
        """:meth:`detail` when the free space is below the floor, else None."""
        return self.detail() if self.low() else None


@dataclass(frozen=True, slots=True)
class _QuorumState:
    """Whether a validator is linked to a quorum (``linked`` validators, itself
    included) and since when (Unix time of the last change)."""

    able: bool
    linked: int
    since: float


#: A client's submission and what it is answered once its step is durable.
_Outcome = tuple[Submission, SubmitReceipt | InputRejected]
_Step = PumpStep[_Outcome]


def engine_time() -> Instant:
    """The time of an engine input: the monotonic clock for its timers, the wall clock
    for the timestamps of vertices."""
    return Instant(time.monotonic(), time.time())


def load_signer(settings: Settings) -> tuple[Signer, bool]:
    """The node key: NODE_PRIVATE_KEY, else DATA_DIR/node.key; and whether it is new,
    to be kept with :func:`write_key` once the data dir is accepted. Writes nothing."""
    if settings.node_private_key is not None:
        return Signer(bytes.fromhex(settings.node_private_key.reveal())), False
    path = settings.data_path / KEY_FILENAME
    signer = read_key(path)
    if signer is None:
        return Signer(bytes(nacl.signing.SigningKey.generate())), True
    if path.stat().st_mode & 0o077:
        log.warning("node_key_readable_by_others", path=str(path), hint="chmod 600")
    return signer, False


def read_key(path: Path) -> Signer | None:
    """The key kept in ``path`` (64 hex characters), or None when there is no file.
    Never blocks on a FIFO; raises :class:`NodeFailure` for a path that is not a
    regular file holding a key."""
    try:
        data = read_small_file(path, MAX_KEY_FILE_BYTES)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise NodeFailure(f"{path} is {e.strerror}") from None
    try:
        return Signer(bytes.fromhex(data.decode("ascii").strip()))
    except ValueError:  # also a UnicodeDecodeError, or a key of the wrong length
        raise NodeFailure(f"{path} does not hold a 64-hex-character private key") from None


def write_key(path: Path, signer: Signer) -> None:
    """Keep ``signer``'s seed in the new file ``path``, mode 0600, durably (its name
    too)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(signer.seed().hex() + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the new file's name is durable too
    finally:
        os.close(directory)


def key_file(path: Path) -> tuple[Signer, bool]:
    """The key kept in ``path`` (64 hex characters), and whether it was created now: a
    missing file is created once, mode 0600, durably. Raises :class:`NodeFailure` for
    a path that does not hold a key."""
    signer = read_key(path)
    if signer is not None:
        return signer, False
    signer = Signer(bytes(nacl.signing.SigningKey.generate()))
    write_key(path, signer)
    return signer, True


def exception_leaves(error: BaseException) -> list[BaseException]:
    """The exceptions in ``error``, nested exception groups taken apart, in order."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in exception_leaves(inner)]
    return [error]


def _one_line(text: str) -> str:
    return " ".join(text.split())


def stop_cause(error: BaseException) -> BaseException:
    """The one exception that stops the node, out of what its tasks raised: two
    tasks may fail at once, into an exception group, possibly nested. A
    :class:`NodeFailure` names the cause best, then a :class:`ConfigError`; an
    unexpected exception becomes a NodeFailure naming its type, with its traceback
    in the log. Every other failure is logged, one line each."""
    leaves = exception_leaves(error)
    for leaf in leaves:
        if not isinstance(leaf, Exception):  # KeyboardInterrupt, SystemExit, cancelled
            return leaf
    cause = next(
        (e for kind in (NodeFailure, ConfigError) for e in leaves if isinstance(e, kind)),
        leaves[0],
    )
    for leaf in leaves:
        if leaf is cause:
            continue
        if isinstance(leaf, NodeFailure | ConfigError):
            log.error("also_failed", error=_one_line(str(leaf)))
        else:
            log.error("also_failed", error=f"{type(leaf).__name__}: {leaf}", exc_info=leaf)
    if isinstance(cause, NodeFailure | ConfigError):
        return cause
    log.error("unexpected_failure", error=f"{type(cause).__name__}", exc_info=cause)
    return NodeFailure(f"unexpected {type(cause).__name__}: {_one_line(str(cause))}")


class Node:
    """The pump that drives the engine, and the read side the API asks: implements
    :class:`qudag_node.ports.NodeApi`. Built by the composition root
    (:func:`qudag_node.root.serve`) from parts it has built and wired."""

    def __init__(
        self,
        settings: Settings,
        *,
        genesis: Genesis,
        signer: Signer,
        store: Store,
        engine: Engine,
        verifier: ThreadedVerifier,
        metrics: Metrics,
        disk: DiskGuard,
        syncer: Syncer,
        peer_inbox: PeerInbox,
        network: PeerNetwork | None,
        p2p_port: int | None,
        submissions: Submissions,
        wakeup: asyncio.Event,
        vertices: int,
    ) -> None:
        self.settings = settings
        self.params = settings.engine_params()
        self._genesis = genesis
        self._signer = signer
        self._store = store
        self._engine = engine  # replaced by _recover(), after a disk-full
        self._verifier = verifier
        self._metrics = metrics
        self._disk = disk
        self._syncer = syncer
        self._peer_inbox = peer_inbox
        self._network = network
        self._p2p_port = p2p_port
        self._submissions = submissions
        self._wakeup = wakeup  # set by whatever brings the pump work
        self._vertex_total = vertices
        self._started_at = time.time()
        self._started = False  # every task runs: the node takes traffic
        self._closing = asyncio.Event()  # shutting down: no new client work is taken
        self._stopping = False  # the pump finishes what is queued and returns
        self._pumping = False
        #: whether this validator links to a quorum (itself included), and since when
        self._quorum: _QuorumState | None = None
        self._catching_up: bool | None = None  # a change for the pump to apply
        self._disk_full = False  # a write failed for lack of space; cleared by _recover()

    # ------------------------------------------------------------ life cycle

    def mark_started(self) -> None:
        """Every task runs: the node reports ready (as far as sync and disk allow)."""
        self._started = True
        self._observe_quorum()
        log.info(
            "ready",
            role=self._engine.role.value,
            public_key=self._signer.public_key.hex(),
            network=self._genesis.network_id,
        )

    def close(self) -> None:
        """The shutdown begins: refuse new submissions, answer the finality waiters, and
        stop waiting for disk space."""
        self._closing.set()
        self._submissions.close()

    def drain(self) -> None:
        """Nothing more comes in: the pump commits what is queued, then returns."""
        self._stopping = True
        self._wakeup.set()

    # ----------------------------------------------------------- peer links

    @property
    def pending(self) -> int:
        """Transactions the engine holds that are not final yet."""
        return self._engine.pending

    def position(self) -> Status:
        """Where this node stands, as STATUS tells peers."""
        st = self._engine.statistics()
        floor = max(0, st.committed_round - self.params.gc_depth)
        return Status(st.highest_round, st.committed_round, floor, st.log_length, st.log_hash)

    def on_catching_up(self, catching_up: bool) -> None:
        """The syncer's verdict changed: the pump hands it to the engine next step."""
        self._catching_up = catching_up
        self._wakeup.set()

    async def watch_peers(self, network: PeerNetwork) -> None:
        """Keep the per-peer last-message ages and the quorum view current."""
        while True:
            self._metrics.on_peer_ages({str(p): age for p, age in network.last_seen().items()})
            self._observe_quorum()
            await asyncio.sleep(1.0)

    def _observe_quorum(self) -> _QuorumState | None:
        """Whether this validator is linked to enough validators to finalize (itself
        included, a quorum), and since when; None for an observer. A change is logged."""
        if self._engine.role is not Role.VALIDATOR:
            return None
        live = self._network.live_validators() if self._network is not None else 0
        linked = 1 + live
        able = linked >= self._genesis.quorum
        old = self._quorum
        if old is None or old.able != able:
            self._quorum = _QuorumState(able, linked, time.time())
            if old is not None:
                (log.info if able else log.warning)(
                    "quorum_linked" if able else "quorum_lost",
                    validators_linked=linked,
                    quorum=self._genesis.quorum,
                )
        elif old.linked != linked:
            self._quorum = dataclasses.replace(old, linked=linked)
        assert self._quorum is not None
        self._metrics.on_quorum(self._quorum.able, linked, self._quorum.since)
        return self._quorum

    # ------------------------------------------------------------------ pump

    async def run_pump(self, tg: asyncio.TaskGroup) -> None:
        """Step the engine until :meth:`drain`, then close the group commit, whose task
        (in ``tg``, the node's TaskGroup) finishes what is queued."""
        self._pumping = True
        try:
            await self._pump_until_drained(tg)
        finally:
            self._pumping = False

    async def _pump_until_drained(self, tg: asyncio.TaskGroup) -> None:
        commits: GroupCommit[_Step] = GroupCommit(
            self._write_steps,
            self._commit,
            self._finish_step,
            self._fail_steps,
            max_rate=MAX_COMMITS_PER_SECOND,
            max_burst=MAX_COMMIT_BURST,
            max_waiting=STEPS_WAITING,
            recoverable=lambda e: is_disk_full(e.__cause__ or e),
            on_broken=self._wakeup.set,
        )
        pump: Pump[_Outcome] = Pump(self._engine, self._store, commits)
        tg.create_task(commits.run())
        while True:
            if commits.broken:
                if not await self._recover():
                    break  # shutting down meanwhile
                pump.engine = self._engine
                commits.repair()
            timer = self._engine.get_timer()
            if not self._submissions and not self._peer_inbox and not self._stopping:
                delay = None if timer is None else max(0.0, timer - time.monotonic())
                try:
                    async with asyncio.timeout(delay):
                        await self._wakeup.wait()
                except TimeoutError:
                    pass
            self._wakeup.clear()
            await self._step(pump, commits, engine_time())
            if self._stopping and not self._submissions:
                break
        commits.close()

    async def _recover(self) -> bool:
        """After a write failed for lack of space (its steps failed, their clients
        answered 507): wait until the free space is above the floor again, then take
        the engine back to the state on disk, as a restart would. Nothing the failed
        steps held was announced (persist before announce), so the engine may make
        them again differently. False if the node is shutting down meanwhile."""
        log.warning("disk_full", detail=self._disk.detail() + " MiB", action="writes paused")
        self.fail_queued()  # not stored: 507 now rather than a wait of unknown length
        while True:
            try:
                async with asyncio.timeout(DISK_FULL_PAUSE):
                    await self._closing.wait()
                return False
            except TimeoutError:
                pass
            if not self._disk.low():
                break
        try:
            snapshot = await self._store.load_snapshot(
                self._genesis, self.params.gc_depth, self._signer.public_key
            )
        except sqlite3.DatabaseError as e:
            raise NodeFailure(
                f"database {self.settings.data_path}: cannot load the state: {e}"
            ) from None
        self._engine = Engine(
            self._genesis, self.params, self._signer, snapshot, verifier=self._verifier
        )
        self._engine.set_catching_up(self._syncer.catching_up, engine_time())
        if self._network is not None:
            for peer, key in self._network.linked():
                self._engine.peer_connected(peer, key)
        self._disk_full = False
        log.info(
            "writes_resumed", detail=self._disk.detail() + " MiB", log_length=snapshot.log_length
        )
        return True

    async def _step(self, pump: Pump[_Outcome], commits: GroupCommit[_Step], now: Instant) -> None:
        """Feed the engine this step's inputs; the pump takes its output on."""
        commits.preparing()
        batch = self._submissions.take()
        outcomes: list[_Outcome] = []
        try:
            if batch:
                try:
                    known = await self._store.known_ids([i for sub in batch for i in sub.ids])
                except sqlite3.DatabaseError:
                    self._submissions.put_back(batch)  # answered with an error as the node stops
                    raise
                outcomes = self._admit(batch, known, now)
            if self._catching_up is not None:
                self._engine.set_catching_up(self._catching_up, now)
                self._catching_up = None
            feed_peer_inputs(self._engine, self._peer_inbox, now)
            if self._peer_inbox:
                self._wakeup.set()  # more next step
            self._engine.handle_timer(now)
            await pump.step(now, outcomes)
        except sqlite3.DatabaseError as e:
            raise NodeFailure(f"cannot read the database: {e}") from None

    async def _write_steps(self, steps: Sequence[_Step]) -> bool:
        """Add the facts of ``steps`` to the open transaction (the group commit's write)."""
        try:
            return await self._store.write([f for step in steps for f in step.facts])
        except Exception as e:
            raise self._write_failure(e) from e

    async def _commit(self) -> None:
        started = time.perf_counter()
        try:
            await self._store.commit()
        except Exception as e:
            raise self._write_failure(e) from e
        self._metrics.on_store_commit(time.perf_counter() - started)

    def _write_failure(self, error: Exception) -> NodeFailure:
        """The node stops: the engine's state is now ahead of the database. A full disk
        (the consensus's reserve used up) is named as such, and its clients get 507."""
        if is_disk_full(error):
            self._disk_full = True
            return NodeFailure(f"disk full: cannot write to the database: {error}")
        return NodeFailure(f"cannot write to the database: {error}")

    def _storage_error(self) -> Exception:
        """What a client whose submission cannot be stored any more gets."""
        if self._disk_full:
            return StorageFull("no space left to store the transactions; nothing was stored")
        return NodeFailure("storage failure")

    def _fail_steps(self, steps: Sequence[_Step]) -> None:
        """The database failed: the clients of ``steps`` get an error, never an ack."""
        for step in steps:
            for sub, _ in step.receipts:
                sub.fail(self._storage_error())

    def fail_queued(self) -> None:
        """Submissions the pump did not take get an error, never an ack (the node stops,
        or waits for disk space)."""
        self._submissions.fail_queued(self._storage_error)

    async def _finish_step(self, step: _Step) -> None:
        """Once ``step`` is durable: answer its clients, then send its messages."""
        self._after_commit(step)
        if self._network is not None:
            await deliver(step, self._store, self._network)

    def _admit(self, batch: list[Submission], known: set[TxId], now: Instant) -> list[_Outcome]:
        """Admit a step's submissions in one engine call, each all or nothing; ids the
        database holds already count as duplicates."""
        batches: list[tuple[Sequence[TxId], Sequence[bytes]]]
        if known:
            fresh = [
                [(i, tx) for i, tx in zip(s.ids, s.transactions, strict=True) if i not in known]
                for s in batch
            ]
            batches = [([i for i, _ in pairs], [tx for _, tx in pairs]) for pairs in fresh]
        else:
            batches = [(s.ids, s.transactions) for s in batch]
        results = self._engine.submit_batches(batches, now)
        outcomes: list[_Outcome] = []
        admitted: list[TxId] = []
        for sub, result in zip(batch, results, strict=True):
            if isinstance(result, InputRejected):
                outcomes.append((sub, result))
                continue
            admitted += result.admitted
            outcomes.append(
                (sub, SubmitReceipt(tuple(sub.ids), len(sub.ids) - len(result.admitted)))
            )
        self._submissions.admitted(admitted, time.monotonic())
        return outcomes

    def _after_commit(self, step: _Step) -> None:
        self._metrics.on_facts(step.facts)
        self._metrics.on_notices(step.notices)
        self._metrics.on_statistics(self._engine.statistics())
        self._answer(step.receipts)
        for fact in step.facts:
            self._note_fact(fact)
        for notice in step.notices:
            self._log_notice(notice)
        for refused in step.refused:
            self._forward_refused(refused)

    def _answer(self, receipts: Sequence[_Outcome]) -> None:
        """Answer the clients of a durable step (those still waiting)."""
        stored = duplicates = 0
        for sub, outcome in receipts:
            if isinstance(outcome, InputRejected):
                self._metrics.on_submit_rejected(outcome.reason, len(sub.ids))
            else:
                stored += len(outcome.ids) - outcome.duplicates
                duplicates += outcome.duplicates
            sub.answer(outcome)
        if stored or duplicates:
            self._metrics.on_submit(stored, duplicates)

    def _note_fact(self, fact: Fact) -> None:
        """Keep the counts, wake finality waiters, and log, for a durable fact."""
        match fact:
            case VertexCertified():
                self._vertex_total += 1
            case LeaderCommitted():
                if fact.entries:
                    self._submissions.finalized({e.tx_id for e in fact.entries}, time.monotonic())
                log.debug(
                    "leader_committed",
                    round=fact.round,
                    entries=len(fact.entries),
                    skipped=list(fact.skipped),
                )
            case EquivocationDetected(evidence):
                log.warning("equivocation", author=evidence.author.hex(), round=evidence.round)
            case TransactionsAdmitted() | VertexStored():
                pass
            case _:
                assert_never(fact)

    def _log_notice(self, notice: Notice) -> None:
        match notice:
            case MessageRejected(peer, reason, _, kind):
                log.info("message_rejected", peer=peer, kind=kind, reason=reason.value)
            case _:
                assert_never(notice)

    def _forward_refused(self, refused: ForwardRefused) -> None:
        self._metrics.on_submit_rejected(refused.reason, refused.count)
        log.info("forwarded_rejected", peer=refused.peer, reason=refused.reason.value)

    # ------------------------------------------------------------ NodeApi

    async def submit(self, transactions: Sequence[bytes]) -> SubmitReceipt:
        """Queue a client batch for the next engine step; return once it is stored."""
        return await self._submissions.submit(transactions)

    async def wait_final(self, ids: Sequence[TxId], timeout: float) -> bool:
        """True once every id is final; False after ``timeout`` seconds."""
        return await self._submissions.wait_final(ids, timeout)

    async def transaction(self, tx_id: TxId) -> TxRecord | None:
        """A transaction's status: final from the store, included from the engine."""
        carrier = self._engine.carrier(tx_id)  # asked first: states only move forward
        stored = await self._store.transaction(tx_id)
        if stored is None:
            return None
        if stored.seq is not None:
            return TxRecord(tx_id, TxState.FINAL, stored.vertex, stored.seq, stored.size)
        if carrier is not None:
            return TxRecord(tx_id, TxState.INCLUDED, carrier, None, stored.size)
        return TxRecord(tx_id, TxState.PENDING, None, None, stored.size)

    async def vertex(self, vertex_id: VertexId) -> VertexRecord | None:
        """A vertex from the store."""
        return await self._store.vertex(vertex_id)

    async def log(self, start: int, limit: int) -> list[LogRecord]:
        """Finalized log entries from the store."""
        return await self._store.log(start, limit)

    async def evidence(self, limit: int) -> list[EvidenceRecord]:
        """Equivocation evidence from the store."""
        return await self._store.evidence(limit)

    def status(self) -> NodeStatus:
        """The node's status now."""
        st = self._engine.statistics()
        g = self._genesis
        return NodeStatus(
            node=NodeInfo(
                id=self.settings.node_id,
                version=__version__,
                role=st.role.value,
                public_key=self._signer.public_key,
                uptime_seconds=time.time() - self._started_at,
                platform=dict(self.settings.platform),
            ),
            network=NetworkInfo(
                id=g.network_id,
                mode=self.settings.network_mode,
                genesis=g.hash,
                validators=tuple(ValidatorInfo(v.name, v.public_key) for v in g.validators),
                f=g.f,
                quorum=g.quorum,
            ),
            dag=DagInfo(
                round=st.round,
                highest_round=st.highest_round,
                vertices=self._vertex_total,
                committed_round=st.committed_round,
                window=st.dag_window,
                buffered=st.buffered,
                buffer_dropped=st.buffer_dropped,
                fetching=st.fetching,
            ),
            log=LogInfo(st.log_length, st.log_hash),
            transactions=TransactionsInfo(st.pending, st.in_flight),
            p2p=P2pInfo(st.peers, self._p2p_port, self._quorum_info()),
            sync=self._sync_info(),
        )

    def _quorum_info(self) -> QuorumInfo | None:
        """For a validator: whether it links to enough validators (itself included) to
        finalize, how many, how many are needed, and since when; None for an observer."""
        state = self._observe_quorum()
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
        return SyncInfo(self._syncer.catching_up, self._syncer.gap(), in_step, detail)

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
        pump_ok = self._pumping
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
        closing = self._closing.is_set()
        checks = [Check("started", self._started and not closing, self._phase())]
        if self._started:
            checks.append(Check("sync", *self._syncer.readiness()))
        checks.append(Check("disk", not self._disk.low(), f"{self._disk.detail()} MiB"))
        return checks

    def _phase(self) -> str:
        if self._closing.is_set():
            return "shutting down"
        return "running" if self._started else "starting"
