"""The task that drives the engine (built by :mod:`qudag_node.root`).

Exactly one task drives the engine. Each step it takes the queued client
submissions, feeds them, the peers' messages and the timer to the engine, and lets the
:class:`~qudag_node.pump.Pump` take the engine's output to the group commit
(``commits.py``), which persists the facts (one database transaction for the steps
that queued behind the last one) and only then acknowledges clients, wakes finality
waiters, and sends messages: persist before announce, acknowledge after commit. After
a write that failed for lack of space, it takes the engine back to the state on disk
and waits for space. A state sync's checkpoint is installed between two steps, once
every step before it is durable, and the engine is rebuilt from the store the same way.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from qudag_node.commits import GroupCommit
from qudag_node.config import Settings
from qudag_node.core.crypto import Signer
from qudag_node.core.engine import Engine
from qudag_node.core.errors import InputRejected
from qudag_node.core.genesis import Genesis
from qudag_node.core.joining import InstallCheckpoint
from qudag_node.core.syncwire import Status
from qudag_node.core.types import Instant, TxId
from qudag_node.disk import DiskGuard
from qudag_node.failure import NodeFailure
from qudag_node.gossip import PeerNetwork
from qudag_node.inbox import PeerInbox
from qudag_node.logs import get_logger
from qudag_node.metrics import Metrics
from qudag_node.ports import LogInfo, SubmitReceipt
from qudag_node.pump import Pump, feed_peer_inputs
from qudag_node.store import Store, is_disk_full
from qudag_node.stream import Broadcaster
from qudag_node.submissions import Submission, Submissions
from qudag_node.sync import Syncer
from qudag_node.tracing import now_ns
from qudag_node.verifier import ThreadedVerifier
from qudag_node.writer import Outcome, Step, StepWriter

if TYPE_CHECKING:
    from qudag_node.tracing.spans import Tracing

#: Most database transactions a second on average (an fsync each, plus a few for
#: checkpoints): under load each carries every step since the last, within the volume's
#: IOPS. At most MAX_COMMIT_BURST more may end at once.
MAX_COMMITS_PER_SECOND = 180
MAX_COMMIT_BURST = 4
#: Most steps waiting for the group commit before the pump waits for the disk.
STEPS_WAITING = 8
#: Least seconds between a write that failed for lack of space and the next attempt.
DISK_FULL_PAUSE = 1.0
log = get_logger("qudag.node")


def engine_time() -> Instant:
    """The time of an engine input: the monotonic clock for its timers, the wall clock
    for the timestamps of vertices."""
    return Instant(time.monotonic(), time.time())


class Node:
    """The task that drives the engine through the pump, and what it holds: the live
    engine, the count of stored vertices, whether it runs. Built by the composition
    root (:func:`qudag_node.root.serve`) from parts it has built and wired; the read
    side (:class:`qudag_node.view.NodeView`) reads it as a ``PumpState``."""

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
        submissions: Submissions,
        stream: Broadcaster,
        wakeup: asyncio.Event,
        vertices: int,
        tracing: Tracing | None = None,
    ) -> None:
        self.settings = settings
        self.params = settings.engine_params()
        self._genesis = genesis
        self._signer = signer
        self._store = store
        self._engine = engine  # replaced by _reload_engine(), after a disk-full
        self._verifier = verifier
        self._disk = disk
        self._syncer = syncer
        self._peer_inbox = peer_inbox
        self._network = network
        self._submissions = submissions
        self._wakeup = wakeup  # set by whatever brings the pump work
        self._closing = asyncio.Event()  # shutting down: no new client work is taken
        self._stopping = False  # the pump finishes what is queued and returns
        self._pumping = False
        self._tracing = tracing
        self._writer = StepWriter(
            engine,
            store,
            metrics,
            submissions,
            network,
            stream,
            vertices=vertices,
            tracing=tracing,
        )
        self._catching_up: bool | None = None  # a change for the pump to apply
        # a checkpoint to install at the next step boundary, and who waits for it
        self._install: tuple[InstallCheckpoint, asyncio.Future[None]] | None = None

    # ------------------------------------------------- what the read side reads

    @property
    def engine(self) -> Engine:
        """The live engine (a disk-full recovery replaces it)."""
        return self._engine

    @property
    def durable_log(self) -> LogInfo:
        """The head of the log as far as it is durable (what ``/api/v1/log`` serves)."""
        return self._writer.durable_log

    @property
    def vertices(self) -> int:
        """Vertices stored over the node's whole life."""
        return self._writer.vertices

    @property
    def running(self) -> bool:
        """Whether the pump runs."""
        return self._pumping

    @property
    def closing(self) -> bool:
        """Whether the shutdown has begun (no new client work is taken)."""
        return self._closing.is_set()

    # ------------------------------------------------------------ life cycle

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

    async def install_checkpoint(self, install: InstallCheckpoint) -> None:
        """Restart from a checked checkpoint (state sync): the pump installs it between
        two steps, once every step before is durable, and rebuilds the engine from the
        store; returns when that is done."""
        if self._install is not None:
            raise RuntimeError("a checkpoint is being installed already")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._install = (install, done)
        self._wakeup.set()
        await done

    def on_catching_up(self, catching_up: bool) -> None:
        """The syncer's verdict changed: the pump hands it to the engine next step."""
        self._catching_up = catching_up
        self._wakeup.set()

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
        w = self._writer
        commits: GroupCommit[Step] = GroupCommit(
            w.write,
            w.commit,
            w.finish,
            w.fail,
            max_rate=MAX_COMMITS_PER_SECOND,
            max_burst=MAX_COMMIT_BURST,
            max_waiting=STEPS_WAITING,
            recoverable=lambda e: is_disk_full(e.__cause__ or e),
            on_broken=self._wakeup.set,
        )
        pump: Pump[Outcome] = Pump(self._engine, self._store, commits)
        tg.create_task(commits.run())
        while True:
            if commits.broken:
                if not await self._recover():
                    break  # shutting down meanwhile
                pump.engine = self._engine
                commits.repair()
            if self._install is not None:
                await self._install_now(commits)
                pump.engine = self._engine
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
        answered 507): take the engine back to the state on disk at once, as a restart
        would, then wait until the free space is above the floor again. Nothing the
        failed steps held was announced (persist before announce), so the engine may
        make them again differently; and taking it back before the wait means that what
        the node reports meanwhile (its log's length and hash, a transaction's state,
        its position to peers) is what the disk holds, not the failed steps' state.
        False if the node is shutting down meanwhile."""
        self.fail_queued()  # not stored: 507 now rather than a wait of unknown length
        log_length = await self._reload_engine()
        log.warning(
            "disk_full",
            detail=self._disk.detail() + " MiB",
            action="writes paused",
            log_length=log_length,
        )
        while True:
            try:
                async with asyncio.timeout(DISK_FULL_PAUSE):
                    await self._closing.wait()
                return False
            except TimeoutError:
                pass
            if not self._disk.low():
                break
        self._writer.disk_full = False
        log.info("writes_resumed", detail=self._disk.detail() + " MiB", log_length=log_length)
        return True

    async def _reload_engine(self) -> int:
        """Replace the engine by one built from the state on disk (as at a start), told
        the links that are up and whether it is catching up; returns its log length."""
        try:
            snapshot = await self._store.load_snapshot(
                self._genesis, self.params.gc_depth, self._signer.node_id
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
        self._writer.engine = self._engine
        return snapshot.log_length

    async def _install_now(self, commits: GroupCommit[Step]) -> None:
        """Install the waiting checkpoint: wait until every step put is durable, record
        the checkpoint in the store, rebuild the engine from it. A checkpoint the engine
        has passed meanwhile (it committed a later round itself) is left alone."""
        if self._install is None:
            return
        install, done = self._install
        self._install = None
        try:
            await commits.flush()
            checkpoint = install.certified.checkpoint
            if self._engine.statistics().committed_round >= checkpoint.round:
                log.info("state_sync_passed", round=checkpoint.round)
            else:
                await self._store.install_checkpoint(
                    install.certified, install.window, install.vertices
                )
                await self._reload_engine()
        except BaseException as e:
            done.set_exception(e)
            raise
        done.set_result(None)

    async def _step(self, pump: Pump[Outcome], commits: GroupCommit[Step], now: Instant) -> None:
        """Feed the engine this step's inputs; the pump takes its output on."""
        commits.preparing()
        started = 0 if self._tracing is None else now_ns()
        batch = self._submissions.take()
        outcomes: list[Outcome] = []
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
            if self._tracing is not None and batch:
                self._tracing.pump_step([sub.ids for sub in batch], started)
        except sqlite3.DatabaseError as e:
            raise NodeFailure(f"cannot read the database: {e}") from None

    def fail_queued(self) -> None:
        """Submissions the pump did not take get an error, never an ack (the node stops,
        or waits for disk space)."""
        self._submissions.fail_queued(self._writer.storage_error)

    def _admit(self, batch: list[Submission], known: set[TxId], now: Instant) -> list[Outcome]:
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
        outcomes: list[Outcome] = []
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
