"""Backfill: the log before a joined checkpoint, fetched segment by segment and checked
against certified anchors (:mod:`qudag_node.core.backfill`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest

from qudag_node.core.backfill import (
    BACKFILL_TIMEOUT,
    Anchor,
    Backfill,
    BackfillDone,
    BackfillOutput,
    BackfillProgress,
    BackfillRejected,
    BackfillSend,
    BackfillTimedOut,
    DiscardStaged,
    KeepCheckpoint,
    LandSegment,
    Resume,
    StageEntries,
    check_anchor,
    check_entries,
)
from qudag_node.core.checkpoint import Checkpoint, window_root
from qudag_node.core.crypto import SequentialVerifier, extend_log_hash, log_hash_start, tx_id
from qudag_node.core.errors import InputRejected, Reason
from qudag_node.core.sync import PeerMessage, SegmentLanded, Send, ServeLog, SyncMachine, Tick
from qudag_node.core.syncwire import (
    CheckpointOffer,
    CheckpointRequest,
    Holdings,
    LogEntries,
    LogRequest,
    Status,
    WireEntry,
    decode_sync,
)
from qudag_node.core.types import PeerId, VertexId
from tests.core.checkpoints import Network, network

VERTEX = VertexId(b"\x07" * 32)


@dataclass(frozen=True)
class History:
    """A log of ``len(entries)`` entries and certified checkpoints at some positions."""

    net: Network
    entries: tuple[WireEntry, ...]
    hashes: tuple[bytes, ...]  # hashes[k] = running hash after position k (0: the start)
    offers: dict[int, CheckpointOffer]  # by checkpoint number

    def anchor(self, number: int) -> Anchor:
        cp = self.offers[number].certified.checkpoint
        return Anchor(number, cp.log_length, cp.log_hash)

    def answer(self, request: LogRequest) -> LogEntries:
        start = request.start
        return LogEntries(start, self.entries[start - 1 : start - 1 + min(request.count, 7)])


def history(length: int = 30, checkpoints: dict[int, int] | None = None) -> History:
    """``length`` entries; checkpoint number -> log length (default 1: 10, 2: 20, 3: 30)."""
    net = network()
    data = [f"transaction {k}".encode() for k in range(length)]
    entries = tuple(WireEntry(tx_id(d), VERTEX, d) for d in data)
    start = log_hash_start(net.genesis.hash)
    hashes = (start, *extend_log_hash(start, [e.tx_id for e in entries]))
    offers = {}
    for number, at in (checkpoints or {1: 10, 2: 20, 3: 30}).items():
        cp = Checkpoint(
            net.genesis.hash, number, 4 * number, VERTEX, 1000, at, hashes[at], 0, window_root(())
        )
        offers[number] = CheckpointOffer(net.signed(cp, range(net.genesis.quorum)), ())
    return History(net, entries, hashes, offers)


def backfill(h: History, base: int) -> Backfill:
    return Backfill(h.net.genesis, SequentialVerifier(), enabled=True, base=h.anchor(base))


ARCHIVE = Holdings(1, 3, 12)
A, B = PeerId("a"), PeerId("b")


def sent(outputs: list[BackfillOutput]) -> list[tuple[PeerId, object]]:
    return [(o.peer, decode_sync(o.data)) for o in outputs if isinstance(o, BackfillSend)]


def serve(
    h: History, fill: Backfill, outputs: list[BackfillOutput], now: float = 0.0
) -> list[BackfillOutput]:
    """Answer every request in ``outputs`` honestly until the machine asks nothing more;
    every output it gave on the way."""
    seen: list[BackfillOutput] = []
    while outputs:
        seen += outputs
        nxt: list[BackfillOutput] = []
        for peer, message in sent(outputs):
            if isinstance(message, CheckpointRequest):
                nxt += fill.on_offer(peer, h.offers[message.number], now)
            elif isinstance(message, LogRequest):
                nxt += fill.on_entries(peer, h.answer(message), now)
        for o in outputs:
            if isinstance(o, LandSegment):
                nxt += fill.landed(now)
        outputs = nxt
    return seen


# ------------------------------------------------------------------ checks


def test_entries_hash_from_the_anchor_and_a_wrong_id_is_refused() -> None:
    h = history()
    assert check_entries(11, h.entries[10:20], h.hashes[10]) == list(h.hashes[11:21])
    lying = (*h.entries[10:12], dataclasses.replace(h.entries[12], data=b"other"))
    with pytest.raises(InputRejected) as e:
        check_entries(11, lying, h.hashes[10])
    assert e.value.reason is Reason.BAD_SYNC


def test_an_anchor_must_be_certified_and_below_the_base() -> None:
    h = history()
    verifier = SequentialVerifier()
    assert check_anchor(h.offers[2], h.anchor(3), h.net.genesis, verifier) == h.anchor(2)
    for offer, reason in (
        (h.offers[3], Reason.BAD_CHECKPOINT),  # not below
        (
            CheckpointOffer(
                h.net.signed(h.offers[2].certified.checkpoint, range(h.net.genesis.quorum - 1)),
                (),
            ),
            Reason.BAD_CHECKPOINT,  # too few signatures
        ),
        (CheckpointOffer(h.offers[2].certified, (VERTEX,)), Reason.BAD_CHECKPOINT),  # window
    ):
        with pytest.raises(InputRejected) as e:
            check_anchor(offer, h.anchor(3), h.net.genesis, verifier)
        assert e.value.reason is reason


# ------------------------------------------------------------------ the machine


def test_walks_down_from_the_base_to_the_genesis_start() -> None:
    h = history()
    fill = backfill(h, 3)
    fill.on_holdings(A, ARCHIVE)
    outputs = serve(h, fill, fill.tick(0.0))
    staged = [o for o in outputs if isinstance(o, StageEntries)]
    positions = [o.first + k for o in staged for k in range(len(o.entries))]
    assert sorted(positions) == list(range(1, 31))
    for o in staged:
        assert o.hashes == h.hashes[o.first : o.first + len(o.entries)]
    landed = [o.anchor.length for o in outputs if isinstance(o, LandSegment)]
    assert landed == [20, 10, 0]
    assert isinstance(outputs[-1], BackfillDone)
    assert (fill.active, fill.base, fill.entries) == (False, 0, 30)
    asked = [m.number for _, m in sent(outputs) if isinstance(m, CheckpointRequest)]
    assert asked == [2, 1]
    kept = [o.offer for o in outputs if isinstance(o, KeepCheckpoint)]
    assert kept == [h.offers[2], h.offers[1]]  # served from here on, and anchors a restart


def test_a_node_that_holds_the_start_of_the_log_fetches_only_what_it_lacks() -> None:
    h = history()
    prefix = Anchor(0, 15, h.hashes[15])  # a node that was away held 1..15
    fill = backfill(h, 3)
    assert fill.joined(h.anchor(3), prefix) == [DiscardStaged()]
    fill.on_holdings(A, ARCHIVE)
    outputs = serve(h, fill, fill.tick(0.0))
    staged = [
        o.first + k for o in outputs if isinstance(o, StageEntries) for k in range(len(o.entries))
    ]
    assert sorted(staged) == list(range(16, 31))
    assert [o.anchor for o in outputs if isinstance(o, LandSegment)] == [h.anchor(2), prefix]
    assert isinstance(outputs[-1], BackfillDone)
    assert (fill.active, fill.base, fill.entries) == (False, 0, 15)


def test_a_restart_goes_on_after_the_last_staged_entry() -> None:
    h = history()
    resume = Resume(h.anchor(2), 26, h.hashes[25])
    fill = Backfill(
        h.net.genesis, SequentialVerifier(), enabled=True, base=h.anchor(3), resume=resume
    )
    fill.on_holdings(A, ARCHIVE)
    out = fill.tick(0.0)
    assert DiscardStaged() not in out  # what is staged is kept
    assert sent(out) == [(A, LogRequest(26, 5))]
    out = fill.on_entries(A, LogEntries(26, h.entries[25:30]), 0.0)
    assert out[-1] == LandSegment(h.anchor(2))


def test_a_segment_that_misses_the_base_is_dropped_and_asked_of_another_peer() -> None:
    h = history()
    fill = backfill(h, 3)
    fill.on_holdings(A, ARCHIVE)
    fill.on_holdings(B, ARCHIVE)
    out = fill.tick(0.0)
    ((peer, request),) = sent(out)
    assert (peer, request) == (A, CheckpointRequest(2))
    out = fill.on_offer(A, h.offers[2], 0.0)
    ((_, ask),) = sent(out)
    assert ask == LogRequest(21, 10)
    # A serves real transactions (ids match) in the wrong order: the hash misses
    swapped = (h.entries[21], h.entries[20], *h.entries[22:30])
    out = fill.on_entries(A, LogEntries(21, swapped), 0.0)
    assert isinstance(out[0], StageEntries)
    assert BackfillRejected(A, Reason.BAD_SYNC) in out
    assert DiscardStaged() in out
    assert fill.base == 30
    out = serve(h, fill, fill.tick(1.0))
    first_landing = next(k for k, o in enumerate(out) if isinstance(o, LandSegment))
    assert {peer for peer, _ in sent(out[:first_landing])} == {B}  # the segment came from B
    assert isinstance(out[-1], BackfillDone)


def test_a_checkpoint_number_nobody_holds_is_skipped() -> None:
    h = history(checkpoints={1: 10, 3: 30})  # no leader committed in interval 2
    fill = backfill(h, 3)
    fill.on_holdings(A, ARCHIVE)
    out = fill.tick(0.0)
    assert sent(out) == [(A, CheckpointRequest(2))]
    out = fill.tick(BACKFILL_TIMEOUT)
    assert out[0] == BackfillTimedOut(A)
    assert sent(out) == [(A, CheckpointRequest(1))]
    out = serve(h, fill, fill.on_offer(A, h.offers[1], BACKFILL_TIMEOUT))
    assert [o.anchor.length for o in out if isinstance(o, LandSegment)] == [10, 0]


def test_only_peers_holding_the_history_are_asked_and_off_asks_nothing() -> None:
    h = history()
    fill = backfill(h, 3)
    fill.on_holdings(A, Holdings(500, 3, 12))  # pruned
    out = fill.tick(0.0)
    assert out[0] == DiscardStaged()  # what a crash may have left staged
    assert out[1:] == [BackfillProgress(30, 0, 0, None, sources=0)]  # it says it waits
    assert fill.tick(1.0) == []
    off = Backfill(h.net.genesis, SequentialVerifier(), enabled=False, base=h.anchor(3))
    off.on_holdings(A, ARCHIVE)
    assert off.tick(0.0) == []
    assert not off.active


def test_a_join_starts_a_backfill_and_drops_what_was_staged() -> None:
    h = history()
    fill = Backfill(h.net.genesis, SequentialVerifier(), enabled=True, base=None)
    assert not fill.active
    fill.on_holdings(A, ARCHIVE)
    assert fill.tick(0.0) == []
    assert fill.joined(h.anchor(2), None) == [DiscardStaged()]  # whatever a crash left staged
    out = fill.tick(0.0)
    assert sent(out) == [(A, CheckpointRequest(1))]
    fill.on_offer(A, h.offers[1], 0.0)
    assert fill.joined(h.anchor(3), None) == [DiscardStaged()]
    assert fill.base == 30


# ------------------------------------------------------------------ in the sync machine


def test_the_sync_machine_routes_backfill_and_serves_log_requests() -> None:
    h = history()
    fill = backfill(h, 3)
    params = h.net.sim.params
    machine = SyncMachine(params, 30.0, True, 1, 0.0, backfill=fill)
    ours = Status(12, 12, 0, 30, h.hashes[30])
    machine.link_up(A, ours)
    assert machine.step(PeerMessage(A, LogRequest(5, 100)), ours, 0.0) == [ServeLog(A, 5, 100)]
    assert machine.step(PeerMessage(A, ARCHIVE), ours, 0.0) == []
    behind = Status(400, 400, 0, 30, h.hashes[30])
    machine.step(PeerMessage(A, behind), ours, 0.0)
    out = machine.step(Tick(), ours, 0.0)
    assert machine.catching_up
    assert not [o for o in out if isinstance(o, DiscardStaged)]  # waits for catch-up
    machine.step(PeerMessage(A, ours), ours, 0.0)  # in step again
    out = machine.step(Tick(), ours, 0.0)
    asks = [decode_sync(o.data) for o in out if isinstance(o, Send) and o.peer == A]
    assert CheckpointRequest(2) in asks
    assert DiscardStaged() in out
    out = machine.step(PeerMessage(A, h.offers[2]), ours, 0.1)
    assert [decode_sync(o.data) for o in out if isinstance(o, Send)] == [LogRequest(21, 10)]
    out = machine.step(PeerMessage(A, LogEntries(21, h.entries[20:30])), ours, 0.2)
    assert [type(o) for o in out] == [StageEntries, LandSegment]
    out = machine.step(SegmentLanded(), ours, 0.3)
    assert fill.base == 20
    assert CheckpointRequest(1) in [decode_sync(o.data) for o in out if isinstance(o, Send)]
    assert machine.backfill is fill
