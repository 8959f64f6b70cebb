"""What the peer links bring for the engine, queued for the pump in arrival order.

The peer network hands every link event and frame to a :class:`PeerInbox`. Frames
go where the codec table (:mod:`qudag_node.core.wire`) says: sync messages to the
syncer's own queue; links coming up or down and every other message wait here until
the pump feeds them to the engine. A ``TRACED`` wrapper is taken off first: its
inner message goes on as if it had come alone, and its trace context to the node's
:class:`~qudag_node.tracing.spans.Tracing` if it traces (a malformed wrapper goes on whole,
for the engine to refuse). The queue is bounded in messages
and in bytes: when it is full, the links that bring more stop reading, so a flood
is pushed back to its senders over TCP and memory stays bounded whatever they send.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from qudag_node.core.errors import InputRejected
from qudag_node.core.types import NodeId, PeerId
from qudag_node.core.wire import TRACED, Owner, decode_traced, owner_of
from qudag_node.gossip import LinkHandler
from qudag_node.sync import Syncer

if TYPE_CHECKING:
    from qudag_node.tracing.spans import Tracing

#: Most messages waiting for the engine.
MAX_MESSAGES = 1024
#: Most bytes of messages waiting for the engine (a few maximal vertices).
MAX_BYTES = 32 << 20


@dataclass(frozen=True, slots=True)
class LinkUp:
    """A first link to ``peer``, who proved ``key``, is up."""

    peer: PeerId
    key: NodeId


@dataclass(frozen=True, slots=True)
class LinkDown:
    """The last link to ``peer`` is gone."""

    peer: PeerId


@dataclass(frozen=True, slots=True)
class Received:
    """A message from ``peer`` for the engine."""

    peer: PeerId
    data: bytes


PeerInput = LinkUp | LinkDown | Received


class PeerInbox(LinkHandler):
    """The bounded queue between the links and the pump. ``wake`` tells the pump."""

    def __init__(
        self,
        syncer: Syncer,
        wake: Callable[[], None],
        max_messages: int = MAX_MESSAGES,
        max_bytes: int = MAX_BYTES,
        tracing: Tracing | None = None,
    ) -> None:
        self._syncer = syncer
        self._tracing = tracing
        self._wake = wake
        self._max_messages = max_messages
        self._max_bytes = max_bytes
        self._queue: deque[PeerInput] = deque()
        self._bytes = 0
        self._room = asyncio.Event()
        self._room.set()

    def __len__(self) -> int:
        return len(self._queue)

    def link_up(self, peer: PeerId, public_key: NodeId) -> None:
        """Queue the link for the engine; the syncer greets the peer at once."""
        self._queue.append(LinkUp(peer, public_key))
        self._wake()
        self._syncer.link_up(peer)

    def link_down(self, peer: PeerId) -> None:
        """Queue the loss for the engine; the syncer forgets the peer at once."""
        self._queue.append(LinkDown(peer))
        self._wake()
        self._syncer.link_down(peer)

    async def frame(self, peer: PeerId, data: bytes) -> None:
        """A message from ``peer``: sync messages (and the CERTIFIED vertices of a
        checkpoint's window while the syncer fetches one) to the syncer's queue, the rest
        to ours.

        Waits while the queue it goes to is full (ours in messages or bytes), which
        stops this link from reading. A message larger than the byte bound still gets in once the
        queue is empty, so no valid message is refused.
        """
        if data[0] == TRACED:
            data = self._unwrap(data)
        if owner_of(data) is Owner.SYNC or self._syncer.takes(data):
            await self._syncer.deliver(peer, data)
            return
        while self._queue and self._full(len(data)):
            self._room.clear()
            await self._room.wait()
        self._queue.append(Received(peer, data))
        self._bytes += len(data)
        self._wake()

    def _unwrap(self, data: bytes) -> bytes:
        """The inner message of a ``TRACED`` wrapper (its context to the tracing), or
        the malformed wrapper whole."""
        try:
            traced = decode_traced(data)
        except InputRejected:
            return data
        if self._tracing is not None:
            self._tracing.received(traced)
        return traced.inner

    def take(self, limit: int) -> list[PeerInput]:
        """Up to ``limit`` queued inputs, oldest first; makes room for the links."""
        taken = [self._queue.popleft() for _ in range(min(limit, len(self._queue)))]
        self._bytes -= sum(len(item.data) for item in taken if isinstance(item, Received))
        if not self._full(0):
            self._room.set()
        return taken

    def _full(self, incoming: int) -> bool:
        return len(self._queue) >= self._max_messages or self._bytes + incoming > self._max_bytes
