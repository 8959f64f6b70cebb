"""What the group commit does with the pump's steps: writes their facts into the open
database transaction and ends it; then, once a step is durable, answers its clients,
wakes finality waiters, publishes to the log stream, counts, logs and sends its
messages; or, when the write fails, answers its clients with an error, never an ack."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, assert_never

from qudag_node.core.engine import Engine
from qudag_node.core.errors import InputRejected
from qudag_node.core.events import (
    CheckpointCertified,
    CheckpointMade,
    EquivocationDetected,
    Fact,
    LeaderCommitted,
    MessageRejected,
    Notice,
    TransactionsAdmitted,
    VertexCertified,
    VertexStored,
)
from qudag_node.core.types import TxId
from qudag_node.failure import NodeFailure
from qudag_node.gossip import PeerNetwork
from qudag_node.logs import get_logger
from qudag_node.metrics import Metrics
from qudag_node.ports import LogInfo, StorageFull, SubmitReceipt
from qudag_node.pump import ForwardRefused, Links, PumpStep, deliver
from qudag_node.store import Store, is_disk_full
from qudag_node.stream import Broadcaster
from qudag_node.submissions import Submission, Submissions
from qudag_node.tracing import now_ns

if TYPE_CHECKING:
    from qudag_node.tracing.spans import Tracing

log = get_logger("qudag.node")

#: A client's submission and what it is answered once its step is durable.
Outcome = tuple[Submission, SubmitReceipt | InputRejected]
Step = PumpStep[Outcome]


class StepWriter:
    """The group commit's ``write``, ``commit``, ``finish`` and ``fail`` for the steps
    of ``engine`` (the pump's driver sets it anew after a disk-full recovery).
    ``vertices`` counts the vertices stored over the node's whole life."""

    def __init__(
        self,
        engine: Engine,
        store: Store,
        metrics: Metrics,
        submissions: Submissions,
        network: PeerNetwork | None,
        stream: Broadcaster,
        *,
        vertices: int,
        tracing: Tracing | None = None,
    ) -> None:
        self._engine = engine
        st = engine.statistics()
        self._durable_log = LogInfo(st.log_length, st.log_hash)
        self.vertices = vertices
        self.disk_full = False  # a write failed for lack of space; cleared on recovery
        self._store = store
        self._metrics = metrics
        self._submissions = submissions
        self._links: Links | None = network
        if network is not None and tracing is not None:
            self._links = tracing.wrapping(network)
        self._tracing = tracing
        # traced: when the open transaction's first write began, its submissions' ids,
        # and when the last committed one's first write began
        self._write_started = 0
        self._committing: list[list[TxId]] = []
        self._committed_started = 0
        self._stream = stream

    @property
    def engine(self) -> Engine:
        """The engine whose steps are written."""
        return self._engine

    @engine.setter
    def engine(self, engine: Engine) -> None:
        """A new engine, built from the store (its log is durable)."""
        self._engine = engine
        st = engine.statistics()
        self._durable_log = LogInfo(st.log_length, st.log_hash)

    @property
    def durable_log(self) -> LogInfo:
        """The head of the log as far as it is durable (the engine's may be ahead,
        while the group commit writes it)."""
        return self._durable_log

    async def write(self, steps: Sequence[Step]) -> bool:
        """Add the facts of ``steps`` to the open transaction (the group commit's write)."""
        if self._tracing is not None:
            self._traced_write(steps)
        try:
            return await self._store.write([f for step in steps for f in step.facts])
        except Exception as e:
            raise self._write_failure(e) from e

    async def commit(self) -> None:
        started = time.perf_counter()
        try:
            await self._store.commit()
        except Exception as e:
            raise self._write_failure(e) from e
        self._metrics.on_store_commit(time.perf_counter() - started)
        if self._tracing is not None:
            self._tracing.group_commit(self._committing, self._write_started)
            self._committed_started, self._write_started = self._write_started, 0
            self._committing = []

    def _traced_write(self, steps: Sequence[Step]) -> None:
        """Note when the open transaction began and whose submissions it carries."""
        if not self._write_started:
            self._write_started = now_ns()
        self._committing += [sub.ids for step in steps for sub, _ in step.receipts]

    def _write_failure(self, error: Exception) -> NodeFailure:
        """The node stops: the engine's state is now ahead of the database. A full disk
        (the consensus's reserve used up) is named as such, and its clients get 507."""
        if is_disk_full(error):
            self.disk_full = True
            return NodeFailure(f"disk full: cannot write to the database: {error}")
        return NodeFailure(f"cannot write to the database: {error}")

    def storage_error(self) -> Exception:
        """What a client whose submission cannot be stored any more gets."""
        if self.disk_full:
            return StorageFull("no space left to store the transactions; nothing was stored")
        return NodeFailure("storage failure")

    def fail(self, steps: Sequence[Step]) -> None:
        """The database failed: the clients of ``steps`` get an error, never an ack."""
        for step in steps:
            for sub, _ in step.receipts:
                sub.fail(self.storage_error())

    async def finish(self, step: Step) -> None:
        """Once ``step`` is durable: answer its clients, then send its messages."""
        self._after_commit(step)
        if self._tracing is not None:
            self._tracing.durable(step.facts, self._committed_started)
        if self._links is not None:
            await deliver(step, self._store, self._links)

    def _after_commit(self, step: Step) -> None:
        self._metrics.on_facts(step.facts)
        self._metrics.on_notices(step.notices)
        self._metrics.on_statistics(self.engine.statistics())
        self._answer(step.receipts)
        now = time.monotonic()
        for fact in step.facts:
            self._note_fact(fact, now)
        for notice in step.notices:
            self._log_notice(notice)
        for refused in step.refused:
            self._forward_refused(refused)

    def _answer(self, receipts: Sequence[Outcome]) -> None:
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

    def _note_fact(self, fact: Fact, now: float) -> None:
        """Keep the counts, wake finality waiters, publish to the stream, and log, for
        a fact durable since ``now``."""
        match fact:
            case VertexCertified():
                self.vertices += 1
                author = self.engine.author_of(fact.vertex)
                self._stream.certified(fact.round, author, fact.vertex, now)
            case LeaderCommitted():
                if fact.entries:
                    last = fact.entries[-1]
                    self._durable_log = LogInfo(last.seq, last.hash)
                    self._submissions.finalized({e.tx_id for e in fact.entries}, now)
                    self._stream.entries(fact.entries, now)
                leader = self.engine.author_of(fact.leader)
                self._stream.committed(fact.round, leader, fact.leader, now)
                log.debug(
                    "leader_committed",
                    round=fact.round,
                    entries=len(fact.entries),
                    skipped=list(fact.skipped),
                )
            case EquivocationDetected(evidence):
                log.warning("equivocation", author=evidence.author.hex(), round=evidence.round)
            case CheckpointCertified(number):
                log.info("checkpoint_certified", number=number)
            case TransactionsAdmitted() | VertexStored() | CheckpointMade():
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
