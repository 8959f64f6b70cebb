"""Anti-entropy and catch-up between linked peers.

Every peer learns where the other stands from STATUS messages, sent when a link
comes up and every sync interval. Two things follow from them:

* **Catch-up.** A node more than :data:`CATCHUP_THRESHOLD` rounds behind the most
  advanced peer asks that peer for whole rounds, :data:`ROUNDS_PER_REQUEST` at a
  time, from its committed round on. The answers are ordinary CERTIFIED messages
  that the engine takes in round order. Meanwhile the node does not propose, logs
  its progress, and ``/ready`` answers 503 with the gap.
* **Anti-entropy.** Every sync interval each node sends each peer a SUMMARY of the
  rounds both hold in their windows (bucket fingerprints of certified vertex ids,
  :mod:`qudag_node.core.syncwire`). The peer compares with its own; each differing
  bucket is split into a finer SUMMARY, down to buckets of a few rounds whose ids are
  listed (IDS). The side that gets the list fetches the vertices it lacks and pushes
  the ones the other lacks. Equal DAGs cost one small message per peer and interval.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from qudag_node.core.errors import InputRejected, Reason
from qudag_node.core.messages import fetch_messages
from qudag_node.core.params import Params
from qudag_node.core.syncwire import (
    LEAF_SPAN,
    MAX_IDS,
    Ids,
    RoundsDone,
    RoundsRequest,
    Status,
    Summary,
    SyncMessage,
    bucket_span,
    decode_sync,
    differing,
    encode_sync,
    summarize,
)
from qudag_node.core.types import PeerId, VertexId
from qudag_node.logs import get_logger
from qudag_node.metrics import Metrics
from qudag_node.store import Store

log = get_logger("qudag.sync")

#: Rounds behind the most advanced peer before a node catches up (and is not ready).
CATCHUP_THRESHOLD = 4
#: Rounds asked for in one ROUNDS request.
ROUNDS_PER_REQUEST = 64
#: Bytes of CERTIFIED messages one ROUNDS answer aims at (whole rounds are sent).
ROUNDS_ANSWER_BYTES = 4 << 20
#: Seconds to wait for a ROUNDS answer before asking again (another peer, maybe).
REQUEST_TIMEOUT = 20.0
#: Most rounds one SUMMARY may make us read.
MAX_SUMMARY_ROUNDS = 200_000
#: Seconds between catch-up progress lines in the log.
PROGRESS_INTERVAL = 2.0


@dataclass(slots=True)
class _Request:
    peer: PeerId
    low: int
    high: int
    sent_at: float


class Syncer:
    """Sync with linked peers. Feed it links and sync frames; :meth:`run` it in a TaskGroup."""

    def __init__(
        self,
        store: Store,
        send: Callable[[PeerId, bytes], bool],
        position: Callable[[], Status],
        metrics: Metrics,
        params: Params,
        interval: float,
        needs_peers: bool,
        trust: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._send = send
        self._position = position
        self._metrics = metrics
        self._params = params
        self._interval = interval
        self._needs_peers = needs_peers  # a network of more than this node
        self._clock = clock
        self._peers: dict[PeerId, Status] = {}
        self._linked: set[PeerId] = set()
        self._request: _Request | None = None
        self._requested_high = 0
        self._trust = trust  # peers that must claim a round before we chase it (f + 1)
        self._moved = (0, 0.0)  # (our highest round, when it last moved) while catching up
        self._catching_up = needs_peers
        self._catchup_started: tuple[float, int] | None = None
        self._progress_at = 0.0
        self._changed = asyncio.Event()

    # ---------------------------------------------------------------- state

    @property
    def catching_up(self) -> bool:
        """Whether the node is behind its peers (or, in a network, has heard none yet)."""
        return self._catching_up

    def gap(self) -> int | None:
        """Rounds behind the peer we catch up with (see :meth:`_target`); None before any
        peer's status."""
        target = self._target()
        if target is None:
            return None
        return max(0, target[1].highest - self._position().highest)

    def readiness(self) -> tuple[bool, str]:
        """Whether the node is in step with its peers, and a sentence saying so."""
        gap = self.gap()
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

    # ---------------------------------------------------------------- links

    def link_up(self, peer: PeerId) -> None:
        """Tell a new peer where we stand."""
        self._linked.add(peer)
        self._send(peer, encode_sync(self._position()))

    def link_down(self, peer: PeerId) -> None:
        """Forget a peer; a catch-up request to it is asked of another."""
        self._linked.discard(peer)
        self._peers.pop(peer, None)
        if self._request is not None and self._request.peer == peer:
            self._request = None
        self._changed.set()

    async def handle(self, peer: PeerId, data: bytes) -> None:
        """A sync message from ``peer``; a malformed one is counted and logged."""
        try:
            await self._dispatch(peer, decode_sync(data))
        except InputRejected as e:
            self._metrics.on_sync_rejected(e.reason)
            log.info("sync_rejected", peer=peer, reason=e.reason.value, detail=e.message)

    # ------------------------------------------------------------- the loop

    async def run(self, on_catching_up: Callable[[bool], None]) -> None:
        """Send STATUS and SUMMARY every interval and drive catch-up, until cancelled."""
        next_sync = self._clock()
        while True:
            now = self._clock()
            if now >= next_sync:
                next_sync = now + self._interval
                await self._sync_round()
            self._drive(on_catching_up)
            self._changed.clear()
            wait = min(next_sync - self._clock(), 1.0)
            if wait > 0:
                try:
                    async with asyncio.timeout(wait):
                        await self._changed.wait()
                except TimeoutError:
                    pass

    async def _sync_round(self) -> None:
        ours = self._position()
        status = encode_sync(ours)
        for peer in sorted(self._linked):
            self._send(peer, status)
            theirs = self._peers.get(peer)
            if theirs is not None:
                summary = await self._window_summary(ours, theirs)
                if summary is not None:
                    self._send(peer, encode_sync(summary))

    async def _window_summary(self, ours: Status, theirs: Status) -> Summary | None:
        """A SUMMARY of the rounds both windows hold, except the newest (still filling)."""
        low = max(ours.floor, theirs.floor, 1)
        high = min(ours.highest, theirs.highest) - 1
        if high < low:
            return None
        certified = await self._store.certified_ids(low, high)
        return summarize(certified, low, high, bucket_span(low, high))

    # --------------------------------------------------------------- catch-up

    def _target(self) -> tuple[PeerId, Status] | None:
        """The peer to catch up with: the ``trust``-th most advanced (f + 1 in a network of
        f faulty validators), so that no single peer claiming a far round can keep us
        chasing it; with fewer peers, the least advanced of them."""
        if not self._peers:
            return None
        ranked = sorted(self._peers.items(), key=lambda item: (-item[1].highest, item[0]))
        return ranked[min(self._trust, len(ranked)) - 1]

    def _drive(self, on_catching_up: Callable[[bool], None]) -> None:
        ours = self._position()
        target = self._target()
        now = self._clock()
        gap = 0 if target is None else max(0, target[1].highest - ours.highest)
        behind = self._needs_peers if target is None else gap > CATCHUP_THRESHOLD
        self._announce(behind, ours, target, now)
        if behind != self._catching_up:
            self._catching_up = behind
            on_catching_up(behind)
        self._metrics.on_catchup_gap(gap)
        if not behind or target is None:
            self._request = None
            self._requested_high = 0
            return
        if now - self._progress_at >= PROGRESS_INTERVAL:
            self._progress(ours, target[1], now)
        request = self._request
        if request is not None and now - request.sent_at < REQUEST_TIMEOUT:
            return
        if request is not None:
            log.warning("catch_up_request_timed_out", peer=request.peer, low=request.low)
        if ours.highest != self._moved[0]:
            self._moved = (ours.highest, now)
        elif now - self._moved[1] >= REQUEST_TIMEOUT:
            self._requested_high = 0  # what was sent never arrived: ask again from our round
            self._moved = (ours.highest, now)
        low = max(ours.committed + 1, self._requested_high + 1)
        if low - ours.highest > 2 * ROUNDS_PER_REQUEST:
            return  # the engine has not taken in what came: wait for it
        peer, theirs = target
        high = min(low + ROUNDS_PER_REQUEST - 1, theirs.highest)
        if high < low:
            return
        self._request = _Request(peer, low, high, now)
        self._send(peer, encode_sync(RoundsRequest(low, high)))

    def _announce(
        self, behind: bool, ours: Status, target: tuple[PeerId, Status] | None, now: float
    ) -> None:
        if behind and target is not None and self._catchup_started is None:
            self._catchup_started = (now, ours.highest)
            log.info(
                "catch_up_started",
                round=ours.highest,
                target=target[1].highest,
                gap=target[1].highest - ours.highest,
                peer=target[0],
            )
        elif not behind and self._catchup_started is not None:
            started, first = self._catchup_started
            self._catchup_started = None
            log.info(
                "caught_up",
                round=ours.highest,
                rounds=ours.highest - first,
                seconds=round(now - started, 3),
            )

    def _progress(self, ours: Status, theirs: Status, now: float) -> None:
        self._progress_at = now
        started = self._catchup_started
        rate = None
        if started is not None and now > started[0]:
            rate = round((ours.highest - started[1]) / (now - started[0]), 1)
        log.info(
            "catching_up",
            round=ours.highest,
            target=theirs.highest,
            gap=theirs.highest - ours.highest,
            log_length=ours.log_length,
            rounds_per_second=rate,
        )

    # --------------------------------------------------------------- messages

    async def _dispatch(self, peer: PeerId, message: SyncMessage) -> None:
        match message:
            case Status():
                self._peers[peer] = message
                self._changed.set()
            case Summary():
                await self._on_summary(peer, message)
            case Ids():
                await self._on_ids(peer, message)
            case RoundsRequest(low, high):
                await self._serve_rounds(peer, low, high)
            case RoundsDone(_, last):
                request = self._request
                if request is None or request.peer != peer or last < request.low:
                    return  # not our request, or nothing served: it times out and is asked again
                self._requested_high = max(self._requested_high, min(last, request.high))
                self._request = None
                self._changed.set()

    async def _on_summary(self, peer: PeerId, theirs: Summary) -> None:
        if theirs.high - theirs.low >= MAX_SUMMARY_ROUNDS:
            raise InputRejected(Reason.BAD_SYNC, f"summary of {theirs.high - theirs.low} rounds")
        certified = await self._store.certified_ids(theirs.low, theirs.high)
        ours = summarize(certified, theirs.low, theirs.high, theirs.span)
        buckets = differing(ours, theirs)
        self._metrics.on_sync_round("in_sync" if not buckets else "differences")
        for k in buckets:
            low, high = theirs.bucket(k)
            if theirs.span <= LEAF_SPAN:
                inside = certified.between(low, high)[:MAX_IDS]
                self._send(peer, encode_sync(Ids(low, high, inside)))
            else:
                finer = summarize(certified, low, high, bucket_span(low, high))
                self._send(peer, encode_sync(finer))

    async def _on_ids(self, peer: PeerId, theirs: Ids) -> None:
        if theirs.high - theirs.low >= MAX_SUMMARY_ROUNDS:
            raise InputRejected(Reason.BAD_SYNC, f"ids of {theirs.high - theirs.low} rounds")
        certified = await self._store.certified_ids(theirs.low, theirs.high)
        ours = set(certified.between(theirs.low, theirs.high))
        missing = [i for i in theirs.ids if i not in ours]
        extra = sorted(ours.difference(theirs.ids))
        for data in fetch_messages(missing, self._params):
            self._send(peer, data)
        await self._push(peer, extra)
        self._metrics.on_sync_vertices(len(missing), len(extra))
        if missing or extra:
            log.info(
                "sync_differences",
                peer=peer,
                rounds=f"{theirs.low}..{theirs.high}",
                fetching=len(missing),
                pushing=len(extra),
            )

    async def _push(self, peer: PeerId, ids: Sequence[VertexId]) -> None:
        async for message in self._store.certified_messages(ids):
            if not self._send(peer, message):
                return

    async def _serve_rounds(self, peer: PeerId, low: int, high: int) -> None:
        messages, last = await self._store.certified_in_rounds(low, high, ROUNDS_ANSWER_BYTES)
        for message in messages:
            if not self._send(peer, message):
                return
        self._send(peer, encode_sync(RoundsDone(low, last)))
