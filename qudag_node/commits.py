"""Group commit: the pump's steps written in order, many to a transaction under load.

The pump hands each step over with :meth:`GroupCommit.put` and goes on with the next
while this one is written, so the engine never waits for the disk. One task,
:meth:`GroupCommit.run`, writes steps into the open database transaction as they come,
ends the transaction (one fsync) for all of them together, and only then finishes each
in order: whatever a step acknowledges or sends leaves once the step is durable.
Writing while steps come means that when the transaction ends, only its last rows and
the fsync are left to wait for.

Two bounds keep it honest. In any span of ``T`` seconds at most
``max_burst + max_rate * T`` transactions end (a token bucket), so that the fsyncs stay
within what the volume allows; under load each one carries every step since the last.
A bucket rather than a fixed gap between commits, because the event loop wakes from a
timer only to the millisecond: a commit made to wait for a gap a fraction of a
millisecond away would lose a whole one. And at most ``max_waiting`` steps wait to be
written: beyond that :meth:`put` waits, so a slow disk slows the pump down rather than
letting memory grow.

A failure that the owner can recover from (``recoverable`` says which; a full disk
for the node) does not end :meth:`run`: every step not finished is failed, the group
commit is *broken*, and every step put until :meth:`repair` is failed at once, since
it was made from state that is no longer on its way to the disk.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

S = TypeVar("S")


class _Bucket:
    """A token bucket: ``rate`` tokens a second, holding at most ``size``; starts full."""

    def __init__(self, rate: float, size: float, now: float) -> None:
        self._rate = rate
        self._size = size
        self._tokens = size
        self._at = now

    def _refill(self, now: float) -> None:
        self._tokens = min(self._size, self._tokens + (now - self._at) * self._rate)
        self._at = now

    def ready_at(self, now: float) -> float:
        """When a token will be there (``now`` if one is)."""
        self._refill(now)
        return now if self._tokens >= 1 else now + (1 - self._tokens) / self._rate

    def take(self, now: float) -> None:
        """Spend a token (there may be none: the caller waited for :meth:`ready_at`)."""
        self._refill(now)
        self._tokens -= 1


class GroupCommit(Generic[S]):
    """Steps of type ``S``. ``write`` adds steps to the open transaction and says whether
    one is open (a step with nothing to store opens none); ``commit`` ends it; then
    ``finish`` acts on each step, in order. When ``write`` or ``commit`` raises, ``fail``
    gets every step not finished, and the exception ends :meth:`run`, unless
    ``recoverable`` holds for it: then the group commit is broken (see :attr:`broken`)
    and ``on_broken`` is called."""

    def __init__(
        self,
        write: Callable[[Sequence[S]], Awaitable[bool]],
        commit: Callable[[], Awaitable[None]],
        finish: Callable[[S], Awaitable[None]],
        fail: Callable[[Sequence[S]], None],
        *,
        max_rate: float,
        max_burst: int,
        max_waiting: int,
        recoverable: Callable[[Exception], bool] = lambda _: False,
        on_broken: Callable[[], None] = lambda: None,
    ) -> None:
        if max_rate <= 0 or max_burst < 1 or max_waiting < 1:
            raise ValueError("max_rate must be positive, and max_burst and max_waiting at least 1")
        self._write = write
        self._commit = commit
        self._finish = finish
        self._fail = fail
        self._interval = 1.0 / max_rate
        self._bucket = _Bucket(max_rate, max_burst, time.monotonic())
        self._max_waiting = max_waiting
        self._waiting: list[S] = []  # put, not written yet
        self._written: list[S] = []  # written, not finished yet
        self._open = False  # a transaction holds some of the written steps
        self._preparing = False  # the pump is making a step it will put
        self._arrived = asyncio.Event()  # steps are waiting, or we are closed
        self._room = asyncio.Event()  # fewer than max_waiting steps wait
        self._room.set()
        self._settled = asyncio.Event()  # every step put so far is finished
        self._settled.set()
        self._closed = False
        self._recoverable = recoverable
        self._on_broken = on_broken
        self._broken = False

    @property
    def broken(self) -> bool:
        """A recoverable failure failed the steps in flight; until :meth:`repair`, every
        step put is failed at once."""
        return self._broken

    def repair(self) -> None:
        """Take steps again (the owner has rebuilt what they are made from)."""
        self._broken = False

    async def put(self, step: S) -> None:
        """Queue ``step`` behind every step put before it; waits while the queue is full.
        While :attr:`broken`, ``step`` is failed instead, also when the failure came
        while it waited for room (the room a failure makes is not for steps made
        before it)."""
        if self._closed:
            raise RuntimeError("put() after close()")
        while len(self._waiting) >= self._max_waiting and not self._broken:
            self._room.clear()
            await self._room.wait()
        if self._broken:
            self._fail([step])
            return
        self._waiting.append(step)
        self._preparing = False
        self._settled.clear()
        self._arrived.set()

    def preparing(self) -> None:
        """The pump is making a step that it will :meth:`put`: a transaction that is due
        waits for it, up to ``1 / max_rate`` seconds, so that a burst of submissions is
        not split across two fsyncs."""
        self._preparing = True

    async def flush(self) -> None:
        """Return once every step put so far is durable and finished."""
        await self._settled.wait()

    def close(self) -> None:
        """No more steps: :meth:`run` ends the transaction at once, finishes what is
        queued, and returns."""
        self._closed = True
        self._arrived.set()

    async def run(self) -> None:
        """Write, commit and finish steps until :meth:`close` and none are left."""
        while True:
            try:
                await self._loop()
                return
            except Exception as e:
                steps = [*self._written, *self._waiting]
                self._written, self._waiting, self._open = [], [], False
                self._fail(steps)
                if not self._recoverable(e):
                    raise
                self._broken = True
                self._room.set()
                self._settled.set()
                self._on_broken()

    async def _loop(self) -> None:
        due_since: float | None = None  # when the open transaction could first have ended
        while True:
            if self._waiting:
                steps, self._waiting = self._waiting, []
                self._room.set()
                self._written += steps
                self._open = await self._write(steps)
            now = time.monotonic()
            wake_at = now
            if self._open and not self._closed:
                wake_at = self._bucket.ready_at(now)
                if wake_at <= now:
                    due_since = now if due_since is None else due_since
                    if self._preparing:  # a step is on its way: wait for it, a little
                        wake_at = due_since + self._interval
            if self._written and now >= wake_at:
                if self._open:
                    self._bucket.take(now)
                    await self._commit()
                    self._open = False
                    due_since = None
                steps, self._written = self._written, []
                for step in steps:
                    await self._finish(step)
                if not self._waiting:
                    self._settled.set()
                continue
            if self._waiting:
                continue
            if self._closed and not self._written:
                return
            self._arrived.clear()
            delay = wake_at - time.monotonic() if self._written else None
            try:
                async with asyncio.timeout(delay):
                    await self._arrived.wait()  # steps that come meanwhile join the transaction
            except TimeoutError:
                pass
