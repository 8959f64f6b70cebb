"""The syncer: the I/O around the sync machine of :mod:`qudag_node.core.sync`.

The machine decides when to send STATUS and SUMMARY, how to answer a peer's summary
or id list, and when and whom to ask for rounds while catching up. The syncer feeds
it links, sync frames, the node's position and the monotonic clock; it does what the
machine returns: sends messages, reads the store (feeding the answers back), logs,
counts, and tells the node when catching up starts or ends.

Sync frames wait in a queue of their own and are taken in by :meth:`Syncer.run`'s
task, so a slow store read never holds up a link's reader. Each peer may have
:data:`MAX_FRAMES` frames waiting; a peer with more stops its own link's reader (which
pushes back on it over TCP), never another's.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from typing import assert_never

from qudag_node.core.backfill import (
    Backfill,
    BackfillDone,
    BackfillFact,
    BackfillProgress,
    BackfillRejected,
    BackfillTimedOut,
    BackfillWrite,
    DiscardStaged,
    KeepCheckpoint,
    LandSegment,
    StageEntries,
)
from qudag_node.core.errors import InputRejected
from qudag_node.core.joining import (
    CheckpointVerified,
    InstallCheckpoint,
    Joining,
    StateSynced,
    StateSyncFailed,
    StateSyncStarted,
)
from qudag_node.core.messages import CertifiedMessage, MessageType, decode_message
from qudag_node.core.params import Params
from qudag_node.core.sync import (
    CatchingUpChanged,
    CatchUpProgress,
    CatchUpStarted,
    CaughtUp,
    CheckpointInstalled,
    GapMeasured,
    IdsCompared,
    IdsRead,
    PeerMessage,
    PushCertified,
    ReadIds,
    RequestTimedOut,
    RoundsServed,
    SegmentLanded,
    Send,
    SendHoldings,
    ServeCheckpoint,
    ServeLog,
    ServeRounds,
    StoreRead,
    SummaryCompared,
    SyncInput,
    SyncMachine,
    SyncOutput,
    Tick,
    WindowVertex,
)
from qudag_node.core.syncwire import (
    LOG_ANSWER_BYTES,
    CheckpointOffer,
    LogEntries,
    Status,
    decode_sync,
    encode_sync,
)
from qudag_node.core.types import PeerId
from qudag_node.logs import get_logger
from qudag_node.metrics import Metrics
from qudag_node.store import Store

log = get_logger("qudag.sync")

#: Most sync frames of one peer waiting for the syncer's task.
MAX_FRAMES = 16
#: Most seconds between ticks: the node's position moves without telling the syncer.
POLL_INTERVAL = 1.0


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
        *,
        needs_peers: bool,
        on_catching_up: Callable[[bool], None],
        trust: int = 1,
        clock: Callable[[], float] = time.monotonic,
        max_frames: int = MAX_FRAMES,
        joining: Joining | None = None,
        install: Callable[[InstallCheckpoint], Awaitable[None]] | None = None,
        backfill: Backfill | None = None,
    ) -> None:
        self._store = store
        self._params = params
        self._install = install  # restarts the node from a checkpoint (with ``joining``)
        self._send = send
        self._position = position
        self._metrics = metrics
        self._on_catching_up = on_catching_up
        self._clock = clock
        self._machine = SyncMachine(
            params, interval, needs_peers, trust, clock(), joining=joining, backfill=backfill
        )
        self._frames: deque[tuple[PeerId, bytes, bool]] = deque()  # (peer, frame, window?)
        self._waiting: Counter[PeerId] = Counter()  # frames in the queue, by peer
        self._max_frames = max_frames
        self._room = asyncio.Event()
        self._room.set()
        self._wake = asyncio.Event()

    # ---------------------------------------------------------------- state

    @property
    def catching_up(self) -> bool:
        """Whether the node is behind its peers (or, in a network, has heard none yet)."""
        return self._machine.catching_up

    def gap(self) -> int | None:
        """Rounds behind the peer we catch up with; None before any peer's status."""
        return self._machine.gap(self._position())

    def readiness(self) -> tuple[bool, str]:
        """Whether the node is in step with its peers, and a sentence saying so."""
        return self._machine.readiness(self._position())

    def statuses(self) -> dict[PeerId, Status]:
        """The last STATUS of each linked peer."""
        return self._machine.statuses()

    @property
    def joining(self) -> Joining | None:
        """State sync's state (None when this node never state-syncs)."""
        return self._machine.joining

    @property
    def backfill(self) -> Backfill | None:
        """Backfill's state (None when this node never backfills)."""
        return self._machine.backfill

    def takes(self, data: bytes) -> bool:
        """Whether a consensus message is for sync rather than the engine: a CERTIFIED
        vertex while a checkpoint's window is fetched."""
        return self._machine.fetching_window and data[:1] == bytes((MessageType.CERTIFIED,))

    # ---------------------------------------------------------------- inputs

    def link_up(self, peer: PeerId) -> None:
        """Tell a new peer where we stand."""
        greeting = self._machine.link_up(peer, self._position())
        self._send(greeting.peer, greeting.data)
        self._wake.set()  # what we can serve goes at the next tick

    def link_down(self, peer: PeerId) -> None:
        """Forget a peer; a catch-up request or state sync with it goes to another."""
        for fact in self._machine.link_down(peer):
            if isinstance(fact, StateSyncFailed):
                log.info("state_sync_failed", peer=fact.peer, reason=fact.reason)
        self._wake.set()

    async def deliver(self, peer: PeerId, data: bytes) -> None:
        """Queue a sync frame from ``peer`` for :meth:`run`; waits while ``peer`` has
        :data:`MAX_FRAMES` waiting."""
        window = self.takes(data)  # decided as the inbox routed it
        while self._waiting[peer] >= self._max_frames:
            self._room.clear()
            await self._room.wait()
        self._frames.append((peer, data, window))
        self._waiting[peer] += 1
        self._wake.set()

    async def handle(self, peer: PeerId, data: bytes, *, window: bool = False) -> None:
        """Take in one sync frame from ``peer`` now, or with ``window`` a CERTIFIED
        message taken while a checkpoint's window was fetched (see :meth:`takes`); a
        malformed one is counted and logged."""
        try:
            if window:
                message = decode_message(data, self._params)
                if not isinstance(message, CertifiedMessage):  # pragma: no cover - by type
                    return
                event: SyncInput = WindowVertex(
                    peer, message.vertex, message.certificate, time.time()
                )
            else:
                event = PeerMessage(peer, decode_sync(data))
            outputs = self._machine.step(event, self._position(), self._clock())
        except InputRejected as e:
            self._metrics.on_sync_rejected(e.reason)
            log.info("sync_rejected", peer=peer, reason=e.reason.value, detail=e.message)
            return
        await self._perform(outputs)

    async def tick(self) -> None:
        """Do what time makes due: STATUS and SUMMARY every interval, catch-up requests."""
        await self._step(Tick())

    # ------------------------------------------------------------- the loop

    async def run(self) -> None:
        """Take in queued frames and tick, until cancelled."""
        while True:
            while self._frames:
                peer, data, window = self._frames.popleft()
                self._waiting[peer] -= 1
                if not self._waiting[peer]:
                    del self._waiting[peer]
                self._room.set()
                await self.handle(peer, data, window=window)
            await self.tick()
            if self._frames:
                continue
            self._wake.clear()
            wait = min(self._machine.next_sync_in(self._clock()), POLL_INTERVAL)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    # ---------------------------------------------------------------- outputs

    async def _step(self, event: SyncInput) -> None:
        await self._perform(self._machine.step(event, self._position(), self._clock()))

    async def _perform(self, outputs: list[SyncOutput]) -> None:
        """Do ``outputs`` in order; a store read's answer is fed back, and what it
        brings is done before the next output."""
        for output in outputs:
            match output:
                case Send(peer, data):
                    self._send(peer, data)
                case ReadIds() | PushCertified() | ServeRounds() | ServeCheckpoint() | ServeLog():
                    await self._read(output)
                case (
                    StageEntries()
                    | DiscardStaged()
                    | LandSegment()
                    | KeepCheckpoint()
                    | BackfillProgress()
                    | BackfillRejected()
                    | BackfillTimedOut()
                    | BackfillDone()
                ):
                    await self._perform_backfill(output)
                case SendHoldings(peers):
                    holdings = encode_sync(await self._store.holdings())
                    for peer in peers:
                        self._send(peer, holdings)
                case InstallCheckpoint():
                    await self._install_checkpoint(output)
                case CatchingUpChanged(catching_up):
                    self._on_catching_up(catching_up)
                case CatchUpStarted(round_, target, gap, peer):
                    log.info("catch_up_started", round=round_, target=target, gap=gap, peer=peer)
                case CaughtUp(round_, rounds, seconds):
                    log.info("caught_up", round=round_, rounds=rounds, seconds=seconds)
                case CatchUpProgress(round_, target, gap, log_length, rate):
                    log.info(
                        "catching_up",
                        round=round_,
                        target=target,
                        gap=gap,
                        log_length=log_length,
                        rounds_per_second=rate,
                    )
                case RequestTimedOut(peer, low):
                    log.warning("catch_up_request_timed_out", peer=peer, low=low)
                case GapMeasured(gap):
                    self._metrics.on_catchup_gap(gap)
                case SummaryCompared(in_sync):
                    self._metrics.on_sync_round("in_sync" if in_sync else "differences")
                case StateSyncStarted(peer, number, round_, gap):
                    log.info(
                        "state_sync_started", peer=peer, checkpoint=number, round=round_, gap=gap
                    )
                case CheckpointVerified(peer, number, round_, window):
                    log.info(
                        "state_sync_checkpoint_verified",
                        peer=peer,
                        checkpoint=number,
                        round=round_,
                        window=window,
                    )
                case StateSyncFailed(peer, reason):
                    log.warning("state_sync_failed", peer=peer, reason=reason)
                case StateSynced(number, round_, log_length, seconds, _):
                    self._metrics.on_state_sync(seconds)
                    self._metrics.on_backfill_base(log_length)
                    log.info(
                        "state_sync_installed",
                        checkpoint=number,
                        round=round_,
                        log_length=log_length,
                        seconds=seconds,
                    )
                case IdsCompared(peer, low, high, fetching, pushing):
                    self._metrics.on_sync_vertices(fetching, pushing)
                    if fetching or pushing:
                        log.info(
                            "sync_differences",
                            peer=peer,
                            rounds=f"{low}..{high}",
                            fetching=fetching,
                            pushing=pushing,
                        )
                case _:
                    assert_never(output)

    async def _perform_backfill(
        self,
        output: BackfillWrite | BackfillFact,
    ) -> None:
        """Do one of backfill's store writes, or log and count one of its facts."""
        match output:
            case StageEntries():
                await self._store.stage_backfill(output)
                self._metrics.on_backfill_staged(len(output.entries))
            case DiscardStaged():
                await self._store.discard_backfill()
            case KeepCheckpoint():
                await self._store.keep_checkpoint(output)
            case LandSegment(anchor):
                await self._store.land_backfill(output)
                self._metrics.on_backfill_base(anchor.length)
                log.info("backfill_segment_landed", base=anchor.length, checkpoint=anchor.number)
                await self._step(SegmentLanded())
            case BackfillProgress(base, segment, entries, rate, sources):
                log.info(
                    "backfill_progress",
                    base=base,
                    segment=segment,
                    entries=entries,
                    entries_per_second=rate,
                    sources=sources,
                )
            case BackfillRejected(peer, reason):
                self._metrics.on_sync_rejected(reason)
                log.warning("backfill_rejected", peer=peer, reason=reason.value)
            case BackfillTimedOut(peer):
                log.warning("backfill_timed_out", peer=peer)
            case BackfillDone(entries):
                log.info("backfill_done", entries=entries)
            case _:
                assert_never(output)

    async def _read(self, read: StoreRead) -> None:
        match read:
            case ReadIds(low, high):
                certified = await self._store.certified_ids(low, high)
                await self._step(IdsRead(read, certified))
            case PushCertified(peer, ids):
                async for message in self._store.certified_messages(ids):
                    if not self._send(peer, message):
                        return
            case ServeRounds(peer, low, high, max_bytes):
                messages, last = await self._store.certified_in_rounds(low, high, max_bytes)
                for message in messages:
                    if not self._send(peer, message):
                        return
                await self._step(RoundsServed(peer, low, last))
            case ServeCheckpoint(peer, number):
                held = await (
                    self._store.checkpoint(number) if number else self._store.latest_checkpoint()
                )
                if held is not None:
                    self._send(peer, encode_sync(CheckpointOffer(held.certified, held.window)))
            case ServeLog(peer, start, count):
                entries = await self._store.log_entries(start, count, LOG_ANSWER_BYTES)
                if entries:
                    self._send(peer, encode_sync(LogEntries(start, tuple(entries))))
            case _:
                assert_never(read)

    async def _install_checkpoint(self, install: InstallCheckpoint) -> None:
        """Have the node restart from the checkpoint, then tell the machine."""
        if self._install is None:
            raise RuntimeError("a state sync without an installer")
        await self._install(install)
        prefix = await self._store.log_prefix(install.certified.checkpoint.log_length)
        await self._step(CheckpointInstalled(prefix))
