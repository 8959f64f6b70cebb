"""The node's state machine: transactions and peer messages in; vertices, votes,
certificates and finalized log entries out.

Inputs are method calls that take the current time; outputs are handed over to the
caller (the pump, ``qudag_node/pump.py``) by :meth:`Engine.take_output`: the facts to
persist, then the effects to act on (messages to send, requests that need the store)
once they are durable, and notices to report; :meth:`Engine.get_timer` says when to
call :meth:`Engine.handle_timer` next. Peer faults become
:class:`~qudag_node.core.events.MessageRejected` notices; they never raise.

A vertex goes through three states here: *received* (signature checked, waiting in
:class:`~qudag_node.core.intake.Intake` while parents are missing), *stored* (we
voted for it, or proposed it; persisted), *certified* (a quorum voted; in the DAG,
where the commit rule of :mod:`~qudag_node.core.consensus` sees it).

The time is an :class:`~qudag_node.core.types.Instant`: its monotonic reading runs
every timer, its wall-clock reading stamps our vertices and bounds the timestamps of
others'. Signatures are checked by the :class:`~qudag_node.core.crypto.Verifier`
given, which also remembers their results; the engine reads no clock and shares no
state with other engines.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice

from qudag_node.core.certificate import (
    Certificate,
    check_certificate,
    make_certificate,
    vote_checks,
)
from qudag_node.core.checkpoint import Checkpoint, window_root
from qudag_node.core.checkpoints import CheckpointSigning, RestoredCheckpoint
from qudag_node.core.consensus import Consensus
from qudag_node.core.crypto import (
    Purpose,
    SequentialVerifier,
    SignatureCheck,
    Signer,
    Verifier,
    log_hash_start,
    tx_ids,
)
from qudag_node.core.dag import Dag, DagVertex
from qudag_node.core.errors import InputRejected, Reason, UsageError
from qudag_node.core.events import (
    Effect,
    EquivocationDetected,
    Fact,
    LeaderCommitted,
    MessageRejected,
    Notice,
    StepOutput,
    TransactionsAdmitted,
    TransactionsForwarded,
    TransactionsOrphaned,
    VertexCertified,
    VertexStored,
    VerticesRequested,
)
from qudag_node.core.evidence import Equivocation, SignedHeader
from qudag_node.core.finallog import FinalLog
from qudag_node.core.genesis import Genesis
from qudag_node.core.intake import Intake, Waiting
from qudag_node.core.messages import (
    CertificateMessage,
    CertifiedMessage,
    CheckpointSignatureMessage,
    FetchMessage,
    Message,
    ProposalMessage,
    TransactionsMessage,
    VoteMessage,
    decode_message,
    encode_message,
    fetch_messages,
)
from qudag_node.core.params import Params
from qudag_node.core.pool import Pool
from qudag_node.core.rules import check_batch, check_vertex
from qudag_node.core.types import Instant, NodeId, PeerId, TxId, VertexId
from qudag_node.core.vertex import Vertex, VertexHeader, make_vertex
from qudag_node.core.wire import TRACED, decode_traced, message_kind

_TRACED = bytes((TRACED,))


class Role(enum.Enum):
    """A validator proposes and votes; an observer only follows."""

    VALIDATOR = "validator"
    OBSERVER = "observer"


@dataclass(frozen=True, slots=True)
class StoredVertex:
    """A vertex as the store returns it at start-up."""

    id: VertexId
    header: VertexHeader
    header_bytes: bytes
    signature: bytes
    tx_ids: tuple[TxId, ...]
    ordered: bool
    certificate: Certificate | None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Durable state the engine resumes from after a restart.

    ``vertices`` are those of rounds at or above ``committed_round - gc_depth``;
    ``pending`` is every stored transaction that is not final; ``own_proposal`` is
    our latest vertex, in full, when it is not certified yet; ``equivocations`` are
    the slots whose evidence is kept (so that it is reported once); ``checkpoints``
    are the latest checkpoints the store keeps (the engine resumes the last
    :data:`~qudag_node.core.checkpoints.KEEP`).
    """

    log_length: int
    log_hash: bytes
    committed_round: int
    vertices: tuple[StoredVertex, ...]
    pending: tuple[tuple[TxId, bytes], ...]
    own_proposal: Vertex | None = None
    #: (round, author) slots whose equivocation evidence is already kept
    equivocations: tuple[tuple[int, NodeId], ...] = ()
    checkpoints: tuple[RestoredCheckpoint, ...] = ()


@dataclass(frozen=True, slots=True)
class SubmitResult:
    """Which submitted transactions are new and which were already known."""

    admitted: tuple[TxId, ...]
    duplicates: tuple[TxId, ...]


@dataclass(frozen=True, slots=True)
class Statistics:
    """A read-only summary of the engine's state."""

    role: Role
    round: int
    highest_round: int
    committed_round: int
    pending: int
    in_flight: int
    dag_window: int
    log_length: int
    log_hash: bytes
    buffered: int
    buffer_dropped: int
    fetching: int
    peers: int
    checkpoint: Checkpoint | None  # the latest certified here


@dataclass(slots=True)
class _OwnProposal:
    vertex: Vertex
    votes: dict[int, bytes]
    proposed_at: float
    sent_at: float


class Engine:
    """One node's consensus engine. Exactly one task may drive it."""

    def __init__(
        self,
        genesis: Genesis,
        params: Params,
        signer: Signer,
        snapshot: Snapshot | None = None,
        verifier: Verifier | None = None,
    ) -> None:
        self._genesis = genesis
        self._verifier = verifier or SequentialVerifier()
        self._params = params
        self._signer = signer
        self._index = genesis.index_of(signer.node_id)
        self.role = Role.VALIDATOR if self._index is not None else Role.OBSERVER
        self._dag = Dag()
        self._consensus = Consensus(genesis)
        self._log = FinalLog(0, b"")
        self._intake = Intake(params)
        self._pool = Pool()
        self._slots: dict[tuple[int, NodeId], SignedHeader] = {}  # first signed per slot
        self._equivocators: set[tuple[int, NodeId]] = set()
        self._stored: dict[VertexId, Vertex] = {}  # voted for, not certified yet
        self._own: _OwnProposal | None = None
        self._own_latest: tuple[VertexId, Certificate] | None = None
        self._announced_at = 0.0
        self._facts: list[Fact] = []
        self._effects: list[Effect] = []
        self._notices: list[Notice] = []
        self._outbox: list[tuple[PeerId, bytes]] = []
        self._peers: dict[PeerId, NodeId] = {}
        self._peer_names: list[PeerId] = []  # sorted
        self._validator_peers: list[PeerId] = []  # sorted
        self._peer_by_key: dict[NodeId, PeerId] = {}  # the first by name, per key
        self._own_round = 0
        self._last_proposal_at: float | None = None
        self._seen_time = False  # no input has told us the time yet
        self._clock = 0.0  # the monotonic reading of the latest input
        self._ready_round: int | None = None  # highest round with a quorum, if >= ours
        self._ready_at = 0.0
        self._catching_up = False
        self._handed_back: set[VertexId] = set()  # own vertices passed over, payload re-proposed
        self._reproposing: set[TxId] = set()  # their payload: ours to propose until final
        snapshot = snapshot or Snapshot(0, log_hash_start(genesis.hash), 0, (), ())
        self._previous_commit = snapshot.committed_round  # round of the last leader committed
        self._checkpoints = CheckpointSigning(
            genesis,
            signer,
            self._verifier,
            snapshot.committed_round // params.checkpoint_interval,
            snapshot.checkpoints,
        )
        self._take_checkpoint_output()  # a solo validator certifies a restored one at once
        self._restore(snapshot)

    # ----------------------------------------------------------------- inputs

    def submit_transactions(
        self, ids: Sequence[TxId], transactions: Sequence[bytes], now: Instant
    ) -> SubmitResult:
        """Admit a client batch, all or nothing; ``ids`` must be ``tx_ids(transactions)``.

        Raises :class:`InputRejected` for a bad transaction or a full pool, in which
        case nothing was admitted.
        """
        (outcome,) = self.submit_batches([(ids, transactions)], now)
        if isinstance(outcome, InputRejected):
            raise outcome
        return outcome

    def submit_batches(
        self, batches: Sequence[tuple[Sequence[TxId], Sequence[bytes]]], now: Instant
    ) -> list[SubmitResult | InputRejected]:
        """Admit several client batches, each all or nothing, as one
        :meth:`submit_transactions` call per batch in order would at one instant: a
        batch is refused (its outcome is the :class:`InputRejected`) for a bad
        transaction, or when the pool cannot take its new transactions after the
        batches before it. The admitted ones share one ``TransactionsAdmitted`` event,
        one lookup of which ids are known and one proposal check at the end (so no
        proposal empties the pool between two batches), and a step's many small
        submissions cost about what one batch of their size does. Each batch's ids
        must be ``tx_ids`` of its transactions.
        """
        if any(len(ids) != len(txs) for ids, txs in batches):
            raise UsageError("ids and transactions differ in length")
        known = iter(self._known([i for ids, _ in batches for i in ids]))
        admitted: dict[TxId, bytes] = {}
        outcomes: list[SubmitResult | InputRejected] = []
        for ids, transactions in batches:
            flags = list(islice(known, len(ids)))
            try:
                check_batch(transactions, self._params)
            except InputRejected as e:
                outcomes.append(e)
                continue
            new: dict[TxId, bytes] = {}
            duplicates: list[TxId] = []
            for i, tx, old in zip(ids, transactions, flags, strict=True):
                if old or i in admitted or i in new:
                    duplicates.append(i)
                else:
                    new[i] = tx
            waiting = self._pool.waiting + len(admitted)
            if waiting + len(new) > self._params.max_pending:
                outcomes.append(
                    InputRejected(
                        Reason.POOL_FULL,
                        f"{waiting} transactions pending, limit {self._params.max_pending}",
                    )
                )
                continue
            admitted.update(new)
            outcomes.append(SubmitResult(tuple(new), tuple(duplicates)))
        if admitted:
            self._pool.add(admitted)
            self._facts.append(TransactionsAdmitted(tuple(admitted), tuple(admitted.values())))
        self._refresh(now)
        return outcomes

    def requeue_transactions(
        self, ids: Sequence[TxId], transactions: Sequence[bytes], now: Instant
    ) -> None:
        """Put stored, not final transactions back in the pool (after an orphaning)."""
        logged = self._log.contains(ids)
        fresh = [(i, tx) for i, tx, old in zip(ids, transactions, logged, strict=True) if not old]
        self._pool.requeue([i for i, _ in fresh], [tx for _, tx in fresh])
        self._refresh(now)

    def receive_message(self, peer: PeerId, data: bytes, now: Instant) -> None:
        """Handle bytes from a peer; a bad message becomes a ``MessageRejected`` event."""
        self._receive(peer, data, self._decode(data), now)

    def receive_messages(self, messages: Sequence[tuple[PeerId, bytes]], now: Instant) -> None:
        """Handle (peer, bytes) messages in order, exactly as :meth:`receive_message`
        one by one would. Each is decoded once; the signatures the batch carries are
        handed to the engine's :class:`~qudag_node.core.crypto.Verifier` together
        first, so that the checks themselves find their results remembered."""
        verifier = self._verifier
        step = max(1, verifier.cache_size // (2 * (self._genesis.n + 1)))  # results stay cached
        for first in range(0, len(messages), step):
            batch = messages[first : first + step]
            decoded = [self._decode(data) for _, data in batch]
            checks = [
                c for m in decoded if not isinstance(m, InputRejected) for c in self._checks(m)
            ]
            if checks:
                verifier.verify_many(checks)
            for (peer, data), message in zip(batch, decoded, strict=True):
                self._receive(peer, data, message, now)

    def _receive(
        self, peer: PeerId, data: bytes, message: Message | InputRejected, now: Instant
    ) -> None:
        """Handle one decoded message (or its decoding error)."""
        self._clock = now.monotonic
        try:
            if isinstance(message, InputRejected):
                raise message
            self._dispatch(peer, message, now)
        except InputRejected as e:
            self._notices.append(MessageRejected(peer, e.reason, e.message, message_kind(data)))
        self._refresh(now)

    def peer_connected(self, peer: PeerId, node: NodeId) -> None:
        """A link to ``peer``, who proved it holds the key of ``node``, is up."""
        self._peers[peer] = node
        self._peers_changed()

    def peer_disconnected(self, peer: PeerId) -> None:
        """The link to ``peer`` is gone."""
        self._peers.pop(peer, None)
        self._peers_changed()

    def _peers_changed(self) -> None:
        g = self._genesis
        self._peer_names = sorted(self._peers)
        self._validator_peers = [
            p for p in self._peer_names if g.index_of(self._peers[p]) is not None
        ]
        self._peer_by_key = {key: p for p, key in sorted(self._peers.items(), reverse=True)}

    def set_catching_up(self, catching_up: bool, now: Instant) -> None:
        """While catching up with peers that are ahead, a validator does not propose:
        its rounds would be long past, and a node restarted on an empty store could
        sign a round its key already signed in an earlier life."""
        self._catching_up = catching_up
        self._refresh(now)

    def handle_timer(self, now: Instant) -> None:
        """Called at (or after) the time :meth:`get_timer` named."""
        self._refresh(now)

    # ---------------------------------------------------------------- outputs

    def take_output(self) -> StepOutput:
        """Everything produced since the last call: act on its effects and messages
        only once its facts are durable."""
        out = StepOutput(
            tuple(self._facts), tuple(self._effects), tuple(self._outbox), tuple(self._notices)
        )
        self._facts, self._effects, self._outbox, self._notices = [], [], [], []
        return out

    def carrier(self, tx_id: TxId) -> VertexId | None:
        """The vertex carrying ``tx_id`` while it is included but not final, else None."""
        return self._pool.carrier(tx_id)

    def author_of(self, vid: VertexId) -> NodeId | None:
        """The author of certified vertex ``vid`` while the DAG window holds it, else None."""
        vertex = self._dag.get(vid)
        return None if vertex is None else vertex.author

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` should next be called (on the monotonic clock of
        :attr:`Instant.monotonic`), or None for never.

        Before the first input the engine has not seen the time yet and asks to be
        called at once (0.0).
        """
        if not self._seen_time and self.role is Role.VALIDATOR:
            return 0.0
        times = [self._proposal_time(), self._intake.next_due() if self._peers else None]
        if self._own is not None and self._peers:
            times.append(self._own.sent_at + self._params.retry_interval)
        if self.role is Role.OBSERVER and self._validator_peers:
            times.append(self._pool.next_forward(self._params.retry_interval))
        if self._stalled() and self._peers:
            times.append(self._announced_at + self._params.retry_interval)
        if self._validator_peers:
            times.append(self._checkpoints.next_due(self._params.retry_interval))
        return min((t for t in times if t is not None), default=None)

    @property
    def pending(self) -> int:
        """Transactions admitted and not carried by a vertex yet (``max_pending`` bounds
        them): ``statistics().pending``, without the rest of the summary."""
        return self._pool.waiting

    def statistics(self) -> Statistics:
        """Current counters and positions."""
        return Statistics(
            role=self.role,
            round=self._own_round,
            highest_round=max(self._dag.highest_round(), self._own_round),
            committed_round=self._consensus.committed_round,
            pending=self.pending,
            in_flight=self._pool.in_flight,
            dag_window=len(self._dag),
            log_length=self._log.length,
            log_hash=self._log.hash,
            buffered=len(self._intake),
            buffer_dropped=self._intake.dropped,
            fetching=self._intake.wanted,
            peers=len(self._peers),
            checkpoint=self._checkpoints.latest_certified,
        )

    # ----------------------------------------------------------- restoring

    def _restore(self, snapshot: Snapshot) -> None:
        self._log = FinalLog(snapshot.log_length, snapshot.log_hash)
        self._consensus.committed_round = snapshot.committed_round
        floor = max(0, snapshot.committed_round - self._params.gc_depth)
        own = snapshot.own_proposal
        if own is not None and own.round < floor:
            own = None  # too old to be certified now: its transactions are pending again
        carried: set[TxId] = set(own.tx_ids) if own is not None else set()
        for sv in sorted(snapshot.vertices, key=lambda s: s.header.round):
            h = sv.header
            self._slots.setdefault((h.round, h.author), SignedHeader(sv.header_bytes, sv.signature))
            if h.author == self._signer.node_id:
                self._own_round = max(self._own_round, h.round)
            if sv.certificate is None:
                if h.author != self._signer.node_id:
                    carried.update(sv.tx_ids)
                continue
            dv = DagVertex(sv.id, h.round, h.author, h.parents, h.tx_count, h.timestamp_ms)
            self._dag.add(dv, sv.tx_ids, sv.ordered)
            if sv.ordered:
                self._log.remember(h.round, sv.tx_ids)
            else:
                self._pool.carry(sv.tx_ids, sv.id)
            carried.update(sv.tx_ids)
            if h.author == self._signer.node_id:
                self._own_latest = (sv.id, sv.certificate)
        self._dag.prune_below(floor)
        self._equivocators = {slot for slot in snapshot.equivocations if slot[0] >= floor}
        if own is not None:
            self._own = _OwnProposal(own, {}, 0.0, 0.0)
            self._stored[own.id] = own
            self._add_own_vote(own)
            self._pool.carry(own.tx_ids, own.id)
        ids = [i for i, _ in snapshot.pending]
        logged = self._log.contains(ids)
        self._pool.add(
            {
                i: tx
                for (i, tx), old in zip(snapshot.pending, logged, strict=True)
                if not old and i not in carried
            }
        )

    # ----------------------------------------------------------- bookkeeping

    def _known(self, ids: Sequence[TxId]) -> list[bool]:
        """For each id: held in the pool or ordered inside the window."""
        logged = self._log.contains(ids)
        return [held or old for held, old in zip(self._pool.holds(ids), logged, strict=True)]

    def _send(self, peer: PeerId, message: Message) -> None:
        self._outbox.append((peer, encode_message(message)))

    def _broadcast(self, message: Message) -> None:
        if self._peers:
            data = encode_message(message)
            self._outbox.extend((p, data) for p in self._peer_names)

    # ------------------------------------------------------------- messages

    def _decode(self, data: bytes) -> Message | InputRejected:
        try:
            if data[:1] == _TRACED:  # the wrapper is transparent: its inner message counts
                data = decode_traced(data).inner
            return decode_message(data, self._params)
        except InputRejected as e:
            return e

    def _checks(self, message: Message) -> list[SignatureCheck]:
        """The signature checks handling ``message`` is likely to make (see
        :func:`~qudag_node.core.rules.check_vertex`,
        :func:`~qudag_node.core.certificate.check_certificate` and votes)."""
        match message:
            case ProposalMessage(vertex):
                return self._vertex_checks(vertex)
            case CertifiedMessage(vertex, certificate):
                if not (checks := self._vertex_checks(vertex)):
                    return []
                return checks + self._certificate_checks(vertex.id, certificate)
            case CertificateMessage(vid, certificate):
                if vid in self._dag or (vid not in self._stored and self._intake.get(vid) is None):
                    return []
                return self._certificate_checks(vid, certificate)
            case VoteMessage(vid, voter, scheme, signature):
                own = self._own
                if own is None or vid != own.vertex.id or scheme is not self._genesis.scheme:
                    return []
                check = self._genesis.vote_check(voter, vid, signature)
                return [] if check is None else [check]
            case CheckpointSignatureMessage():
                return self._checkpoints.checks(message)
        return []

    def _vertex_checks(self, vertex: Vertex) -> list[SignatureCheck]:
        h = vertex.header
        check = self._genesis.signature_check(h.author, Purpose.VERTEX, vertex.id, vertex.signature)
        if vertex.id in self._dag or h.scheme is not self._genesis.scheme or check is None:
            return []
        return [check]

    def _certificate_checks(self, vid: VertexId, cert: Certificate) -> list[SignatureCheck]:
        if cert.scheme is not self._genesis.scheme or len(cert.voters) < self._genesis.quorum:
            return []
        return vote_checks(cert, vid, self._genesis)

    def _dispatch(self, peer: PeerId, message: Message, now: Instant) -> None:
        match message:
            case ProposalMessage(vertex):
                self._on_proposal(peer, vertex, now)
            case VoteMessage():
                self._on_vote(message)
            case CertificateMessage(vid, certificate):
                self._on_certificate(peer, vid, certificate, now.monotonic)
            case CertifiedMessage(vertex, certificate):
                self._on_certified(peer, vertex, certificate, now)
            case FetchMessage(ids):
                self._effects.append(VerticesRequested(peer, ids))
            case TransactionsMessage(transactions):
                self._on_transactions(peer, transactions)
            case CheckpointSignatureMessage():
                try:
                    self._checkpoints.receive(peer, message)
                finally:
                    self._take_checkpoint_output()

    def _admissible(self, vertex: Vertex, wall: float) -> bool:
        """Checks every received vertex passes; False for one we already hold."""
        if vertex.id in self._dag:
            return False
        if vertex.round < self._dag.floor:
            raise InputRejected(Reason.STALE_ROUND, f"round {vertex.round} is below the window")
        check_vertex(vertex, self._genesis, self._params, wall, self._verifier)
        return True

    def _claim_slot(self, vertex: Vertex, certified: bool) -> None:
        """Record the first vertex of its (round, author); a different second one is
        equivocation: its evidence is kept, and it is rejected unless certified.

        A valid vertex of our own key that we do not hold comes from an earlier life of
        this node (a data dir restored from an older backup, say): we must never sign
        another vertex for its round, so our round moves up to it.
        """
        if vertex.author == self._own_key:
            self._own_round = max(self._own_round, vertex.round)
        key = (vertex.round, vertex.author)
        first = self._slots.get(key)
        if first is None:
            self._slots[key] = SignedHeader(vertex.header_bytes, vertex.signature)
            return
        if first.id == vertex.id:
            return
        if key not in self._equivocators:
            self._equivocators.add(key)
            second = SignedHeader(vertex.header_bytes, vertex.signature)
            self._facts.append(
                EquivocationDetected(Equivocation(vertex.author, vertex.round, first, second))
            )
        if not certified:
            raise InputRejected(Reason.EQUIVOCATION, f"second vertex for round {vertex.round}")
        self._slots[key] = SignedHeader(vertex.header_bytes, vertex.signature)

    def _missing_parents(self, vertex: Vertex) -> set[VertexId]:
        if vertex.round - 1 < self._dag.floor:
            return set()  # parents are below the window: ordered or orphaned long ago
        missing: set[VertexId] = set()
        authors: set[NodeId] = set()
        for pid in vertex.parents:
            parent = self._dag.get(pid)
            if parent is None:
                missing.add(pid)
                continue
            if parent.round != vertex.round - 1:
                raise InputRejected(Reason.BAD_PARENT, "parent from the wrong round")
            if parent.author in authors:
                raise InputRejected(Reason.BAD_PARENT, "two parents from one validator")
            authors.add(parent.author)
        return missing

    def _wait_for_parents(
        self,
        peer: PeerId,
        vertex: Vertex,
        certificate: Certificate | None,
        missing: set[VertexId],
        now: float,
    ) -> None:
        self._intake.hold(vertex, certificate, missing, peer)
        asked = self._intake.want(sorted(missing), vertex.round - 1, peer, now)
        for data in fetch_messages(asked, self._params):
            self._outbox.append((peer, data))

    def _on_proposal(self, peer: PeerId, vertex: Vertex, now: Instant) -> None:
        if not self._admissible(vertex, now.wall):
            return
        self._claim_slot(vertex, certified=False)
        if vertex.id in self._stored:
            self._vote(vertex)  # the author asks again: our vote may have been lost
            return
        missing = self._missing_parents(vertex)
        if missing:
            self._wait_for_parents(peer, vertex, None, missing, now.monotonic)
        else:
            self._store_and_vote(vertex)

    def _store_and_vote(self, vertex: Vertex) -> None:
        self._stored[vertex.id] = vertex
        self._facts.append(VertexStored(vertex, own=False))
        self._vote(vertex)

    def _vote(self, vertex: Vertex) -> None:
        if self._index is None:
            return
        peer = self._peer_by_key.get(vertex.author)
        if peer is not None:
            signature = self._signer.sign(Purpose.VOTE, vertex.id)
            self._send(peer, VoteMessage(vertex.id, self._index, self._signer.scheme, signature))

    def _on_vote(self, vote: VoteMessage) -> None:
        own = self._own
        if own is None or vote.vertex != own.vertex.id or vote.voter in own.votes:
            return  # late or repeated: harmless
        if vote.scheme is not self._genesis.scheme:
            raise InputRejected(
                Reason.WRONG_SCHEME,
                f"vote signed with {vote.scheme.label}, not {self._genesis.scheme.label}",
            )
        check = self._genesis.vote_check(vote.voter, vote.vertex, vote.signature)
        if check is None:
            raise InputRejected(Reason.UNKNOWN_AUTHOR, f"voter {vote.voter} is no validator")
        if not self._verifier.verify(check):
            raise InputRejected(Reason.BAD_SIGNATURE, "vote signature does not verify")
        own.votes[vote.voter] = vote.signature
        self._certify_own_if_quorum()

    def _add_own_vote(self, vertex: Vertex) -> None:
        if self._own is not None and self._index is not None:
            self._own.votes[self._index] = self._signer.sign(Purpose.VOTE, vertex.id)
            self._certify_own_if_quorum()

    def _certify_own_if_quorum(self) -> None:
        own = self._own
        if own is None or len(own.votes) < self._genesis.quorum:
            return
        certificate = make_certificate(self._signer.scheme, own.votes)
        self._own = None
        self._own_latest = (own.vertex.id, certificate)
        self._broadcast(CertificateMessage(own.vertex.id, certificate))
        self._add_certified([(own.vertex, certificate)])

    def _on_certificate(
        self, peer: PeerId, vid: VertexId, certificate: Certificate, now: float
    ) -> None:
        if vid in self._dag:
            return
        stored = self._stored.get(vid)
        waiting = self._intake.get(vid)
        if stored is None and waiting is None:
            if self._intake.want([vid], self._dag.highest_round(), peer, now):
                self._send(peer, FetchMessage((vid,)))
            return
        check_certificate(certificate, vid, self._genesis, self._verifier)
        if waiting is not None:
            waiting.certificate = certificate
        elif stored is not None:
            self._add_certified([(stored, certificate)])

    def _on_certified(
        self, peer: PeerId, vertex: Vertex, certificate: Certificate, now: Instant
    ) -> None:
        if not self._admissible(vertex, now.wall):
            return
        check_certificate(certificate, vertex.id, self._genesis, self._verifier)
        self._claim_slot(vertex, certified=True)
        missing = self._missing_parents(vertex)
        if missing:
            self._wait_for_parents(peer, vertex, certificate, missing, now.monotonic)
        else:
            self._add_certified([(vertex, certificate)])

    def _on_transactions(self, peer: PeerId, transactions: Sequence[bytes]) -> None:
        if self.role is not Role.VALIDATOR:
            raise InputRejected(Reason.NOT_A_VALIDATOR, "only validators take transactions")
        check_batch(transactions, self._params)
        ids = tx_ids(transactions)
        known = self._known(ids)
        fresh = [(i, tx) for i, tx, old in zip(ids, transactions, known, strict=True) if not old]
        if fresh:  # the store decides which are new, as for a client's submit
            self._effects.append(
                TransactionsForwarded(
                    peer, tuple(i for i, _ in fresh), tuple(tx for _, tx in fresh)
                )
            )

    # ---------------------------------------------------------- certified

    def _add_certified(self, work: list[tuple[Vertex, Certificate]]) -> None:
        """Put certified vertices into the DAG, then whatever was waiting on them."""
        while work:
            vertex, certificate = work.pop()
            if vertex.id in self._dag or vertex.round < self._dag.floor:
                continue
            if self._stored.pop(vertex.id, None) is None:  # arrived certified: store it all
                self._facts.append(VertexStored(vertex, own=False))
            self._facts.append(VertexCertified(vertex.id, vertex.round, certificate))
            self._insert(vertex)
            for entry in self._intake.arrived(vertex.id):
                self._resume(entry, work)

    @property
    def _own_key(self) -> NodeId:
        return self._signer.node_id

    def _resume(self, entry: Waiting, work: list[tuple[Vertex, Certificate]]) -> None:
        vertex = entry.vertex
        if vertex.round < self._dag.floor or vertex.id in self._dag:
            return
        try:
            self._missing_parents(vertex)  # the parents it waited for obey the rules too
        except InputRejected as e:
            self._notices.append(MessageRejected(entry.peer, e.reason, e.message, "waiting"))
            return
        if entry.certificate is not None:
            work.append((vertex, entry.certificate))
        elif vertex.id not in self._stored:
            self._store_and_vote(vertex)

    def _insert(self, vertex: Vertex) -> None:
        dv = DagVertex(
            vertex.id,
            vertex.round,
            vertex.author,
            vertex.parents,
            len(vertex.tx_ids),
            vertex.header.timestamp_ms,
        )
        self._dag.add(dv, vertex.tx_ids, ordered=False)
        self._pool.carry(vertex.tx_ids, vertex.id)
        for commit in self._consensus.on_vertex_added(self._dag, dv):
            self._commit(commit.leader, commit.skipped)

    def _commit(self, leader: DagVertex, skipped: tuple[int, ...]) -> None:
        ordered = self._dag.take_history(leader)
        for _, ids in ordered:
            self._pool.release(ids)
        entries = self._log.append(ordered)
        self._facts.append(
            LeaderCommitted(
                leader.round, leader.id, tuple(dv.id for dv, _ in ordered), entries, skipped
            )
        )
        floor = leader.round - self._params.gc_depth
        if floor > self._dag.floor:
            self._prune_below(floor)
        interval = self._params.checkpoint_interval
        if leader.round // interval > self._previous_commit // interval:
            self._make_checkpoint(leader, floor)
        self._previous_commit = leader.round

    def _make_checkpoint(self, leader: DagVertex, floor: int) -> None:
        """Compute the checkpoint of ``leader``, just committed (the window: the ordered
        vertices of rounds at or above ``floor``), and sign it."""
        window = sorted(self._dag.ordered_ids(floor))
        checkpoint = Checkpoint(
            self._genesis.hash,
            leader.round // self._params.checkpoint_interval,
            leader.round,
            leader.id,
            leader.timestamp_ms,
            self._log.length,
            self._log.hash,
            len(window),
            window_root(window),
        )
        self._checkpoints.made(checkpoint, window, self._clock)
        self._take_checkpoint_output()

    def _take_checkpoint_output(self) -> None:
        """Move what the checkpoint signing produced into this step's output."""
        book = self._checkpoints
        self._facts.extend(book.facts)
        for peer, message in book.sends:
            if peer is None:
                self._broadcast(message)
            else:
                self._send(peer, message)
        self._notices.extend(
            MessageRejected(peer, e.reason, e.message, "checkpoint_signature")
            for peer, e in book.refused
        )
        book.facts, book.sends, book.refused = [], [], []

    def _prune_below(self, floor: int) -> None:
        """Forget the rounds below ``floor``; the transactions of our own vertices pruned
        unordered, and those we handed back that another pruned vertex carried, are
        orphaned: we propose them again."""
        if self._reproposing:  # forget those final by now
            held = list(self._reproposing)
            logged = self._log.contains(held)
            self._reproposing.difference_update(
                i for i, old in zip(held, logged, strict=True) if old
            )
        orphaned: dict[TxId, None] = {}
        for dv, ids in self._dag.prune_below(floor):
            if dv.id in self._handed_back:
                continue  # its transactions were released and proposed again already
            self._pool.release(ids)
            mine = dv.author == self._own_key
            orphaned.update((i, None) for i in ids if mine or i in self._reproposing)
        self._handed_back = {vid for vid in self._handed_back if vid in self._dag}
        self._log.prune_below(floor)
        self._intake.prune_below(floor)
        for key in [k for k in self._slots if k[0] < floor]:
            del self._slots[key]
        self._equivocators = {k for k in self._equivocators if k[0] >= floor}
        for vid in [vid for vid, v in self._stored.items() if v.round < floor]:
            del self._stored[vid]
        if self._own is not None and self._own.vertex.round < floor:
            self._abandon_own()
        if orphaned:
            self._effects.append(TransactionsOrphaned(tuple(orphaned)))

    # ------------------------------------------------------------ proposing

    def _quorum_round(self) -> int | None:
        """The highest round, at or above our own, that holds a quorum (0 is genesis)."""
        top = max(self._dag.highest_round(), self._own_round)
        for r in range(top, self._own_round - 1, -1):
            if r == 0 or len(self._dag.round(r)) >= self._genesis.quorum:
                return r
        return None

    def _refresh(self, now: Instant) -> None:
        self._seen_time = True
        self._clock = now.monotonic
        self._retry(now.monotonic)
        self._update_ready(now.monotonic)
        when = self._proposal_time()
        if when is not None and when <= now.monotonic and self._ready_round is not None:
            self._propose(self._target_round(self._ready_round), now)
            self._update_ready(now.monotonic)

    def _target_round(self, ready: int) -> int:
        """The round to propose once ``ready`` holds a quorum: the next one, unless
        ``ready`` is a leader round of ours we have no vertex in. A leader never skips
        its own round because the others' vertices formed a quorum there first: every
        proposer of the next round would wait the leader timeout for it."""
        if (
            ready > self._own_round
            and ready >= 2
            and ready % 2 == 0
            and self._genesis.leader(ready) == self._own_key
        ):
            return ready
        return ready + 1

    def _retry(self, now: float) -> None:
        """Ask again what went unanswered; forward what observers hold."""
        retry = self._params.retry_interval
        for peer, ids in self._intake.due(now, self._peer_names).items():
            self._outbox.extend((peer, data) for data in fetch_messages(ids, self._params))
        own = self._own
        if own is not None and self._peers and own.sent_at + retry <= now:
            own.sent_at = now  # ask again the validators whose votes are missing
            data = encode_message(ProposalMessage(own.vertex))
            for peer in self._validator_peers:
                voter = self._genesis.index_of(self._peers[peer])
                if voter not in own.votes:
                    self._outbox.append((peer, data))
        if self._stalled() and self._announced_at + retry <= now:
            self._announced_at = now
            if self._own_latest is not None:
                self._broadcast(CertificateMessage(*self._own_latest))
        voters = [(p, self._genesis.index_of(self._peers[p])) for p in self._validator_peers]
        self._checkpoints.retry(now, retry, [(p, v) for p, v in voters if v is not None])
        self._take_checkpoint_output()
        self._forward(now)

    def _stalled(self) -> bool:
        """A validator that wants to move on but holds no quorum at its own round."""
        return (
            self.role is Role.VALIDATOR
            and self._ready_round is None
            and self._own is None
            and self._own_latest is not None
        )

    def _forward(self, now: float) -> None:
        validators = self._validator_peers
        if self.role is not Role.OBSERVER or not validators:
            return
        due = self._pool.forward_due(now, self._params.retry_interval)
        step = self._params.max_vertex_txs
        for k in range(0, len(due), step):
            data = encode_message(TransactionsMessage(tuple(due[k : k + step])))
            self._outbox.extend((p, data) for p in validators)

    def _update_ready(self, now: float) -> None:
        ready = self._quorum_round()
        if ready != self._ready_round:
            self._ready_round = ready
            if ready is not None:
                self._ready_at = now

    def _has_work(self) -> bool:
        """Pending transactions, payload not ordered yet, or validators already at a
        round past ours: they wait for a quorum there, which may need our vertex."""
        return (
            bool(self._pool.pending)
            or self._dag.has_unordered_payload()
            or self._dag.highest_round() > self._own_round
        )

    def _proposal_time(self) -> float | None:
        if self.role is not Role.VALIDATOR or self._ready_round is None or self._catching_up:
            return None
        r = self._ready_round
        own_leader_round = self._target_round(r) == r
        when = self._ready_at
        if self._last_proposal_at is not None:
            when = max(when, self._last_proposal_at + self._params.min_round_interval)
        if self._own is not None:  # ours is not certified yet: give it a chance
            when = max(when, self._own.proposed_at + self._params.leader_timeout)
        if (
            not own_leader_round
            and r >= 2
            and r % 2 == 0
            and self._consensus.leader_vertex(self._dag, r) is None
        ):
            when = max(when, self._ready_at + self._params.leader_timeout)
        if not self._has_work():
            idle_since = (
                self._ready_at if self._last_proposal_at is None else self._last_proposal_at
            )
            when = max(when, idle_since + self._params.heartbeat_interval)
        return when

    def _abandon_own(self) -> None:
        """Our uncertified proposal was overtaken: its transactions go back to the pool."""
        own = self._own
        if own is None:
            return
        self._own = None
        self._stored.pop(own.vertex.id, None)
        self._pool.release(own.vertex.tx_ids)
        self._pool.requeue(own.vertex.tx_ids, own.vertex.transactions)

    def _hand_back_passed_over(self, round_: int) -> None:
        """Our certified vertices of the rounds before the last that no vertex of the
        next round names as a parent, although a quorum of it is here, can only be
        ordered if a late vertex of that round names them. Their transactions are
        released and proposed again now, not after ``gc_depth`` rounds; should such a
        vertex be ordered after all, the log skips the copies. They stay ours to propose
        until final: if another vertex carries them and is pruned unordered,
        :meth:`_prune_below` orphans them again."""
        for r in range(max(self._dag.floor, round_ - 4), round_ - 1):
            mine = self._dag.at(r, self._own_key)
            if mine is None or mine.id in self._handed_back or self._dag.is_ordered(mine.id):
                continue
            children = self._dag.round(r + 1).values()
            if len(children) < self._genesis.quorum or any(
                mine.id in child.parents for child in children
            ):
                continue
            self._handed_back.add(mine.id)
            ids = self._dag.unordered_ids(mine.id)
            if ids:
                self._pool.release(ids)
                self._reproposing.update(ids)
                self._effects.append(TransactionsOrphaned(ids))

    def _propose(self, round_: int, now: Instant) -> None:
        if round_ <= self._own_round:
            raise UsageError(f"round {round_} proposed again")
        self._hand_back_passed_over(round_)
        self._abandon_own()
        parents = [v.id for v in self._dag.round(round_ - 1).values()] if round_ > 1 else []
        ids, txs = self._pool.take(self._params.max_vertex_txs, self._params.max_vertex_bytes)
        vertex = make_vertex(
            self._signer, self._genesis.hash, round_, int(now.wall * 1000), parents, txs, ids
        )
        self._own_round = round_
        self._last_proposal_at = now.monotonic
        self._slots[(round_, self._own_key)] = SignedHeader(vertex.header_bytes, vertex.signature)
        self._pool.carry(vertex.tx_ids, vertex.id)
        self._facts.append(VertexStored(vertex, own=True))
        self._stored[vertex.id] = vertex
        self._own = _OwnProposal(vertex, {}, now.monotonic, now.monotonic)
        self._broadcast(ProposalMessage(vertex))
        self._add_own_vote(vertex)
