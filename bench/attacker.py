"""The attack mix of the ``attack`` scenario, from a process of its own.

One anonymous client's worst, against one node on loopback, bounded in count and time:

- ``idle`` sockets opened and left silent (one is opened again when the node closes it,
  at most ``idle / 10`` a second, so that at most ``idle`` are open at once and the
  attack never turns into a flood of connects);
- ``slow`` clients that start a request and then send one byte of its header every
  ``slow_interval`` seconds (a new one starts ``pause`` seconds after the node closes
  one);
- ``bombs`` clients, each sending a gzip bomb (``bomb_bytes`` of zeros, about 1/1,000
  of that on the wire) as a one-transaction submit with ``Content-Encoding: gzip``;
- ``batches`` clients, each sending a JSON batch of ``batch_items`` transactions padded
  to ``batch_bytes`` (by default the node's largest accepted body, 16 MiB).

The bomb and batch clients send their next request ``pause`` seconds after the last was
answered (or closed, or left unanswered for ``answer_timeout`` seconds), so at most
``bombs + batches`` of them are in flight. Everything stops at the deadline.

Protocol with the parent, one JSON object per line on stdout: ``{"event": "started"}``
once the idle sockets and slow clients are open (the bodies are built before), then,
after the deadline or SIGTERM, the result (:class:`AttackResult`).

Run by hand: ``python -m bench.attacker '{"url": "http://127.0.0.1:8080", ...}'``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import signal
import socket
import sys
import time
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit

#: Seconds the attacker may take to open its idle sockets and slow clients.
SETUP_TIMEOUT = 120.0
#: Seconds one connect may take (a node that no longer accepts leaves it pending).
CONNECT_TIMEOUT = 5.0
#: Connects in flight at once while the idle sockets are opened (below the listen backlog).
CONNECTS_IN_FLIGHT = 64
#: File descriptors the attacker keeps beside its sockets.
SPARE_FDS = 256
#: The submit route every request of the mix goes to.
TARGET = "/api/v1/transactions"


@dataclass(frozen=True)
class AttackMix:
    """How much of each attack to run at once."""

    idle: int = 10_000
    slow: int = 50
    slow_interval: float = 3.0
    bombs: int = 20
    bomb_bytes: int = 1 << 30  # decompressed size of one bomb
    batches: int = 4
    batch_items: int = 2_000_000
    batch_bytes: int = 16 << 20
    pause: float = 1.0
    answer_timeout: float = 30.0


@dataclass(frozen=True)
class AttackSpec:
    """Where to aim the mix, for how long, on which CPU."""

    url: str
    duration: float
    mix: AttackMix = field(default_factory=AttackMix)
    cpu: int | None = None


@dataclass(frozen=True)
class AttackResult:
    """What the attacker saw; statuses are keyed by their text ("415", "closed", ...)."""

    idle_opened: int  # open when the load started
    idle_reopened: int  # opened again after the node closed one
    idle_refused: int  # connects that failed or timed out
    slow_closed: int  # slow clients the node closed
    slow_held: float  # median seconds a closed slow client had been held
    bomb_wire_bytes: int
    bombs: dict[str, int]
    batch_wire_bytes: int
    batches: dict[str, int]
    batch_p50: float  # seconds from a batch's first byte to its answer
    batch_max: float
    cpu_seconds: float


def gzip_bomb(size: int) -> bytes:
    """``size`` zero bytes, gzip-compressed (about 1 byte in 1,000)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(min(size, 1 << 20))
    parts = []
    left = size
    while left > 0:
        parts.append(packer.compress(chunk[: min(left, len(chunk))]))
        left -= len(chunk)
    parts.append(packer.flush())
    return b"".join(parts)


def oversize_batch(items: int, size: int) -> bytes:
    """A JSON submit of ``items`` tiny transactions, padded with spaces to ``size`` bytes
    (it is never smaller than the items need)."""
    body = b'{"transactions":[' + b",".join([b'"AAAA"'] * items) + b"]}"
    return body[:-2] + b" " * max(0, size - len(body)) + body[-2:]


def request(host: str, headers: dict[str, str], body: bytes) -> bytes:
    """A POST of ``body`` to the submit route with ``headers``."""
    head = f"POST {TARGET} HTTP/1.1\r\nHost: {host}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


class _Attack:
    """One run of the mix."""

    def __init__(self, spec: AttackSpec) -> None:
        target = urlsplit(spec.url)
        self.spec = spec
        self.mix = spec.mix
        self.address = (target.hostname or "127.0.0.1", target.port or 80)
        self.host = f"{self.address[0]}:{self.address[1]}"
        self.stop = asyncio.Event()
        self.idle: set[socket.socket] = set()
        self.idle_reopened = 0
        self.idle_refused = 0
        self.slow_held: list[float] = []
        self.bombs: Counter[str] = Counter()
        self.batches: Counter[str] = Counter()
        self.batch_latencies: list[float] = []
        self.bomb_request = request(
            self.host,
            {"Content-Type": "application/octet-stream", "Content-Encoding": "gzip"},
            gzip_bomb(self.mix.bomb_bytes),
        )
        self.batch_request = request(
            self.host,
            {"Content-Type": "application/json"},
            oversize_batch(self.mix.batch_items, self.mix.batch_bytes),
        )

    async def connect(self) -> socket.socket | None:
        """A connected non-blocking socket, or None (counted) when the node does not take it."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await asyncio.get_running_loop().sock_connect(sock, self.address)
        except (OSError, TimeoutError):
            sock.close()
            self.idle_refused += 1
            return None
        return sock

    async def open_idle(self) -> None:
        """Open the idle sockets, :data:`CONNECTS_IN_FLIGHT` connects at a time."""
        gate = asyncio.Semaphore(CONNECTS_IN_FLIGHT)

        async def one() -> None:
            async with gate:
                sock = await self.connect()
            if sock is not None:
                self.idle.add(sock)

        async with asyncio.TaskGroup() as group:
            for _ in range(self.mix.idle):
                group.create_task(one())

    async def keep_idle(self) -> None:
        """Every half second, replace the idle sockets the node has closed (or answered:
        it closes them next), at most ``idle / 10`` a second."""
        budget = max(1, self.mix.idle // 20)  # per half second
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await self.stop.wait()
            closed = []
            for sock in self.idle:
                try:
                    sock.recv(1, socket.MSG_PEEK)
                except BlockingIOError:
                    continue  # nothing to read: still open and silent
                except OSError:
                    pass
                closed.append(sock)
            for sock in closed:
                self.idle.discard(sock)
                sock.close()
            for _ in range(min(budget, self.mix.idle - len(self.idle))):
                if self.stop.is_set():
                    return
                replacement = await self.connect()
                if replacement is not None:
                    self.idle.add(replacement)
                    self.idle_reopened += 1

    async def slow_client(self, opened: asyncio.Event) -> None:
        """Trickle a request header, one byte every ``slow_interval``; start again when the
        node closes the connection."""
        header = f"POST {TARGET} HTTP/1.1\r\nHost: {self.host}\r\nX-Slow: "
        first = True
        while not self.stop.is_set():
            try:
                reader, writer = await asyncio.open_connection(*self.address)
            except OSError:
                self.idle_refused += 1
                if first:
                    opened.set()
                    first = False
                await asyncio.sleep(self.mix.pause)
                continue
            started = time.monotonic()
            writer.write(header.encode())
            if first:
                opened.set()
                first = False
            try:
                while not self.stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.mix.slow_interval):
                            if await reader.read(4096) == b"":
                                self.slow_held.append(time.monotonic() - started)
                                break
                    writer.write(b"a")
                    await writer.drain()
            except OSError:
                self.slow_held.append(time.monotonic() - started)
            finally:
                writer.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.mix.pause):
                    await self.stop.wait()

    async def sender(self, data: bytes, tally: Counter[str], latencies: list[float]) -> None:
        """Send ``data`` on a fresh connection, read the answer's status, pause, again."""
        while not self.stop.is_set():
            started = time.monotonic()
            outcome = "refused"
            writer = None
            try:
                async with asyncio.timeout(self.mix.answer_timeout):
                    reader, writer = await asyncio.open_connection(*self.address)
                    writer.write(data)
                    status_line = await reader.readline()
                    outcome = status_line.split()[1].decode() if status_line else "closed"
            except TimeoutError:
                outcome = "unanswered"
            except (OSError, IndexError):
                outcome = "closed"
            finally:
                if writer is not None:
                    writer.close()
            tally[outcome] += 1
            latencies.append(time.monotonic() - started)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.mix.pause):
                    await self.stop.wait()

    async def run(self) -> AttackResult:
        """Open the sockets, say started, attack until the deadline or SIGTERM."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop.set)
        cpu_start = time.process_time()
        async with asyncio.timeout(SETUP_TIMEOUT):
            await self.open_idle()
        opened_idle = len(self.idle)
        bomb_times: list[float] = []
        async with asyncio.TaskGroup() as group:
            group.create_task(self.keep_idle())
            slow_open = [asyncio.Event() for _ in range(self.mix.slow)]
            clients = [group.create_task(self.slow_client(event)) for event in slow_open]
            for event in slow_open:
                await event.wait()
            _emit({"event": "started"})
            clients += [
                group.create_task(self.sender(self.bomb_request, self.bombs, bomb_times))
                for _ in range(self.mix.bombs)
            ]
            clients += [
                group.create_task(
                    self.sender(self.batch_request, self.batches, self.batch_latencies)
                )
                for _ in range(self.mix.batches)
            ]
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.spec.duration):
                    await self.stop.wait()
            self.stop.set()
            for client in clients:  # requests in flight at the end are not counted
                client.cancel()
        for sock in self.idle:
            sock.close()
        held = sorted(self.slow_held)
        latencies = sorted(self.batch_latencies)
        return AttackResult(
            idle_opened=opened_idle,
            idle_reopened=self.idle_reopened,
            idle_refused=self.idle_refused,
            slow_closed=len(held),
            slow_held=held[len(held) // 2] if held else 0.0,
            bomb_wire_bytes=len(self.bomb_request),
            bombs=dict(self.bombs),
            batch_wire_bytes=len(self.batch_request),
            batches=dict(self.batches),
            batch_p50=latencies[len(latencies) // 2] if latencies else 0.0,
            batch_max=latencies[-1] if latencies else 0.0,
            cpu_seconds=time.process_time() - cpu_start,
        )


def _emit(event: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def main() -> None:
    """Entry point of the attacker process: the spec as JSON in argv[1]."""
    raw = json.loads(sys.argv[1])
    spec = AttackSpec(raw["url"], raw["duration"], AttackMix(**raw["mix"]), raw.get("cpu"))
    if spec.cpu is not None:
        os.sched_setaffinity(0, {spec.cpu})
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = spec.mix.idle + spec.mix.slow + spec.mix.bombs + spec.mix.batches + SPARE_FDS
    if soft < wanted:  # a lower hard limit shows as connects refused in the result
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    result = asyncio.run(_Attack(spec).run())
    _emit(asdict(result))


if __name__ == "__main__":
    main()
