"""The queue between the peer links and the pump: order, routing, and its bounds."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from qudag_node.core.crypto import log_hash_start
from qudag_node.core.params import Params
from qudag_node.core.syncwire import Status, decode_sync, encode_sync
from qudag_node.core.types import PeerId
from qudag_node.core.wire import TRACED, encode_traced
from qudag_node.inbox import LinkDown, LinkUp, PeerInbox, Received
from qudag_node.metrics import Metrics
from qudag_node.store import Store
from qudag_node.sync import Syncer
from tests.core.support import C

P = PeerId("v1")
OURS = Status(7, 6, 0, 10, log_hash_start(C.genesis.hash))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(tmp_path, C.genesis)
    yield opened
    await opened.close()


class Parts:
    def __init__(
        self, store: Store, max_messages: int = 4, max_bytes: int = 1000, max_frames: int = 64
    ) -> None:
        self.sent: list[tuple[PeerId, bytes]] = []
        self.sending = asyncio.Event()
        self.wakes = 0
        self.syncer = Syncer(
            store,
            self._send,
            lambda: OURS,
            Metrics("test"),
            Params(),
            1.0,
            needs_peers=True,
            on_catching_up=lambda _: None,
            max_frames=max_frames,
        )
        self.inbox = PeerInbox(self.syncer, self._wake, max_messages, max_bytes)

    def _send(self, peer: PeerId, data: bytes) -> bool:
        self.sent.append((peer, data))
        self.sending.set()
        return True

    async def until(self, condition: Callable[[], bool]) -> None:
        """Wait, up to five seconds, until ``condition`` holds after something was sent
        (the running syncer sends on every tick: a STATUS, a ROUNDS request)."""
        async with asyncio.timeout(5):
            while not condition():
                self.sending.clear()
                await self.sending.wait()

    def _wake(self) -> None:
        self.wakes += 1


async def test_inputs_come_out_in_arrival_order_and_wake_the_pump(store: Store) -> None:
    parts = Parts(store)
    inbox = parts.inbox
    inbox.link_up(P, C.signers[1].node_id)
    await inbox.frame(P, b"\x01proposal")
    inbox.link_down(P)
    assert parts.wakes == 3
    assert len(inbox) == 3
    assert inbox.take(2) == [LinkUp(P, C.signers[1].node_id), Received(P, b"\x01proposal")]
    assert inbox.take(10) == [LinkDown(P)]
    assert inbox.take(10) == []


@contextlib.asynccontextmanager
async def running(syncer: Syncer) -> AsyncIterator[None]:
    """Run ``syncer``'s task for the duration of the block."""
    task = asyncio.create_task(syncer.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_links_reach_the_syncer_at_once_and_sync_frames_its_queue(store: Store) -> None:
    parts = Parts(store)
    parts.inbox.link_up(P, C.signers[1].node_id)
    [(peer, data)] = parts.sent
    assert (peer, decode_sync(data)) == (P, OURS)  # greeted with our STATUS
    theirs = Status(50, 49, 0, 3, b"\x00" * 32)
    await parts.inbox.frame(P, encode_sync(theirs))
    assert len(parts.inbox) == 1  # only the link: the STATUS went to the syncer's queue
    assert parts.syncer.statuses() == {}  # taken in by the syncer's own task
    async with running(parts.syncer):
        await parts.until(lambda: parts.syncer.statuses() == {P: theirs})
    parts.inbox.link_down(P)
    assert parts.syncer.statuses() == {}


async def test_a_peer_with_a_full_sync_queue_holds_only_its_own_link(store: Store) -> None:
    parts = Parts(store, max_frames=2)
    other = PeerId("v2")
    statuses = [Status(50 + k, 49, 0, 3, b"\x00" * 32) for k in range(3)]
    parts.inbox.link_up(P, C.signers[1].node_id)
    parts.inbox.link_up(other, C.signers[2].node_id)
    await parts.inbox.frame(P, encode_sync(statuses[0]))
    await parts.inbox.frame(P, encode_sync(statuses[1]))
    third = asyncio.create_task(parts.inbox.frame(P, encode_sync(statuses[2])))
    await asyncio.sleep(0)  # one turn of the loop: the task runs up to its wait
    assert not third.done()
    # Neither another peer's sync frames nor the engine's queue are held up.
    await asyncio.wait_for(parts.inbox.frame(other, encode_sync(statuses[0])), 5)
    await asyncio.wait_for(parts.inbox.frame(P, b"\x02vote"), 5)
    async with running(parts.syncer):
        await asyncio.wait_for(third, 5)
        await parts.until(lambda: parts.syncer.statuses() == {P: statuses[2], other: statuses[0]})
    received = [i for i in parts.inbox.take(5) if isinstance(i, Received)]
    assert received == [Received(P, b"\x02vote")]


async def test_a_full_queue_holds_the_link_until_the_pump_takes(store: Store) -> None:
    parts = Parts(store, max_messages=2)
    inbox = parts.inbox
    await inbox.frame(P, b"\x02one")
    await inbox.frame(P, b"\x02two")
    third = asyncio.create_task(inbox.frame(P, b"\x02three"))
    await asyncio.sleep(0)  # one turn of the loop: the task runs up to its wait
    assert not third.done()
    assert [i.data for i in inbox.take(1) if isinstance(i, Received)] == [b"\x02one"]
    await asyncio.wait_for(third, 5)
    assert [i.data for i in inbox.take(5) if isinstance(i, Received)] == [b"\x02two", b"\x02three"]


async def test_the_queue_is_bounded_in_bytes_too(store: Store) -> None:
    parts = Parts(store, max_messages=100, max_bytes=1000)
    inbox = parts.inbox
    await inbox.frame(P, b"\x04" + bytes(700))
    blocked = asyncio.create_task(inbox.frame(P, b"\x04" + bytes(400)))
    await asyncio.sleep(0)  # one turn of the loop: the task runs up to its wait
    assert not blocked.done()
    inbox.take(1)
    await asyncio.wait_for(blocked, 5)
    assert len(inbox) == 1


async def test_a_message_over_the_byte_bound_still_gets_into_an_empty_queue(store: Store) -> None:
    parts = Parts(store, max_messages=100, max_bytes=1000)
    big = b"\x04" + bytes(5000)
    await asyncio.wait_for(parts.inbox.frame(P, big), 5)
    assert parts.inbox.take(1) == [Received(P, big)]


TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


async def test_a_traced_wrapper_is_taken_off_and_its_inner_message_routed(store: Store) -> None:
    parts = Parts(store)
    parts.inbox.link_up(P, C.signers[1].node_id)
    theirs = Status(50, 49, 0, 3, b"\x00" * 32)
    await parts.inbox.frame(P, encode_traced(TRACEPARENT, b"\x02vote"))
    await parts.inbox.frame(P, encode_traced(TRACEPARENT, encode_sync(theirs)))
    malformed = bytes((TRACED, 3)) + b"00-" + b"\x02vote"
    await parts.inbox.frame(P, malformed)
    # the inner vote for the engine; the wrapped STATUS to the syncer; the malformed
    # wrapper whole, for the engine to refuse
    assert parts.inbox.take(5) == [
        LinkUp(P, C.signers[1].node_id),
        Received(P, b"\x02vote"),
        Received(P, malformed),
    ]
    async with running(parts.syncer):
        await parts.until(lambda: parts.syncer.statuses() == {P: theirs})
