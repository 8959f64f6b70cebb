"""The stream of the finalized log (``GET /api/v1/stream``, Server-Sent Events).

The group commit publishes what became durable (log entries, and the DAG events
certified and committed) to a :class:`Broadcaster`, which hands each event, encoded
once, to every subscriber's bounded buffer and never waits. A :class:`Feed` writes one
subscriber's events to its client: first the entries before the stream opened, read
from the store page by page, then the live ones, without a gap or a duplicate (the
store is read up to where the live buffer begins; what was sent already is skipped).

A subscriber whose buffer is full when an event comes is dropped: it is sent a final
``dropped`` event naming where to resume (if its connection takes it within
:data:`FINAL_GRACE`) and closed, so a client that stops reading never slows the node
or the other subscribers. Times are monotonic seconds.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from itertools import groupby
from typing import Protocol

from qudag_node.core.events import LogEntry
from qudag_node.core.types import NodeId, TxId, VertexId
from qudag_node.metrics import Metrics
from qudag_node.ports import LogRecord, Pruned

#: Entries (a DAG event counts as one) a subscriber's buffer holds before the next
#: event drops it (one commit's entries are taken whole while it holds fewer).
SUBSCRIBER_BUFFER = 8192
#: Most entries in one ``entries`` event: its data line stays under 35 kB, below the
#: 64 KiB lines that common SSE clients (aiohttp's reader among them) take.
STREAM_RUN = 256
#: Seconds of silence after which a ``: keepalive`` comment is sent.
KEEPALIVE = 15.0
#: Entries read from the store at a time while catching up.
STORE_PAGE = 1000
#: Longest wait for a dropped subscriber's final event to be taken by its connection.
FINAL_GRACE = 1.0
_KEEPALIVE_LINE = b": keepalive\n\n"

#: Reads the finalized log: entries from a position on, at most so many.
LogReader = Callable[[int, int], Awaitable[list[LogRecord]]]
#: Writes bytes to a subscriber's connection (waits while it does not take them).
Writer = Callable[[bytes], Awaitable[None]]


class TooManySubscribers(Exception):
    """The cap on subscribers (``QUDAG_STREAM_MAX_SUBSCRIBERS``) is reached: the
    client is refused (HTTP 503 ``too_many_subscribers``)."""


@dataclass(frozen=True, slots=True)
class Event:
    """What one durable step gives a subscriber, encoded once for all of them: a
    commit's log entries (``entries``, in order), or one DAG event (no entries); its
    kind, its bytes, and when it became durable."""

    kind: str
    data: bytes
    final_at: float
    entries: tuple[LogEntry, ...] = ()

    @property
    def size(self) -> int:
        """What it takes of a subscriber's buffer."""
        return len(self.entries) or 1


def _encode(kind: str, body: Mapping[str, object], seq: int | None = None) -> bytes:
    head = b"" if seq is None else b"id: %d\n" % seq
    data = json.dumps(body, separators=(",", ":")).encode()
    return head + b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"


class _Entry(Protocol):
    """A log entry as the engine (:class:`LogEntry`) or the store (:class:`LogRecord`)
    gives it."""

    @property
    def seq(self) -> int: ...
    @property
    def tx_id(self) -> TxId: ...
    @property
    def vertex(self) -> VertexId | None: ...
    @property
    def hash(self) -> bytes: ...


def entries_bytes(entries: Sequence[_Entry]) -> bytes:
    """Consecutive log entries as SSE ``entries`` events, one per run of at most
    :data:`STREAM_RUN` entries of one vertex: its ``id`` is the run's last position;
    its data gives the first position, the vertex once, and each entry's tx id and
    running hash in order (half the bytes of an event per entry)."""
    events = []
    for vertex, group in groupby(entries, key=lambda e: e.vertex):
        whole = list(group)
        for at in range(0, len(whole), STREAM_RUN):
            run = whole[at : at + STREAM_RUN]
            body = {
                "first": run[0].seq,
                "vertex": None if vertex is None else vertex.hex(),
                "tx_ids": [e.tx_id.hex() for e in run],
                "hashes": [e.hash.hex() for e in run],
            }
            events.append(_encode("entries", body, run[-1].seq))
    return b"".join(events)


class End(Enum):
    """Why a subscriber's stream ends."""

    DROPPED = "slow_reader"  # its buffer was full
    PRUNED = "pruned"  # what it needs next is no longer held
    CLOSED = "closed"  # the node shuts down
    GONE = "gone"  # its client's connection was lost


class Subscriber:
    """One client's place in the stream: its bounded buffer of events, and whether the
    live events are buffered yet (not while it catches up from the store)."""

    def __init__(self, dag: bool, capacity: int) -> None:
        self.dag = dag
        self.live = False
        self.end: End | None = None
        self._capacity = capacity
        self._held = 0  # entries (and DAG events) buffered
        self._events: deque[Event] = deque()
        self._ready = asyncio.Event()
        self._cut: asyncio.Timeout | None = None  # the feed's, fired when it must stop

    def offer(self, event: Event) -> bool:
        """Buffer ``event``; False (nothing buffered) when the buffer is full."""
        if self._held >= self._capacity:
            return False
        self._events.append(event)
        self._held += event.size
        self._ready.set()
        return True

    def watch(self, cut: asyncio.Timeout | None) -> None:
        """While its feed runs: the timeout that :meth:`stop` fires."""
        self._cut = cut

    def stop(self, end: End) -> None:
        """End the stream now, even while the feed waits on its connection."""
        if self.end is None:
            self.end = end
        self._ready.set()
        if self._cut is not None:
            self._cut.reschedule(asyncio.get_running_loop().time())

    async def take(self, timeout: float) -> list[Event]:
        """The buffered events, once there are any ([] after ``timeout`` seconds, or
        once the stream ends)."""
        if not self._events and self.end is None:
            try:
                async with asyncio.timeout(timeout):
                    await self._ready.wait()
            except TimeoutError:
                return []
        self._ready.clear()
        events = list(self._events)
        self._events.clear()
        self._held = 0
        return events


class Broadcaster:
    """The live events, handed to every subscriber without waiting; at most
    ``max_subscribers`` at once. ``log_length`` is the durable log's length at start."""

    def __init__(
        self,
        metrics: Metrics,
        max_subscribers: int,
        *,
        log_length: int,
        capacity: int = SUBSCRIBER_BUFFER,
    ) -> None:
        self._metrics = metrics
        self._max = max_subscribers
        self._capacity = capacity
        self._subscribers: set[Subscriber] = set()
        self._log_length = log_length
        self._closed = False

    def __len__(self) -> int:
        return len(self._subscribers)

    def subscribe(self, dag: bool) -> Subscriber:
        """A new subscriber (``dag``: it wants the DAG events too); raises
        :class:`TooManySubscribers` at the cap."""
        if len(self._subscribers) >= self._max:
            raise TooManySubscribers(
                f"{self._max} clients are subscribed already (QUDAG_STREAM_MAX_SUBSCRIBERS)"
            )
        sub = Subscriber(dag, self._capacity)
        if self._closed:
            sub.stop(End.CLOSED)
        self._subscribers.add(sub)
        self._metrics.on_stream_subscribers(len(self._subscribers))
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        """Forget ``sub`` (its feed has ended, or it was dropped)."""
        self._subscribers.discard(sub)
        self._metrics.on_stream_subscribers(len(self._subscribers))

    def close(self) -> None:
        """The node shuts down: every stream ends, and new ones end at once."""
        self._closed = True
        for sub in self._subscribers:
            sub.stop(End.CLOSED)

    def entries(self, entries: Sequence[LogEntry], now: float) -> None:
        """``entries`` are durably final (at ``now``)."""
        if entries:
            self._log_length = entries[-1].seq
        if not self._subscribers or not entries:
            return
        self._publish(Event("entries", entries_bytes(entries), now, tuple(entries)), dag=False)

    def certified(self, round_: int, author: NodeId | None, vertex: VertexId, now: float) -> None:
        """``vertex`` of ``round_`` by ``author`` is durably certified."""
        if any(sub.dag for sub in self._subscribers):
            body = {"round": round_, "author": _hex(author), "vertex": vertex.hex()}
            self._publish(Event("certified", _encode("certified", body), now), dag=True)

    def committed(self, round_: int, leader: NodeId | None, vertex: VertexId, now: float) -> None:
        """The leader ``vertex`` of ``round_`` is durably committed (after its entries)."""
        if any(sub.dag for sub in self._subscribers):
            body = {
                "round": round_,
                "leader": _hex(leader),
                "vertex": vertex.hex(),
                "log_length": self._log_length,
            }
            self._publish(Event("committed", _encode("committed", body), now), dag=True)

    def _publish(self, event: Event, *, dag: bool) -> None:
        full = [
            sub
            for sub in self._subscribers
            if sub.live and (sub.dag or not dag) and not sub.offer(event)
        ]
        for sub in full:
            self._drop(sub)

    def _drop(self, sub: Subscriber) -> None:
        self._metrics.on_stream_dropped(End.DROPPED.value)
        self.unsubscribe(sub)
        sub.stop(End.DROPPED)


def _hex(node: NodeId | None) -> str | None:
    return None if node is None else node.hex()


class Feed:
    """Writes one subscriber's stream from log position ``start`` on (None: from the
    next live entry), through ``read`` (the store's log) and ``write`` (the client)."""

    def __init__(
        self, sub: Subscriber, read: LogReader, metrics: Metrics, start: int | None
    ) -> None:
        self._sub = sub
        self._read = read
        self._metrics = metrics
        self._next = start  # the next log position to send
        self._first: list[LogRecord] = []

    async def open(self) -> None:
        """Read the first page before answering: raises :class:`Pruned` (HTTP 410)
        when the start is no longer held."""
        if self._next is None:
            self._sub.live = True
        else:
            self._first = await self._read(self._next, STORE_PAGE)

    async def run(self, write: Writer) -> End:
        """Write until the stream ends, and say why: the node shuts down, the client's
        connection is lost, or the subscriber is dropped (then a final ``dropped`` event
        is written, within :data:`FINAL_GRACE`). ``write``'s errors propagate."""
        sub = self._sub
        try:
            async with asyncio.timeout(None) as cut:
                sub.watch(cut)
                if sub.end is None:
                    await self._catch_up(write)
                    await self._follow(write)
        except TimeoutError:
            if sub.end is None:
                raise
        except Pruned as e:
            sub.end = End.PRUNED
            self._metrics.on_stream_dropped(End.PRUNED.value)
            self._next = e.base + 1
        finally:
            sub.watch(None)
        end = sub.end
        assert end is not None  # the loops return only once it ends
        if end in (End.DROPPED, End.PRUNED):
            body = {"code": end.value, "resume_from": self._next}
            try:
                async with asyncio.timeout(FINAL_GRACE):
                    await write(_encode("dropped", body))
            except TimeoutError:
                pass  # its connection takes nothing: it is closed all the same
        return end

    async def _catch_up(self, write: Writer) -> None:
        """Send the stored entries from the start on, page by page; the live ones are
        buffered from the first short page on (by then the rest is small), and the
        store is read until a page read after that comes back short: whatever became
        durable later is in the buffer."""
        page, self._first = self._first, []
        read_live = False  # ``page`` was read while the live events were buffered
        while self._next is not None:
            await self._send_stored(page, write)
            if len(page) < STORE_PAGE:
                if read_live:
                    return
                self._sub.live = True
            read_live = self._sub.live
            page = await self._read(self._next, STORE_PAGE)

    async def _send_stored(self, records: Sequence[LogRecord], write: Writer) -> None:
        if records:
            await write(entries_bytes(records))
            self._metrics.on_stream_sent({"entry": len(records)}, None)
            self._next = records[-1].seq + 1

    async def _follow(self, write: Writer) -> None:
        """Send the live events as they come; fill a gap from the store; skip what was
        sent; a keepalive after :data:`KEEPALIVE` seconds of silence."""
        sub = self._sub
        while sub.end is None:
            events = await sub.take(KEEPALIVE)
            if not events:
                if sub.end is None:
                    await write(_KEEPALIVE_LINE)
                continue
            await self._send_live(events, write)

    async def _send_live(self, events: Sequence[Event], write: Writer) -> None:
        """Write ``events`` in one go (two around a gap filled from the store)."""
        chunks: list[bytes] = []
        counts: Counter[str] = Counter()
        oldest: float | None = None
        for event in events:
            if not event.entries:
                chunks.append(event.data)
                counts[event.kind] += 1
                continue
            first: int = event.entries[0].seq
            last: int = event.entries[-1].seq
            if self._next is None:
                self._next = first
            if last < self._next:
                continue  # sent already, read from the store
            data = event.data
            if first < self._next:  # partly sent already: the rest, encoded again
                rest = [e for e in event.entries if e.seq >= self._next]
                data = entries_bytes(rest)
                first = self._next
            if first > self._next:
                await self._write_live(chunks, counts, oldest, write)
                chunks, counts, oldest = [], Counter(), None
                await self._fill(self._next, first, write)
            self._next = last + 1
            oldest = event.final_at if oldest is None else oldest
            chunks.append(data)
            counts["entry"] += last - first + 1
        await self._write_live(chunks, counts, oldest, write)

    async def _write_live(
        self, chunks: list[bytes], counts: Counter[str], oldest: float | None, write: Writer
    ) -> None:
        if chunks:
            await write(chunks[0] if len(chunks) == 1 else b"".join(chunks))
            delay = None if oldest is None else time.monotonic() - oldest
            self._metrics.on_stream_sent(counts, delay)

    async def _fill(self, start: int, end: int, write: Writer) -> None:
        """Send the stored entries from ``start`` up to ``end`` (not included)."""
        while start < end:
            records = await self._read(start, min(STORE_PAGE, end - start))
            if not records:
                return  # not held (a checkpoint was installed): the stream goes on at end
            await self._send_stored(records, write)
            start = records[-1].seq + 1
