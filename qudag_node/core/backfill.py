"""Backfill: fetching the log before a joined checkpoint, without I/O (the
:class:`~qudag_node.core.sync.SyncMachine` owns one).

A node that joined from a certified checkpoint holds the log only above its base
(the checkpoint's log position). With backfill on, it fetches the entries below,
one *segment* at a time, walking down: a segment runs from an older anchor to the
current base, where an anchor is a certified checkpoint's (log_length, log_hash)
or, at the bottom, the genesis start (position 0, ``log_hash_start``).

1. The machine asks a peer that holds the history (HOLDINGS ``oldest_round`` at most
   :data:`ARCHIVE_ROUND`) for the certified checkpoint numbered one below the base's
   (CHECKPOINT_REQUEST n) and checks it against the genesis alone. Checkpoint
   numbers may skip (no leader committed in an interval): a number no peer answers
   within :data:`BACKFILL_TIMEOUT` is skipped, down to the genesis start.
2. It asks the same peer for the segment's entries in order (LOG_REQUEST, one in
   flight), checks that each transaction's id is the hash of its data, extends the
   running hash from the anchor, and has the adapter stage the entries in the store
   (:class:`StageEntries`): a segment may hold a whole interval of a busy network.
   The anchor's checkpoint is kept (:class:`KeepCheckpoint`), so that a restart
   resumes the segment after its last staged entry (:class:`Resume`).
3. When the running hash reaches the base's position it must equal the base's hash:
   then the adapter lands the staged segment (:class:`LandSegment`) and the base moves
   down to the anchor. Otherwise the staged entries are discarded
   (:class:`DiscardStaged`) and another peer is asked: the peer lied or erred.

The vertex ids of the entries are the peer's word: the log hash covers only the
transaction ids and their order.
"""

from __future__ import annotations

from dataclasses import dataclass

from qudag_node.core.checkpoint import check_certified
from qudag_node.core.crypto import Verifier, extend_log_hash, log_hash_start, tx_ids
from qudag_node.core.errors import InputRejected, Reason
from qudag_node.core.genesis import Genesis
from qudag_node.core.syncwire import (
    MAX_LOG_ENTRIES,
    CheckpointOffer,
    CheckpointRequest,
    Holdings,
    LogEntries,
    LogRequest,
    WireEntry,
    encode_sync,
)
from qudag_node.core.types import PeerId

#: A peer whose oldest held round is at most this holds the history from its start.
ARCHIVE_ROUND = 1
#: Seconds to wait for a checkpoint or log entries before asking another peer.
BACKFILL_TIMEOUT = 10.0
#: Seconds between progress facts.
PROGRESS_INTERVAL = 5.0


@dataclass(frozen=True, slots=True)
class Anchor:
    """A certified point of the log: checkpoint ``number`` (0: the genesis start) at
    position ``length`` with running hash ``log_hash``."""

    number: int
    length: int
    log_hash: bytes


# ----------------------------------------------------------------- outputs


@dataclass(frozen=True, slots=True)
class BackfillSend:
    """Send ``data`` to ``peer`` (a request of the backfill)."""

    peer: PeerId
    data: bytes


@dataclass(frozen=True, slots=True)
class StageEntries:
    """Stage checked entries at positions ``first``, ``first + 1``, ... with their
    running ``hashes`` (not served before the segment lands)."""

    first: int
    entries: tuple[WireEntry, ...]
    hashes: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class DiscardStaged:
    """Drop every staged entry (the segment did not check)."""


@dataclass(frozen=True, slots=True)
class LandSegment:
    """The staged segment landed on the base: make it part of the log and move the
    base down to ``anchor``; then feed back :meth:`Backfill.landed`."""

    anchor: Anchor


@dataclass(frozen=True, slots=True)
class KeepCheckpoint:
    """Keep a checked older certified checkpoint (the anchor of the segment being
    fetched): the node serves it, and a restart resumes the segment from it."""

    offer: CheckpointOffer


@dataclass(frozen=True, slots=True)
class Resume:
    """A segment a restart found staged: from ``anchor``, held up to ``next - 1``
    with running hash ``log_hash`` there."""

    anchor: Anchor
    next: int
    log_hash: bytes


@dataclass(frozen=True, slots=True)
class BackfillProgress:
    """The log is held from ``base`` on; ``entries`` were backfilled since start, at
    ``rate`` entries a second (None before any); ``segment`` is the position the
    current segment has reached; ``sources`` linked peers hold the history (with none,
    the backfill waits)."""

    base: int
    segment: int
    entries: int
    rate: float | None
    sources: int


@dataclass(frozen=True, slots=True)
class BackfillRejected:
    """``peer``'s answer did not check (``reason``): its segment is dropped."""

    peer: PeerId
    reason: Reason


@dataclass(frozen=True, slots=True)
class BackfillTimedOut:
    """``peer`` did not answer in time; another is asked."""

    peer: PeerId


@dataclass(frozen=True, slots=True)
class BackfillDone:
    """The whole log is held, from position 1."""

    entries: int


BackfillFact = BackfillProgress | BackfillRejected | BackfillTimedOut | BackfillDone
#: What the adapter does to the store for backfill.
BackfillWrite = StageEntries | DiscardStaged | LandSegment | KeepCheckpoint
BackfillOutput = BackfillSend | BackfillWrite | BackfillFact


def check_entries(first: int, entries: tuple[WireEntry, ...], previous: bytes) -> list[bytes]:
    """The running hashes after each of ``entries`` (at positions ``first`` on), from
    ``previous``; raises :class:`InputRejected` (``bad_sync``) when an entry's id is
    not the hash of its data."""
    ids = tx_ids([e.data for e in entries])
    for position, (entry, computed) in enumerate(zip(entries, ids, strict=True), first):
        if entry.tx_id != computed:
            raise InputRejected(Reason.BAD_SYNC, f"log entry {position}: id is not its hash")
    return extend_log_hash(previous, [e.tx_id for e in entries])


def check_anchor(
    offer: CheckpointOffer, base: Anchor, genesis: Genesis, verifier: Verifier
) -> Anchor:
    """The anchor an offered older checkpoint gives: it must be certified for this
    network, list its window, and lie at or below ``base`` (at the same position, with
    the same hash); raises :class:`InputRejected` otherwise."""
    certified = offer.certified
    check_certified(certified, genesis, verifier)
    cp = certified.checkpoint
    if not cp.holds_window(offer.window):
        raise InputRejected(Reason.BAD_CHECKPOINT, "window ids do not match the root")
    if cp.number >= base.number or cp.log_length > base.length:
        raise InputRejected(Reason.BAD_CHECKPOINT, f"checkpoint {cp.number} is not below the base")
    if cp.log_length == base.length and cp.log_hash != base.log_hash:
        raise InputRejected(Reason.BAD_CHECKPOINT, "same position as the base, another hash")
    return Anchor(cp.number, cp.log_length, cp.log_hash)


@dataclass(slots=True)
class _Segment:
    """The segment being fetched: from ``anchor`` up to the base."""

    anchor: Anchor
    next: int  # the next position to ask for
    hash: bytes  # the running hash at ``next - 1``


class Backfill:
    """Backfill's decisions; the sync machine feeds it and does what it returns."""

    def __init__(
        self,
        genesis: Genesis,
        verifier: Verifier,
        *,
        enabled: bool,
        base: Anchor | None,
        resume: Resume | None = None,
        prefix: Anchor | None = None,
    ) -> None:
        self._genesis = genesis
        self._verifier = verifier
        self._enabled = enabled
        self._base = base if base is not None and base.length > 0 else None
        self._holdings: dict[PeerId, Holdings] = {}
        self._asking = 0 if self._base is None else self._base.number - 1  # anchor number
        self._segment = (
            None if resume is None else _Segment(resume.anchor, resume.next, resume.log_hash)
        )
        self._peer: PeerId | None = None  # asked, awaiting its answer
        self._asked_at = 0.0
        self._silent: set[PeerId] = set()  # peers that did not answer for ``_asking``
        self._failed: set[PeerId] = set()  # peers whose segment did not check
        self._landing = False
        self._leftovers = resume is None  # entries staged before a restart: dropped first
        self._prefix = prefix  # the end of the log this node holds from position 1
        self.entries = 0  # backfilled since start
        self._started: float | None = None
        self._progress_at = float("-inf")

    # ---------------------------------------------------------------- state

    @property
    def enabled(self) -> bool:
        """Whether this node backfills (``QUDAG_BACKFILL``)."""
        return self._enabled

    @property
    def active(self) -> bool:
        """Whether some of the log below the base is still to fetch."""
        return self._enabled and self._base is not None

    @property
    def base(self) -> int:
        """The position up to which the log is not held (0: all of it is)."""
        return 0 if self._base is None else self._base.length

    # ---------------------------------------------------------------- inputs

    def joined(self, base: Anchor, prefix: Anchor | None) -> list[BackfillOutput]:
        """The node installed a checkpoint: the log below ``base`` is to fetch, down to
        ``prefix``, the end of what it holds from position 1 (a node that was away),
        if any (what was staged for an older base is dropped)."""
        self._base = base if base.length > 0 else None
        self._prefix = prefix
        self._asking = base.number - 1
        self._peer = None
        self._landing = False
        had = self._segment is not None or self._leftovers
        self._segment = None
        self._leftovers = False
        return [DiscardStaged()] if had else []

    def on_holdings(self, peer: PeerId, holdings: Holdings) -> None:
        """``peer`` says what it can serve."""
        self._holdings[peer] = holdings

    def link_down(self, peer: PeerId) -> list[BackfillOutput]:
        """Forget ``peer``; what was asked of it is asked of another."""
        self._holdings.pop(peer, None)
        self._silent.discard(peer)
        self._failed.discard(peer)
        if self._peer != peer:
            return []
        return self._drop_asked()

    def on_offer(self, peer: PeerId, offer: CheckpointOffer, now: float) -> list[BackfillOutput]:
        """An older checkpoint came: with the one asked for, fetch its segment."""
        base = self._base
        if base is None or peer != self._peer or self._segment is not None:
            return []
        if offer.certified.checkpoint.number != self._asking:
            return []  # an answer meant for state sync, or a late one
        try:
            anchor = check_anchor(offer, base, self._genesis, self._verifier)
        except InputRejected as e:
            self._silent.add(peer)
            self._peer = None
            return [BackfillRejected(peer, e.reason)]
        prefix = self._prefix
        if prefix is not None and anchor.length <= prefix.length < base.length:
            anchor = prefix  # what lies below is held here already
        self._segment = _Segment(anchor, anchor.length + 1, anchor.log_hash)
        self._peer = None
        return [KeepCheckpoint(offer), *self._ask(peer, now)]

    def on_entries(self, peer: PeerId, answer: LogEntries, now: float) -> list[BackfillOutput]:
        """Log entries came: check and stage them, ask for more, or land the segment."""
        segment, base = self._segment, self._base
        if base is None or segment is None or peer != self._peer or answer.first != segment.next:
            return []
        self._peer = None
        room = base.length - segment.next + 1
        if not answer.entries or len(answer.entries) > room:
            reason = "holds none" if not answer.entries else "more than asked"
            return self._reject(peer, InputRejected(Reason.BAD_SYNC, reason))
        try:
            hashes = check_entries(answer.first, answer.entries, segment.hash)
        except InputRejected as e:
            return self._reject(peer, e)
        out: list[BackfillOutput] = [StageEntries(answer.first, answer.entries, tuple(hashes))]
        segment.next += len(answer.entries)
        segment.hash = hashes[-1]
        if segment.next <= base.length:
            return out + self._ask(peer, now)
        if segment.hash != base.log_hash:
            return out + self._reject(
                peer, InputRejected(Reason.BAD_SYNC, "the segment's hash misses the base")
            )
        self._landing = True
        return [*out, LandSegment(segment.anchor)]

    def landed(self, now: float) -> list[BackfillOutput]:
        """The adapter landed the segment: the base is its anchor now."""
        segment = self._segment
        if segment is None or not self._landing:
            return []
        self._landing = False
        self._segment = None
        self._failed.clear()
        self._silent.clear()
        self.entries += (0 if self._base is None else self._base.length) - segment.anchor.length
        anchor = segment.anchor
        self._base = anchor if anchor.length > 0 and anchor != self._prefix else None
        self._asking = anchor.number - 1
        if self._base is None:
            return [BackfillDone(self.entries)]
        return [self._progress(now), *self._request(now)]

    def tick(self, now: float) -> list[BackfillOutput]:
        """Ask when nothing is asked; give up on an answer that timed out."""
        if not self.active or self._landing:
            return []
        if self._started is None:
            self._started = now
        out: list[BackfillOutput] = []
        if self._leftovers:
            self._leftovers = False
            out.append(DiscardStaged())
        if self._peer is not None:
            if now - self._asked_at < BACKFILL_TIMEOUT:
                return self._maybe_progress(now)
            out.append(BackfillTimedOut(self._peer))
            out += self._drop_asked()
        return out + self._request(now)

    # ---------------------------------------------------------------- helpers

    def _request(self, now: float) -> list[BackfillOutput]:
        """Ask a peer for what comes next: the segment's entries, or its anchor."""
        peer = self._choose()
        if peer is None:
            return self._maybe_progress(now)  # says that no peer holds the history
        if self._segment is not None:
            return self._ask(peer, now)
        return self._ask_anchor(peer, now)

    def _sources(self) -> list[PeerId]:
        """The linked peers that hold the history from its start."""
        return sorted(
            peer
            for peer, h in self._holdings.items()
            if h.oldest_round <= ARCHIVE_ROUND and h.latest_checkpoint > 0
        )

    def _choose(self) -> PeerId | None:
        """A peer holding the history, not given up on; none tried for this anchor yet
        first."""
        archives = self._sources()
        usable = [p for p in archives if p not in self._failed]
        if not usable:
            self._failed.clear()  # every peer failed once: try them all again
            return None
        fresh = [p for p in usable if p not in self._silent]
        if self._segment is None and not fresh:
            self._skip_number()  # nobody has this checkpoint: an older anchor
            fresh = usable
        return (fresh or usable)[0]

    def _skip_number(self) -> None:
        self._silent.clear()
        self._asking -= 1

    def _ask_anchor(self, peer: PeerId, now: float) -> list[BackfillOutput]:
        if self._asking <= 0:  # the genesis start (or the held prefix): no checkpoint
            start = self._prefix or Anchor(0, 0, log_hash_start(self._genesis.hash))
            self._segment = _Segment(start, start.length + 1, start.log_hash)
            return self._ask(peer, now)
        self._peer, self._asked_at = peer, now
        return [BackfillSend(peer, encode_sync(CheckpointRequest(self._asking)))]

    def _ask(self, peer: PeerId, now: float) -> list[BackfillOutput]:
        segment, base = self._segment, self._base
        if segment is None or base is None:  # pragma: no cover - callers check
            return []
        if segment.next > base.length:  # an empty segment: it lands at once
            if segment.hash != base.log_hash:
                return self._reject(peer, InputRejected(Reason.BAD_SYNC, "anchor misses base"))
            self._landing = True
            return [LandSegment(segment.anchor)]
        count = min(MAX_LOG_ENTRIES, base.length - segment.next + 1)
        self._peer, self._asked_at = peer, now
        out: list[BackfillOutput] = [
            BackfillSend(peer, encode_sync(LogRequest(segment.next, count)))
        ]
        return out + self._maybe_progress(now)

    def _drop_asked(self) -> list[BackfillOutput]:
        """What was asked of ``_peer`` is asked again of another: a checkpoint number
        it kept silent on, or the segment from its start."""
        peer = self._peer
        self._peer = None
        if peer is None:
            return []
        if self._segment is None:
            self._silent.add(peer)
            return []
        self._failed.add(peer)
        return self._restart_segment()

    def _reject(self, peer: PeerId, error: InputRejected) -> list[BackfillOutput]:
        self._peer = None
        self._failed.add(peer)
        return [BackfillRejected(peer, error.reason), *self._restart_segment()]

    def _restart_segment(self) -> list[BackfillOutput]:
        """Forget the segment's entries (staged ones are dropped) and its anchor: the
        next peer is asked for both, so that one peer answers for a whole segment."""
        self._segment = None
        self._landing = False
        return [DiscardStaged()]

    def _maybe_progress(self, now: float) -> list[BackfillOutput]:
        return [self._progress(now)] if now - self._progress_at >= PROGRESS_INTERVAL else []

    def _progress(self, now: float) -> BackfillProgress:
        self._progress_at = now
        started = self._started
        rate = None
        if started is not None and now > started and self.entries:
            rate = round(self.entries / (now - started), 1)
        segment = 0 if self._segment is None else self._segment.next - 1
        return BackfillProgress(self.base, segment, self.entries, rate, len(self._sources()))
