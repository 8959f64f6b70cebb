"""When and how a node joins from a peer's certified checkpoint: the decisions of state
sync, without I/O (the :class:`~qudag_node.core.sync.SyncMachine` owns one).

A node state-syncs when replaying the history would be impossible or slow: it
started on an empty store and the first HOLDINGS it gets offer a checkpoint above its
committed round (what it replayed meanwhile, from the parents of vertices pushed to it,
does not make it replay the rest; once it has joined, or found no checkpoint above it,
the other rules alone apply), no linked peer holds the rounds
right above its own (every HOLDINGS ``oldest_round`` is above its highest round + 1),
or the ``trust``-th best checkpoint its peers offer lies more than
:data:`INTERVALS_BEHIND` checkpoint intervals above its committed round. It then:

1. asks the peer offering the latest checkpoint for it (CHECKPOINT_REQUEST 0);
2. checks the answer (:func:`~qudag_node.core.statesync.check_offer`) and FETCHes the
   window's vertices from the same peer, checking each as it arrives;
3. with the whole window, checks it all once more
   (:func:`~qudag_node.core.statesync.check_window`) and has the adapter install it
   (:class:`InstallCheckpoint`); the adapter feeds back that it did, and ROUNDS
   catch-up goes on from the checkpoint.

A step unanswered for :data:`JOIN_TIMEOUT` seconds, or an answer that does not check,
drops that peer for the attempt and starts again with another. HOLDINGS are unsigned:
a peer lying in them can make the node ask, and wait, never accept.
"""

from __future__ import annotations

from dataclasses import dataclass

from qudag_node.core.certificate import Certificate
from qudag_node.core.checkpoint import CertifiedCheckpoint
from qudag_node.core.crypto import Verifier
from qudag_node.core.errors import InputRejected
from qudag_node.core.genesis import Genesis
from qudag_node.core.messages import fetch_messages
from qudag_node.core.params import Params
from qudag_node.core.statesync import (
    WindowFetch,
    check_offer,
    check_window,
    check_window_vertex,
)
from qudag_node.core.syncwire import (
    CheckpointOffer,
    CheckpointRequest,
    Holdings,
    Status,
    encode_sync,
)
from qudag_node.core.types import PeerId, VertexId
from qudag_node.core.vertex import Vertex

#: Checkpoint intervals behind the peers' latest checkpoint before a node state-syncs
#: although its peers still hold the rounds it lacks (10,000 rounds at the default
#: interval, more than the Fly configuration's retention): a shorter gap is replayed, so
#: that the node holds its whole log.
INTERVALS_BEHIND = 100
#: Seconds to wait for a checkpoint or the rest of its window before trying another peer.
JOIN_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class JoinSend:
    """Send ``data`` to ``peer`` (a request of the join)."""

    peer: PeerId
    data: bytes


@dataclass(frozen=True, slots=True)
class InstallCheckpoint:
    """Install ``certified`` and its ``window`` (whose vertices, checked, are
    ``vertices``, in window order) in the store and restart the engine from it; then
    feed back :class:`~qudag_node.core.sync.CheckpointInstalled`."""

    certified: CertifiedCheckpoint
    window: tuple[VertexId, ...]
    vertices: tuple[tuple[Vertex, Certificate], ...]


@dataclass(frozen=True, slots=True)
class StateSyncStarted:
    """The node asks ``peer`` for its checkpoint ``number`` (of ``round``), ``gap``
    rounds above the node's committed round."""

    peer: PeerId
    number: int
    round: int
    gap: int


@dataclass(frozen=True, slots=True)
class CheckpointVerified:
    """``peer``'s checkpoint ``number`` is certified; its ``window`` vertices are fetched."""

    peer: PeerId
    number: int
    round: int
    window: int


@dataclass(frozen=True, slots=True)
class StateSyncFailed:
    """The attempt with ``peer`` ended (``reason``); another peer is tried."""

    peer: PeerId
    reason: str


@dataclass(frozen=True, slots=True)
class StateSynced:
    """Checkpoint ``number`` is installed: the node continues from ``round`` and log
    position ``log_length`` (running hash ``log_hash``), ``seconds`` after the attempt
    that succeeded began."""

    number: int
    round: int
    log_length: int
    seconds: float
    log_hash: bytes


JoinFact = StateSyncStarted | CheckpointVerified | StateSyncFailed | StateSynced
JoinOutput = JoinSend | InstallCheckpoint | JoinFact


@dataclass(slots=True)
class _Attempt:
    peer: PeerId
    started: float
    asked: float  # when the last request went out
    fetch: WindowFetch | None = None
    installing: bool = False


def _empty(ours: Status) -> bool:
    """Whether a node has nothing to replay from: no commit, no log. Vertices it fetched
    as the parents of those pushed to it meanwhile do not count."""
    return ours.committed == 0 and ours.log_length == 0


class Joining:
    """State sync's decisions; the sync machine feeds it and does what it returns."""

    def __init__(
        self,
        genesis: Genesis,
        params: Params,
        verifier: Verifier,
        trust: int,
        enabled: bool,
        *,
        fresh: bool,
    ) -> None:
        """``fresh``: the node started on an empty store (no commit, no log)."""
        self._genesis = genesis
        self._fresh = fresh
        self._params = params
        self._verifier = verifier
        self._trust = trust
        self._enabled = enabled
        self._holdings: dict[PeerId, Holdings] = {}
        self._attempt: _Attempt | None = None
        self._failed: set[PeerId] = set()  # peers that failed the current round of tries
        self._since: float | None = None  # the first tick
        self.syncs = 0  # state syncs done
        self.last_seconds: float | None = None

    @property
    def enabled(self) -> bool:
        """Whether this node may state-sync (``QUDAG_STATE_SYNC``)."""
        return self._enabled

    @property
    def active(self) -> bool:
        """Whether a state sync is under way (catch-up by rounds waits for it)."""
        return self._attempt is not None

    @property
    def fetching(self) -> bool:
        """Whether window vertices are awaited (CERTIFIED messages come to sync)."""
        return self._attempt is not None and self._attempt.fetch is not None

    def link_down(self, peer: PeerId) -> list[JoinOutput]:
        """Forget ``peer``; an attempt with it ends."""
        self._holdings.pop(peer, None)
        self._failed.discard(peer)
        attempt = self._attempt
        if attempt is not None and attempt.peer == peer and not attempt.installing:
            self._attempt = None
            return [StateSyncFailed(peer, "link_down")]
        return []

    def on_holdings(self, peer: PeerId, holdings: Holdings) -> None:
        """``peer`` says what it can serve."""
        self._holdings[peer] = holdings

    def defers_catch_up(self, ours: Status, now: float) -> bool:
        """Whether catch-up by rounds waits: an empty node waits up to
        :data:`JOIN_TIMEOUT` for its peers' HOLDINGS (a peer that sends none, of an
        older version, is then replayed from)."""
        if self._since is None:
            self._since = now
        if not self._enabled or self._holdings or not self._new(ours):
            return False
        return now - self._since < JOIN_TIMEOUT

    def needed(self, ours: Status) -> bool:
        """Whether the node should join from a checkpoint rather than replay."""
        if not self._enabled or not self._holdings:
            return False
        offered = sorted((h.latest_checkpoint_round for h in self._holdings.values()), reverse=True)
        trusted = offered[min(self._trust, len(offered)) - 1]
        if offered[0] <= ours.committed:
            return False
        if self._new(ours):
            return True  # nothing to replay from, or a new node that has not joined
        if min(h.oldest_round for h in self._holdings.values()) > ours.highest + 1:
            return True  # nobody holds the rounds we lack any more
        return trusted - ours.committed > INTERVALS_BEHIND * self._params.checkpoint_interval

    def _new(self, ours: Status) -> bool:
        """Whether the node has nothing of its own to replay from: its store is empty,
        or it started so and its peers have offered a checkpoint above it every time it
        asked (it has not joined yet, nor found itself level with their checkpoints)."""
        return _empty(ours) or self._fresh

    def tick(self, ours: Status, now: float) -> list[JoinOutput]:
        """Start an attempt when one is needed; give up on one that timed out."""
        attempt = self._attempt
        if attempt is not None:
            if attempt.installing or now - attempt.asked < JOIN_TIMEOUT:
                return []
            return [self._fail(attempt.peer, "timeout")]
        if not self.needed(ours):
            if self._holdings:
                self._fresh = False  # level with the peers' checkpoints: the usual rules
            return []
        candidates = [
            (h.latest_checkpoint, peer)
            for peer, h in self._holdings.items()
            if h.latest_checkpoint_round > ours.committed and peer not in self._failed
        ]
        if not candidates:
            self._failed.clear()  # every peer failed once: try them all again
            return []
        number, peer = max(candidates)
        self._attempt = _Attempt(peer, now, now)
        held = self._holdings[peer]
        return [
            StateSyncStarted(
                peer,
                number,
                held.latest_checkpoint_round,
                held.latest_checkpoint_round - ours.committed,
            ),
            JoinSend(peer, encode_sync(CheckpointRequest(0))),
        ]

    def on_offer(
        self, peer: PeerId, offer: CheckpointOffer, ours: Status, now: float
    ) -> list[JoinOutput]:
        """``peer``'s checkpoint came: check it and fetch its window from the same peer.
        An offer nobody asked for is ignored."""
        attempt = self._attempt
        if attempt is None or attempt.peer != peer or attempt.fetch is not None:
            return []
        try:
            check_offer(
                offer.certified, offer.window, self._genesis, self._verifier, ours.committed
            )
        except InputRejected as e:
            return [self._fail(peer, e.reason.value)]
        fetch = attempt.fetch = WindowFetch(offer.certified, offer.window)
        attempt.asked = now
        cp = offer.certified.checkpoint
        out: list[JoinOutput] = [CheckpointVerified(peer, cp.number, cp.round, len(offer.window))]
        return out + self._ask_window(peer, fetch)

    def on_vertex(
        self, peer: PeerId, vertex: Vertex, certificate: Certificate, wall: float, now: float
    ) -> list[JoinOutput]:
        """A CERTIFIED vertex came while fetching: keep it if it is a window vertex
        that checks; with the whole window, install."""
        attempt = self._attempt
        fetch = None if attempt is None else attempt.fetch
        if attempt is None or fetch is None or attempt.installing or not fetch.wants(vertex.id):
            return []
        listed = frozenset(fetch.window)
        try:
            check_window_vertex(
                fetch.certified,
                listed,
                vertex,
                certificate,
                self._genesis,
                self._params,
                wall,
                self._verifier,
            )
        except InputRejected as e:
            return [self._fail(peer, e.reason.value)]
        fetch.add(vertex, certificate)
        attempt.asked = now
        if fetch.missing():
            return []
        try:  # the leader at its round, now that the whole window is here
            check_window(
                fetch.certified,
                fetch.window,
                fetch.vertices,
                self._genesis,
                self._params,
                wall,
                self._verifier,
            )
        except InputRejected as e:
            return [self._fail(peer, e.reason.value)]
        attempt.installing = True
        vertices = tuple(fetch.vertices[v] for v in fetch.window)
        return [InstallCheckpoint(fetch.certified, fetch.window, vertices)]

    def installed(self, now: float) -> StateSynced | None:
        """The adapter installed the checkpoint the last :class:`InstallCheckpoint` named."""
        attempt = self._attempt
        if attempt is None or attempt.fetch is None:
            return None
        self._attempt = None
        self._failed.clear()
        self._fresh = False
        self.syncs += 1
        self.last_seconds = round(now - attempt.started, 3)
        cp = attempt.fetch.certified.checkpoint
        return StateSynced(cp.number, cp.round, cp.log_length, self.last_seconds, cp.log_hash)

    def _ask_window(self, peer: PeerId, fetch: WindowFetch) -> list[JoinOutput]:
        return [JoinSend(peer, m) for m in fetch_messages(fetch.missing(), self._params)]

    def _fail(self, peer: PeerId, reason: str) -> StateSyncFailed:
        self._attempt = None
        self._failed.add(peer)
        return StateSyncFailed(peer, reason)
