"""The sync machine: catch-up and anti-entropy between linked peers, without I/O.

:class:`SyncMachine` decides everything sync does; its adapter
(:mod:`qudag_node.sync`) only carries bytes, reads the store, logs and counts. The
machine is fed links coming up and down, decoded peer messages, the answers of the
store reads it asked for, and :class:`Tick` (time passed). Every call gets the node's
position (a :class:`~qudag_node.core.syncwire.Status`) and ``now``, monotonic seconds,
and returns what to do, in order: messages to send, store reads to make (each saying
what its answer is for), changes of catching up, and progress facts to log or count.

* **Catch-up.** A node more than :data:`CATCHUP_THRESHOLD` rounds behind its target
  peer (the ``trust``-th most advanced: f + 1 in a network of f faulty validators)
  asks that peer for whole rounds, :data:`ROUNDS_PER_REQUEST` at a time, from its
  committed round on. A request unanswered for :data:`REQUEST_TIMEOUT` seconds is
  asked again, of whichever peer is the target then.
* **Anti-entropy.** Every sync interval the machine sends each linked peer its STATUS
  and a SUMMARY of the rounds both windows hold; a differing bucket is answered with a
  finer SUMMARY, down to IDS lists; the side that gets a list fetches what it lacks
  and pushes what the other lacks.
* **State sync.** A node far behind, or with an empty store, joins from a peer's
  certified checkpoint instead (:mod:`~qudag_node.core.joining` decides); catch-up by
  rounds waits meanwhile, then continues from the checkpoint. Every node answers
  CHECKPOINT_REQUEST from its store and sends HOLDINGS with each STATUS.
* **Backfill.** A node that joined from a checkpoint, with backfill on, fetches the
  log below its base from peers that hold the history, once it is no longer catching
  up (:mod:`~qudag_node.core.backfill` decides); every node answers LOG_REQUEST from
  its store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import assert_never

from qudag_node.core.backfill import (
    Anchor,
    Backfill,
    BackfillFact,
    BackfillOutput,
    BackfillSend,
    BackfillWrite,
)
from qudag_node.core.certificate import Certificate
from qudag_node.core.errors import InputRejected, Reason
from qudag_node.core.joining import InstallCheckpoint, JoinFact, Joining, JoinOutput, JoinSend
from qudag_node.core.messages import fetch_messages
from qudag_node.core.params import Params
from qudag_node.core.syncwire import (
    LEAF_SPAN,
    MAX_IDS,
    CertifiedIds,
    CheckpointOffer,
    CheckpointRequest,
    Holdings,
    Ids,
    LogEntries,
    LogRequest,
    RoundsDone,
    RoundsRequest,
    Status,
    Summary,
    SyncMessage,
    bucket_span,
    differing,
    encode_sync,
    summarize,
)
from qudag_node.core.types import PeerId, VertexId
from qudag_node.core.vertex import Vertex

#: Rounds behind the target peer before a node catches up (and is not ready).
CATCHUP_THRESHOLD = 4
#: Rounds asked for in one ROUNDS request.
ROUNDS_PER_REQUEST = 64
#: Bytes of CERTIFIED messages one ROUNDS answer aims at (whole rounds are sent).
ROUNDS_ANSWER_BYTES = 4 << 20
#: Seconds to wait for a ROUNDS answer before asking again (another peer, maybe).
REQUEST_TIMEOUT = 20.0
#: Most rounds one SUMMARY or IDS may make us read.
MAX_SUMMARY_ROUNDS = 200_000
#: Seconds between catch-up progress facts.
PROGRESS_INTERVAL = 2.0


# ------------------------------------------------------------------ inputs


@dataclass(frozen=True, slots=True)
class PeerMessage:
    """A decoded sync message from a linked peer."""

    peer: PeerId
    message: SyncMessage


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed: send what the interval makes due and drive catch-up."""


@dataclass(frozen=True, slots=True)
class IdsRead:
    """The answer to :class:`ReadIds`: the certified ids of its rounds."""

    read: ReadIds
    certified: CertifiedIds


@dataclass(frozen=True, slots=True)
class RoundsServed:
    """The CERTIFIED messages :class:`ServeRounds` asked for went to ``peer``, covering
    rounds ``low..last``."""

    peer: PeerId
    low: int
    last: int


@dataclass(frozen=True, slots=True)
class WindowVertex:
    """A CERTIFIED vertex from ``peer`` while a checkpoint's window is fetched;
    ``wall`` is the wall-clock time its timestamp is held to."""

    peer: PeerId
    vertex: Vertex
    certificate: Certificate
    wall: float


@dataclass(frozen=True, slots=True)
class CheckpointInstalled:
    """The adapter did what :class:`InstallCheckpoint` asked; the store holds the log
    from position 1 up to ``prefix`` (None: not from position 1)."""

    prefix: Anchor | None = None


@dataclass(frozen=True, slots=True)
class SegmentLanded:
    """The adapter did what :class:`~qudag_node.core.backfill.LandSegment` asked."""


SyncInput = (
    PeerMessage | Tick | IdsRead | RoundsServed | WindowVertex | CheckpointInstalled | SegmentLanded
)


# ------------------------------------------- what an id read is for


@dataclass(frozen=True, slots=True)
class WindowSummary:
    """Our SUMMARY of the window we share with ``peer``, for ``peer``."""

    peer: PeerId


@dataclass(frozen=True, slots=True)
class CompareSummary:
    """Compare ``peer``'s SUMMARY with ours and answer the differing buckets."""

    peer: PeerId
    theirs: Summary


@dataclass(frozen=True, slots=True)
class CompareIds:
    """Compare ``peer``'s id list with ours: fetch what we lack, push what it lacks."""

    peer: PeerId
    theirs: Ids


IdsPurpose = WindowSummary | CompareSummary | CompareIds


# ----------------------------------------------------------------- outputs


@dataclass(frozen=True, slots=True)
class Send:
    """Send the message ``data`` to ``peer``."""

    peer: PeerId
    data: bytes


@dataclass(frozen=True, slots=True)
class ReadIds:
    """Read the certified ids of rounds ``low..high``; feed them back as :class:`IdsRead`."""

    low: int
    high: int
    purpose: IdsPurpose


@dataclass(frozen=True, slots=True)
class PushCertified:
    """Read the certified vertices ``ids`` and send them to ``peer`` as CERTIFIED
    messages, stopping if a send fails. Nothing comes back."""

    peer: PeerId
    ids: tuple[VertexId, ...]


@dataclass(frozen=True, slots=True)
class ServeRounds:
    """Read the CERTIFIED messages of rounds ``low..high`` (whole rounds, up to about
    ``max_bytes``) and send them to ``peer``; if every send succeeds, feed back
    :class:`RoundsServed` with the last round covered."""

    peer: PeerId
    low: int
    high: int
    max_bytes: int


@dataclass(frozen=True, slots=True)
class ServeCheckpoint:
    """Read certified checkpoint ``number`` (0: the latest) and its window; send them to
    ``peer`` as a CHECKPOINT message if the store holds it. Nothing comes back."""

    peer: PeerId
    number: int


@dataclass(frozen=True, slots=True)
class SendHoldings:
    """Read what this node can serve and send it to ``peers`` as HOLDINGS."""

    peers: tuple[PeerId, ...]


@dataclass(frozen=True, slots=True)
class ServeLog:
    """Read the log entries held from ``start`` on (at most ``count``) and send them to
    ``peer`` as LOG_ENTRIES. Nothing comes back."""

    peer: PeerId
    start: int
    count: int


StoreRead = ReadIds | PushCertified | ServeRounds | ServeCheckpoint | ServeLog


@dataclass(frozen=True, slots=True)
class CatchingUpChanged:
    """The node started (True) or stopped (False) catching up."""

    catching_up: bool


@dataclass(frozen=True, slots=True)
class CatchUpStarted:
    """Catch-up began at ``round``, ``gap`` rounds behind ``peer``'s ``target``."""

    round: int
    target: int
    gap: int
    peer: PeerId


@dataclass(frozen=True, slots=True)
class CaughtUp:
    """Catch-up ended at ``round``, ``rounds`` rounds and ``seconds`` after it began."""

    round: int
    rounds: int
    seconds: float


@dataclass(frozen=True, slots=True)
class CatchUpProgress:
    """Where catch-up stands (at most every :data:`PROGRESS_INTERVAL` seconds)."""

    round: int
    target: int
    gap: int
    log_length: int
    rounds_per_second: float | None


@dataclass(frozen=True, slots=True)
class RequestTimedOut:
    """The ROUNDS request from ``low`` to ``peer`` went unanswered; it is asked again."""

    peer: PeerId
    low: int


@dataclass(frozen=True, slots=True)
class GapMeasured:
    """Rounds behind the target peer (0 without one), measured on every tick."""

    gap: int


@dataclass(frozen=True, slots=True)
class SummaryCompared:
    """A peer's SUMMARY matched ours in every bucket (``in_sync``) or not."""

    in_sync: bool


@dataclass(frozen=True, slots=True)
class IdsCompared:
    """A peer's id list of rounds ``low..high``: ``fetching`` ids we lack, ``pushing``
    ids it lacks."""

    peer: PeerId
    low: int
    high: int
    fetching: int
    pushing: int


SyncFact = (
    CatchingUpChanged
    | CatchUpStarted
    | CaughtUp
    | CatchUpProgress
    | RequestTimedOut
    | GapMeasured
    | SummaryCompared
    | IdsCompared
    | JoinFact
    | BackfillFact
)
SyncOutput = Send | SendHoldings | StoreRead | InstallCheckpoint | BackfillWrite | SyncFact


@dataclass(frozen=True, slots=True)
class _Request:
    peer: PeerId
    low: int
    high: int
    sent_at: float


class SyncMachine:
    """Sync's decisions. Feed it with :meth:`link_up`, :meth:`link_down` and
    :meth:`step`; do what they return, in order."""

    def __init__(
        self,
        params: Params,
        interval: float,
        needs_peers: bool,
        trust: int,
        now: float,
        *,
        joining: Joining | None = None,
        backfill: Backfill | None = None,
    ) -> None:
        self._params = params
        self._joining = joining  # None: this node never state-syncs
        self._backfill = backfill  # None: this node never backfills
        self._interval = interval
        self._needs_peers = needs_peers  # a network of more than this node
        self._trust = trust  # peers that must claim a round before we chase it (f + 1)
        self._next_sync = now
        self._peers: dict[PeerId, Status] = {}
        self._linked: set[PeerId] = set()
        self._unannounced: set[PeerId] = set()  # linked, not sent HOLDINGS yet
        self._request: _Request | None = None
        self._requested_high = 0
        self._moved = (0, 0.0)  # (our highest round, when it last moved) while catching up
        self._catching_up = needs_peers
        self._catchup_started: tuple[float, int] | None = None
        self._progress_at = float("-inf")  # the first tick behind reports progress

    # ---------------------------------------------------------------- state

    @property
    def catching_up(self) -> bool:
        """Whether the node is behind its peers (or, in a network, has heard none yet)."""
        return self._catching_up

    def gap(self, ours: Status) -> int | None:
        """Rounds behind the target peer; None before any peer's status."""
        target = self._target()
        if target is None:
            return None
        return max(0, target[1].highest - ours.highest)

    def readiness(self, ours: Status) -> tuple[bool, str]:
        """Whether the node is in step with its peers, and a sentence saying so."""
        gap = self.gap(ours)
        if gap is None:
            if not self._needs_peers:
                return True, "no peers needed: this node is the whole network"
            return False, "no peer has told us its position yet"
        if self._catching_up:
            return False, f"catching up: {gap} rounds behind"
        return True, f"in step with peers ({gap} rounds behind)"

    def statuses(self) -> dict[PeerId, Status]:
        """The last STATUS of each linked peer."""
        return dict(self._peers)

    @property
    def joining(self) -> Joining | None:
        """State sync's state (None when this node never state-syncs)."""
        return self._joining

    @property
    def backfill(self) -> Backfill | None:
        """Backfill's state (None when this node never backfills)."""
        return self._backfill

    @property
    def fetching_window(self) -> bool:
        """Whether a checkpoint's window is being fetched: CERTIFIED messages are then
        for :class:`WindowVertex`, not the engine."""
        return self._joining is not None and self._joining.fetching

    def next_sync_in(self, now: float) -> float:
        """Seconds until the next STATUS and SUMMARY are due (0 when overdue)."""
        return max(0.0, self._next_sync - now)

    # ---------------------------------------------------------------- inputs

    def link_up(self, peer: PeerId, ours: Status) -> Send:
        """A link to ``peer`` is up: tell it where we stand (what we can serve follows
        at the next tick)."""
        self._linked.add(peer)
        self._unannounced.add(peer)
        return Send(peer, encode_sync(ours))

    def link_down(self, peer: PeerId) -> list[SyncOutput]:
        """Forget ``peer``; a catch-up request to it is asked of another at the next
        tick, a state sync with it is tried with another."""
        self._linked.discard(peer)
        self._unannounced.discard(peer)
        self._peers.pop(peer, None)
        if self._request is not None and self._request.peer == peer:
            self._request = None
        out = [] if self._joining is None else _join_outputs(self._joining.link_down(peer))
        if self._backfill is not None:
            out += _backfill_outputs(self._backfill.link_down(peer))
        return out

    def step(self, event: SyncInput, ours: Status, now: float) -> list[SyncOutput]:
        """Take in ``event``; what to do about it, in order.

        Raises :class:`InputRejected` (``bad_sync``) for a peer message that asks for
        more than the limits allow; nothing has changed then.
        """
        match event:
            case PeerMessage(peer, message):
                if peer not in self._linked:
                    return []  # queued before its link went down
                return self._on_message(peer, message, ours, now)
            case Tick():
                return self._tick(ours, now)
            case IdsRead(read, certified):
                return self._on_ids_read(read, certified)
            case RoundsServed(peer, low, last):
                return [Send(peer, encode_sync(RoundsDone(low, last)))]
            case WindowVertex(peer, vertex, certificate, wall):
                if self._joining is None:
                    return []
                return _join_outputs(self._joining.on_vertex(peer, vertex, certificate, wall, now))
            case CheckpointInstalled(prefix):
                return self._installed(prefix, now)
            case SegmentLanded():
                if self._backfill is None:
                    return []
                return _backfill_outputs(self._backfill.landed(now))
            case _:
                assert_never(event)

    # ------------------------------------------------------------ messages

    def _on_message(
        self, peer: PeerId, message: SyncMessage, ours: Status, now: float
    ) -> list[SyncOutput]:
        match message:
            case Status():
                self._peers[peer] = message
                return []
            case Summary(low, high):
                _check_width(low, high, "summary")
                return [ReadIds(low, high, CompareSummary(peer, message))]
            case Ids(low, high):
                _check_width(low, high, "ids")
                return [ReadIds(low, high, CompareIds(peer, message))]
            case RoundsRequest(low, high):
                return [ServeRounds(peer, low, high, ROUNDS_ANSWER_BYTES)]
            case RoundsDone(_, last):
                request = self._request
                if request is None or request.peer != peer or last < request.low:
                    return []  # not our request, or nothing served: it times out
                self._requested_high = max(self._requested_high, min(last, request.high))
                self._request = None
                return []
            case CheckpointRequest(number):
                return [ServeCheckpoint(peer, number)]
            case CheckpointOffer():
                out = []
                if self._joining is not None:
                    out += _join_outputs(self._joining.on_offer(peer, message, ours, now))
                if self._backfill is not None:
                    out += _backfill_outputs(self._backfill.on_offer(peer, message, now))
                return out
            case Holdings():
                if self._joining is not None:
                    self._joining.on_holdings(peer, message)
                if self._backfill is not None:
                    self._backfill.on_holdings(peer, message)
                return []
            case LogRequest(start, count):
                return [ServeLog(peer, start, count)]
            case LogEntries():
                if self._backfill is None:
                    return []
                return _backfill_outputs(self._backfill.on_entries(peer, message, now))
            case _:
                assert_never(message)

    def _on_ids_read(self, read: ReadIds, certified: CertifiedIds) -> list[SyncOutput]:
        match read.purpose:
            case WindowSummary(peer):
                summary = summarize(
                    certified, read.low, read.high, bucket_span(read.low, read.high)
                )
                return [Send(peer, encode_sync(summary))]
            case CompareSummary(peer, theirs):
                return self._compare_summary(peer, theirs, certified)
            case CompareIds(peer, theirs):
                return self._compare_ids(peer, theirs, certified)
            case _:
                assert_never(read.purpose)

    def _compare_summary(
        self, peer: PeerId, theirs: Summary, certified: CertifiedIds
    ) -> list[SyncOutput]:
        ours = summarize(certified, theirs.low, theirs.high, theirs.span)
        buckets = differing(ours, theirs)
        out: list[SyncOutput] = [SummaryCompared(in_sync=not buckets)]
        for k in buckets:
            low, high = theirs.bucket(k)
            if theirs.span <= LEAF_SPAN:
                answer: SyncMessage = Ids(low, high, certified.between(low, high)[:MAX_IDS])
            else:
                answer = summarize(certified, low, high, bucket_span(low, high))
            out.append(Send(peer, encode_sync(answer)))
        return out

    def _compare_ids(self, peer: PeerId, theirs: Ids, certified: CertifiedIds) -> list[SyncOutput]:
        ours = set(certified.between(theirs.low, theirs.high))
        missing = [i for i in theirs.ids if i not in ours]
        extra = tuple(sorted(ours.difference(theirs.ids)))
        out: list[SyncOutput] = [Send(peer, m) for m in fetch_messages(missing, self._params)]
        if extra:
            out.append(PushCertified(peer, extra))
        out.append(IdsCompared(peer, theirs.low, theirs.high, len(missing), len(extra)))
        return out

    # ---------------------------------------------------------------- ticks

    def _tick(self, ours: Status, now: float) -> list[SyncOutput]:
        out: list[SyncOutput] = []
        if now >= self._next_sync:
            self._next_sync = now + self._interval
            out += self._sync_round(ours)
        elif self._unannounced:
            out.append(SendHoldings(tuple(sorted(self._unannounced))))
        self._unannounced.clear()
        if self._joining is not None:
            out += _join_outputs(self._joining.tick(ours, now))
            if self._joining.active or self._joining.defers_catch_up(ours, now):
                return out  # rounds are asked for from the checkpoint, once it is in
        out += self._drive(ours, now)
        if self._backfill is not None and not self._catching_up:
            # the log before the checkpoint waits while the node catches up: it is
            # history, and catching up is what makes the node take part again
            out += _backfill_outputs(self._backfill.tick(now))
        return out

    def _installed(self, prefix: Anchor | None, now: float) -> list[SyncOutput]:
        """The checkpoint is in: catch-up by rounds starts again from it."""
        self._request = None
        self._requested_high = 0
        if self._joining is None:
            return []
        done = self._joining.installed(now)
        if done is None:
            return []
        # catching up from the checkpoint: even the last rounds within the threshold
        # are asked for (see _drive), as after any catch-up
        self._catchup_started = (now, done.round)
        out: list[SyncOutput] = [done]
        if self._backfill is not None:
            base = Anchor(done.number, done.log_length, done.log_hash)
            out += _backfill_outputs(self._backfill.joined(base, prefix))
        return out

    def _sync_round(self, ours: Status) -> list[SyncOutput]:
        """STATUS to every linked peer, each followed by a read for the SUMMARY of the
        rounds both windows hold, except the newest (still filling); then HOLDINGS."""
        status = encode_sync(ours)
        out: list[SyncOutput] = []
        for peer in sorted(self._linked):
            out.append(Send(peer, status))
            theirs = self._peers.get(peer)
            if theirs is None:
                continue
            low = max(ours.floor, theirs.floor, 1)
            high = min(ours.highest, theirs.highest) - 1
            if high >= low:
                out.append(ReadIds(low, high, WindowSummary(peer)))
        if self._linked:
            out.append(SendHoldings(tuple(sorted(self._linked))))
        return out

    def _target(self) -> tuple[PeerId, Status] | None:
        """The peer to catch up with: the ``trust``-th most advanced, so that no single
        peer claiming a far round can keep us chasing it; with fewer peers, the least
        advanced of them."""
        if not self._peers:
            return None
        ranked = sorted(self._peers.items(), key=lambda item: (-item[1].highest, item[0]))
        return ranked[min(self._trust, len(ranked)) - 1]

    def _drive(self, ours: Status, now: float) -> list[SyncOutput]:
        target = self._target()
        gap = 0 if target is None else max(0, target[1].highest - ours.highest)
        behind = self._needs_peers if target is None else gap > CATCHUP_THRESHOLD
        caught_up = self._catchup_started is not None and not behind
        out: list[SyncOutput] = self._announce(behind, ours, target, now)
        if behind != self._catching_up:
            self._catching_up = behind
            out.append(CatchingUpChanged(behind))
        out.append(GapMeasured(gap))
        if not behind or target is None:
            if caught_up and target is not None and gap > 0:
                # The last rounds within the threshold are asked for too: what they
                # finalize would otherwise wait for the peer's next round.
                peer, theirs = target
                request = RoundsRequest(ours.highest + 1, theirs.highest)
                out.append(Send(peer, encode_sync(request)))
            self._request = None
            self._requested_high = 0
            return out
        if now - self._progress_at >= PROGRESS_INTERVAL:
            out.append(self._progress(ours, target[1], now))
        return out + self._request_rounds(ours, target, now)

    def _request_rounds(
        self, ours: Status, target: tuple[PeerId, Status], now: float
    ) -> list[SyncOutput]:
        out: list[SyncOutput] = []
        request = self._request
        if request is not None and now - request.sent_at < REQUEST_TIMEOUT:
            return out
        if request is not None:
            out.append(RequestTimedOut(request.peer, request.low))
        if ours.highest != self._moved[0]:
            self._moved = (ours.highest, now)
        elif now - self._moved[1] >= REQUEST_TIMEOUT:
            self._requested_high = 0  # what was sent never arrived: ask again from our round
            self._moved = (ours.highest, now)
        low = max(ours.committed + 1, self._requested_high + 1)
        if low - ours.highest > 2 * ROUNDS_PER_REQUEST:
            return out  # the engine has not taken in what came: wait for it
        peer, theirs = target
        high = min(low + ROUNDS_PER_REQUEST - 1, theirs.highest)
        if high < low:
            return out
        self._request = _Request(peer, low, high, now)
        out.append(Send(peer, encode_sync(RoundsRequest(low, high))))
        return out

    def _announce(
        self, behind: bool, ours: Status, target: tuple[PeerId, Status] | None, now: float
    ) -> list[SyncOutput]:
        if behind and target is not None and self._catchup_started is None:
            self._catchup_started = (now, ours.highest)
            peer, theirs = target
            gap = theirs.highest - ours.highest
            return [CatchUpStarted(ours.highest, theirs.highest, gap, peer)]
        if not behind and self._catchup_started is not None:
            started, first = self._catchup_started
            self._catchup_started = None
            return [CaughtUp(ours.highest, ours.highest - first, round(now - started, 3))]
        return []

    def _progress(self, ours: Status, theirs: Status, now: float) -> CatchUpProgress:
        self._progress_at = now
        started = self._catchup_started
        rate = None
        if started is not None and now > started[0]:
            rate = round((ours.highest - started[1]) / (now - started[0]), 1)
        gap = theirs.highest - ours.highest
        return CatchUpProgress(ours.highest, theirs.highest, gap, ours.log_length, rate)


def _join_outputs(outputs: list[JoinOutput]) -> list[SyncOutput]:
    """State sync's outputs as the machine's: its requests become :class:`Send`."""
    return [Send(o.peer, o.data) if isinstance(o, JoinSend) else o for o in outputs]


def _backfill_outputs(outputs: list[BackfillOutput]) -> list[SyncOutput]:
    """Backfill's outputs as the machine's: its requests become :class:`Send`."""
    return [Send(o.peer, o.data) if isinstance(o, BackfillSend) else o for o in outputs]


def _check_width(low: int, high: int, what: str) -> None:
    if high - low >= MAX_SUMMARY_ROUNDS:
        raise InputRejected(Reason.BAD_SYNC, f"{what} of {high - low} rounds")
