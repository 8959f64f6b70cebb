"""An HTTP/1.1 load generator that runs in a process of its own.

The suite starts it with :func:`run_load`; it talks to loopback only and is bounded by a
deadline and, optionally, by a number of requests. It keeps one keep-alive connection
per client and writes pre-formatted requests on bare asyncio protocols, so that one core
sends far more requests than one aiohttp client would: the bare-handler reference of the
``single`` scenario shows its ceiling, and each run reports the CPU it used.

Requests submit transactions of ``size`` random bytes: ``single`` sends one per request
(``application/octet-stream``), ``batch`` sends ``batch`` of them as JSON. The load is
*closed* (each connection sends its next request when the last is answered) or *paced*
(``rate`` requests per second; a request's latency counts from its scheduled time, so a
backlog is not hidden). A 503 answer (the node's pending pool is full) is counted and
the connection pauses 10 ms. A connection the server closes sends no more; requests
still unanswered ``grace`` seconds after the deadline count as failed.

Protocol with the parent, one JSON object per line on stdout: ``{"event": "started"}``
once every connection is open and the clock starts, ``{"event": "deadline"}`` when the
time bound passes (in-flight requests are then finished), and the result.

Run by hand: ``python -m bench.loadgen '{"urls": ["http://127.0.0.1:8080"], ...}'``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit

from bench.lab import ROOT

#: Seconds a paced or final-waiting run may take beyond its deadline to finish in flight.
GRACE = 90.0
#: Seconds a connection waits after a 503 (pool full) before its next request.
BACKOFF = 0.01


@dataclass(frozen=True)
class LoadSpec:
    """What to send, where, and for how long."""

    urls: tuple[str, ...]
    connections: int
    duration: float
    kind: str = "batch"  # "batch" (JSON) or "single" (one transaction, octet-stream)
    batch: int = 1000
    size: int = 256
    requests: int | None = None  # stop after this many answered requests
    rate: float | None = None  # paced: requests per second, else closed loop
    query: str = ""  # e.g. "wait=final&timeout=60"
    path: str = "/api/v1/transactions"
    cpu: int | None = None  # pin the generator to this CPU
    grace: float = GRACE  # seconds past the deadline for requests in flight to be answered

    @property
    def transactions_per_request(self) -> int:
        """Transactions carried by one request."""
        return 1 if self.kind == "single" else self.batch


@dataclass
class LoadResult:
    """What the generator saw: answers by status, latencies of accepted requests, its CPU."""

    elapsed: float
    accepted: int  # 200 or 202 answers
    rejected: int  # 503 answers (back-pressure)
    failed: int  # any other answer, or a closed connection
    transactions: int  # carried by accepted requests
    p50: float
    p99: float
    max: float
    cpu_seconds: float
    first_error: str = ""

    @property
    def rate(self) -> float:
        """Accepted requests per second."""
        return self.accepted / self.elapsed

    @property
    def tx_rate(self) -> float:
        """Accepted transactions per second."""
        return self.transactions / self.elapsed

    @property
    def cpu_share(self) -> float:
        """The generator's CPU time as a share of one core over the run."""
        return self.cpu_seconds / self.elapsed


def quantile(values: list[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of ``values``; 0.0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))]


def _content_length(head: bytes) -> int:
    """The Content-Length of a lower-cased response head (0 when absent)."""
    at = head.find(b"\r\ncontent-length:")
    if at < 0:
        return 0
    stop = head.find(b"\r\n", at + 2)
    return int(head[at + 17 : stop if stop >= 0 else len(head)])


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection with at most one request in flight."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._transport: asyncio.Transport | None = None
        self.lost = False  # the server closed the connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self._buffer[:end]).lower()
        length = _content_length(head)
        total = end + 4 + length
        if len(self._buffer) < total:
            return
        status = int(head[9:12])
        body = bytes(self._buffer[end + 4 : total])
        del self._buffer[:total]
        waiter.set_result((status, body))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError("the server closed the connection"))

    async def request(self, data: bytes) -> tuple[int, bytes]:
        """Send one request; its (status, body)."""
        assert self._transport is not None
        if self.lost:
            raise ConnectionError("the server closed the connection")
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(data)
        return await self._waiter

    def close(self) -> None:
        """Close the socket."""
        if self._transport is not None:
            self._transport.close()


def request_bodies(spec: LoadSpec) -> Iterator[tuple[str, bytes]]:
    """(content type, body) of each request in turn: fresh random transactions."""
    if spec.kind == "single":
        while True:
            yield "application/octet-stream", os.urandom(spec.size)
    while True:
        blob = os.urandom(spec.batch * spec.size)
        items = (
            base64.b64encode(blob[k : k + spec.size]).decode()
            for k in range(0, len(blob), spec.size)
        )
        yield "application/json", ('{"transactions":["' + '","'.join(items) + '"]}').encode()


def http_post(host: str, target: str, content_type: str, body: bytes) -> bytes:
    """A keep-alive POST request, ready to write."""
    head = (
        f"POST {target} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


@dataclass
class _Tally:
    accepted: int = 0
    rejected: int = 0
    failed: int = 0
    latencies: list[float] = field(default_factory=list)
    first_error: str = ""
    unanswered: int = 0  # in flight when the grace period ran out

    def record(self, status: int, body: bytes, latency: float) -> None:
        if status in (200, 202):
            self.accepted += 1
            self.latencies.append(latency)
        elif status == 503:
            self.rejected += 1
        else:
            self.failed += 1
            self.first_error = self.first_error or f"{status} {body[:200]!r}"


def _emit(event: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


async def _connect(spec: LoadSpec) -> list[tuple[_Connection, str]]:
    """One open connection per client, spread over the URLs in turn, with its Host."""
    loop = asyncio.get_running_loop()
    targets = [urlsplit(u) for u in spec.urls]
    connections = []
    for k in range(spec.connections):
        target = targets[k % len(targets)]
        host, port = target.hostname or "127.0.0.1", target.port or 80
        _, protocol = await loop.create_connection(_Connection, host, port)
        connections.append((protocol, f"{host}:{port}"))
    return connections


class _Generator:
    """One run of :func:`generate`: the clock, the request budget, and the tally."""

    def __init__(self, spec: LoadSpec, connections: list[tuple[_Connection, str]]) -> None:
        self.spec = spec
        self.connections = connections
        self.target = spec.path + (f"?{spec.query}" if spec.query else "")
        self.bodies = request_bodies(spec)
        self.tally = _Tally()
        self.budget = itertools.count() if spec.requests is None else iter(range(spec.requests))
        self.queue: asyncio.Queue[float | None] = asyncio.Queue()
        self.started = time.monotonic()
        self.deadline = self.started + spec.duration

    def may_send(self) -> bool:
        """Whether the deadline is ahead and the budget allows another request."""
        return time.monotonic() < self.deadline and next(self.budget, None) is not None

    async def send(self, conn: _Connection, host: str, scheduled: float) -> None:
        """One request; its latency counts from ``scheduled``."""
        content_type, body = next(self.bodies)
        try:
            status, answer = await conn.request(http_post(host, self.target, content_type, body))
        except ConnectionError as e:
            self.tally.failed += 1
            self.tally.first_error = self.tally.first_error or str(e)
            return
        except asyncio.CancelledError:
            self.tally.unanswered += 1
            raise
        self.tally.record(status, answer, time.monotonic() - scheduled)
        if status == 503:
            await asyncio.sleep(BACKOFF)

    async def closed_loop(self, conn: _Connection, host: str) -> None:
        """Send the next request as soon as the last is answered, while the connection
        lasts."""
        while not conn.lost and self.may_send():
            await self.send(conn, host, time.monotonic())

    async def paced_worker(self, conn: _Connection, host: str) -> None:
        """Send the requests the pacer schedules, one at a time."""
        while (scheduled := await self.queue.get()) is not None:
            await self.send(conn, host, scheduled)

    async def pace(self, rate: float) -> None:
        """Schedule ``rate`` requests per second until the deadline or the budget."""
        for k in itertools.count():
            scheduled = self.started + k / rate
            if scheduled >= self.deadline or next(self.budget, None) is None:
                break
            await asyncio.sleep(max(0.0, scheduled - time.monotonic()))
            self.queue.put_nowait(scheduled)
        for _ in self.connections:
            self.queue.put_nowait(None)

    async def run(self) -> None:
        """Drive every connection until the load is done; requests still unanswered
        ``grace`` seconds after the deadline count as failed."""
        try:
            async with asyncio.timeout(self.spec.duration + self.spec.grace):
                async with asyncio.TaskGroup() as group:
                    if self.spec.rate is None:
                        for conn, host in self.connections:
                            group.create_task(self.closed_loop(conn, host))
                    else:
                        group.create_task(self.pace(self.spec.rate))
                        for conn, host in self.connections:
                            group.create_task(self.paced_worker(conn, host))
        except TimeoutError:
            self.tally.failed += self.tally.unanswered
            self.tally.first_error = self.tally.first_error or (
                f"{self.tally.unanswered} requests unanswered {self.spec.grace:g} s"
                " after the deadline"
            )


async def generate(spec: LoadSpec, emit: Callable[[dict[str, object]], None] = _emit) -> LoadResult:
    """Apply the load of ``spec``; ``emit`` hears the started and deadline events."""
    connections = await _connect(spec)
    cpu_start = time.process_time()
    run = _Generator(spec, connections)
    emit({"event": "started"})

    async def watch_deadline() -> None:
        await asyncio.sleep(max(0.0, run.deadline - time.monotonic()))
        emit({"event": "deadline"})

    watcher = asyncio.create_task(watch_deadline())
    await run.run()
    elapsed = min(time.monotonic(), run.deadline) - run.started
    if not watcher.done():
        watcher.cancel()
        emit({"event": "deadline"})
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    for conn, _ in connections:
        conn.close()
    tally = run.tally
    return LoadResult(
        elapsed=elapsed,
        accepted=tally.accepted,
        rejected=tally.rejected,
        failed=tally.failed,
        transactions=tally.accepted * spec.transactions_per_request,
        p50=quantile(tally.latencies, 0.5),
        p99=quantile(tally.latencies, 0.99),
        max=max(tally.latencies, default=0.0),
        cpu_seconds=time.process_time() - cpu_start,
        first_error=tally.first_error,
    )


async def run_load(
    spec: LoadSpec,
    on_started: Callable[[], object] | None = None,
    on_deadline: Callable[[], object] | None = None,
) -> LoadResult:
    """Run the generator in its own process; the callbacks run (awaited if they return an
    awaitable) when it starts the clock and when the deadline passes."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.loadgen",
        json.dumps(asdict(spec)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    try:
        async with asyncio.timeout(spec.duration + spec.grace + 30):
            while line := await proc.stdout.readline():
                message = json.loads(line)
                event = message.pop("event", None)
                callback = {"started": on_started, "deadline": on_deadline}.get(str(event))
                if event is None:
                    await proc.wait()
                    return LoadResult(**message)
                if callback is not None:
                    outcome = callback()
                    if asyncio.iscoroutine(outcome):
                        await outcome
            await proc.wait()
            error = (await proc.stderr.read()).decode(errors="replace")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    raise RuntimeError(f"the load generator failed (exit {proc.returncode}): {error[-2000:]}")


def main() -> None:
    """Entry point of the generator process: the spec as JSON in argv[1]."""
    raw = json.loads(sys.argv[1])
    raw["urls"] = tuple(raw["urls"])
    spec = LoadSpec(**raw)
    if spec.cpu is not None:
        os.sched_setaffinity(0, {spec.cpu})
    result = asyncio.run(generate(spec))
    _emit(asdict(result))


if __name__ == "__main__":
    main()
