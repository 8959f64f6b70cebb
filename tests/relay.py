"""A TCP relay between nodes that a test can cut, to isolate a node and heal it again.

Run as ``python -m tests.relay``. It reads one command per line on stdin and answers
each with exactly one line on stdout:

``listen SRC DST [HOST [PORT]]``
    bind HOST (127.0.0.1 unless given; any loopback address) on PORT (a free one
    unless given) and answer ``port N``; connections accepted there are forwarded,
    both ways, to DST's target.
``target DST PORT``
    ``ok``; DST's connections go to 127.0.0.1:PORT from now on. A connection accepted
    while DST has no target is closed at once.
``cut NODE``
    ``ok``; close every open connection through a listener whose SRC or DST is NODE,
    and close new ones at once until ``heal NODE``.
``stall NODE``
    ``ok``; stop forwarding on every connection through a listener whose SRC or DST
    is NODE, without closing any: a silent partition, as when packets are dropped.
    Bytes wait unread (the senders' kernels hold them, as TCP retransmission would)
    until ``heal NODE``; new connections are accepted and stall too.
``heal NODE``
    ``ok``; end a cut or a stall.
``stats``
    ``{"bytes": ..., "connections": ..., "open": ...}``: bytes forwarded both ways,
    connections accepted, connections open now.

Anything else is answered with ``error <message>``; the relay exits 0 at the end of
stdin. :class:`Relay` runs it for a test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

HOST = "127.0.0.1"
CHUNK = 65536
#: Seconds a command may take to be answered.
REPLY_TIMEOUT = 10.0
ROOT = Path(__file__).resolve().parent.parent


@dataclass(eq=False)
class _Link:
    """One accepted connection and its two forwarding directions."""

    src: str
    dst: str
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def close(self) -> None:
        """Stop forwarding and close both sockets."""
        for task in self.tasks:
            task.cancel()
        for writer in self.writers:
            writer.close()


class RelayServer:
    """The relay's state: listeners, targets, cut nodes, open links, counters."""

    def __init__(self) -> None:
        self.targets: dict[str, int] = {}
        self.cut_nodes: set[str] = set()
        self.stalled: set[str] = set()
        self._healed = asyncio.Event()
        self.links: set[_Link] = set()
        self.servers: list[asyncio.Server] = []
        self.bytes = 0
        self.connections = 0

    async def handle(self, line: str) -> str:
        """Carry out one command line; its one-line answer."""
        words = line.split()
        if not words:
            return "error empty command"
        name, args = words[0], words[1:]
        if name == "listen" and 2 <= len(args) <= 4:
            host = args[2] if len(args) > 2 else HOST
            if len(args) == 4 and not args[3].isdigit():
                return f"error port {args[3]!r} is not a number"
            port = int(args[3]) if len(args) == 4 else 0
            return f"port {await self.listen(args[0], args[1], host, port)}"
        if name == "target" and len(args) == 2:
            return self.target(args[0], args[1])
        if name == "cut" and len(args) == 1:
            self.cut(args[0])
            return "ok"
        if name == "stall" and len(args) == 1:
            self.stalled.add(args[0])
            return "ok"
        if name == "heal" and len(args) == 1:
            self.cut_nodes.discard(args[0])
            self.stalled.discard(args[0])
            self._healed.set()
            return "ok"
        if name == "stats" and not args:
            return json.dumps(self.stats())
        usage = {
            "listen": "listen SRC DST [HOST [PORT]]",
            "target": "target DST PORT",
            "cut": "cut NODE",
            "stall": "stall NODE",
            "heal": "heal NODE",
            "stats": "stats",
        }
        if name in usage:
            return f"error usage: {usage[name]}"
        return f"error unknown command {name!r}"

    async def listen(self, src: str, dst: str, host: str = HOST, port: int = 0) -> int:
        """Accept connections from ``src`` for ``dst`` on ``host``:``port`` (a free port
        for 0); returns the port."""

        async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._forward(src, dst, reader, writer)

        server = await asyncio.start_server(accepted, host, port)
        self.servers.append(server)
        bound: int = server.sockets[0].getsockname()[1]
        return bound

    def target(self, dst: str, raw_port: str) -> str:
        """Send ``dst``'s connections to 127.0.0.1:``raw_port``."""
        if not raw_port.isdigit() or not 0 < int(raw_port) < 65536:
            return f"error port {raw_port!r} is not from 1 to 65535"
        self.targets[dst] = int(raw_port)
        return "ok"

    def cut(self, node: str) -> None:
        """Close ``node``'s links and refuse new ones until it is healed."""
        self.cut_nodes.add(node)
        for link in [k for k in self.links if node in (k.src, k.dst)]:
            self.links.discard(link)
            link.close()

    def stats(self) -> dict[str, int]:
        """Counters: bytes forwarded, connections accepted, connections open."""
        return {"bytes": self.bytes, "connections": self.connections, "open": len(self.links)}

    def close(self) -> None:
        """Stop listening and close every link."""
        for server in self.servers:
            server.close()
        for link in self.links:
            link.close()
        self.links.clear()

    def _blocked(self, src: str, dst: str) -> bool:
        return dst not in self.targets or bool({src, dst} & self.cut_nodes)

    async def _forward(
        self, src: str, dst: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.connections += 1
        link = _Link(src, dst, [writer])
        if self._blocked(src, dst):
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(HOST, self.targets[dst])
        except OSError:
            writer.close()
            return
        link.writers.append(up_writer)
        if self._blocked(src, dst):  # cut while connecting
            link.close()
            return
        self.links.add(link)
        link.tasks = [
            asyncio.create_task(self._pump(link, reader, up_writer)),
            asyncio.create_task(self._pump(link, up_reader, writer)),
        ]
        try:
            await asyncio.gather(*link.tasks, return_exceptions=True)
        finally:
            if link in self.links:
                self.links.discard(link)
                link.close()

    async def _flowing(self, link: _Link) -> None:
        """Return once neither end of ``link`` is stalled."""
        while {link.src, link.dst} & self.stalled:
            self._healed.clear()
            await self._healed.wait()

    async def _pump(
        self, link: _Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Copy ``reader`` to ``writer`` until EOF, then pass the EOF on; nothing is
        read while the link is stalled."""
        try:
            while True:
                await self._flowing(link)
                data = await reader.read(CHUNK)
                await self._flowing(link)  # stalled while the read waited: hold what came
                if not data:
                    break
                writer.write(data)
                self.bytes += len(data)
                await writer.drain()  # backpressure: read no more until the peer reads
            if writer.can_write_eof() and not writer.is_closing():
                writer.write_eof()
        except ConnectionError:
            writer.close()


async def serve() -> int:
    """Answer commands from stdin until it ends."""
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    relay = RelayServer()
    try:
        while line := await stdin.readline():
            try:
                answer = await relay.handle(line.decode(errors="replace"))
            except OSError as e:
                answer = f"error {e.strerror or e}"
            sys.stdout.write(answer + "\n")
            sys.stdout.flush()
    finally:
        relay.close()
    return 0


class RelayError(Exception):
    """The relay answered a command with an error, or did not answer in time."""


class Relay:
    """A ``python -m tests.relay`` process, driven one command at a time."""

    def __init__(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.relay"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def command(self, line: str, timeout: float = REPLY_TIMEOUT) -> str:
        """Send one command line; its answer. Raises :class:`RelayError` on ``error``."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        try:
            answer = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise RelayError(f"no answer to {line!r} within {timeout} s") from None
        if answer is None:
            raise RelayError(f"the relay exited with {self.proc.wait(timeout)} on {line!r}")
        if answer.startswith("error "):
            raise RelayError(answer.removeprefix("error "))
        return answer

    def listen(self, src: str, dst: str, host: str = HOST, port: int = 0) -> int:
        """A new port (``port``, or a free one) on ``host`` whose connections go from
        ``src`` to ``dst``'s target."""
        answer = self.command(f"listen {src} {dst} {host} {port}")
        word, _, number = answer.partition(" ")
        if word != "port" or not number.isdigit():
            raise RelayError(f"unexpected answer {answer!r}")
        return int(number)

    def target(self, dst: str, port: int) -> None:
        """Send ``dst``'s connections to 127.0.0.1:``port``."""
        self._ok(f"target {dst} {port}")

    def cut(self, node: str) -> None:
        """Close ``node``'s connections and refuse new ones until :meth:`heal`."""
        self._ok(f"cut {node}")

    def stall(self, node: str) -> None:
        """Stop forwarding ``node``'s traffic, silently, until :meth:`heal`."""
        self._ok(f"stall {node}")

    def heal(self, node: str) -> None:
        """Let ``node``'s connections through again (after a cut or a stall)."""
        self._ok(f"heal {node}")

    def stats(self) -> dict[str, Any]:
        """``{"bytes", "connections", "open"}``."""
        document: dict[str, Any] = json.loads(self.command("stats"))
        return document

    def close(self, timeout: float = REPLY_TIMEOUT) -> int:
        """End stdin and wait for the relay to exit (killing it after ``timeout``)."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(timeout)
        self._reader.join(timeout)
        return code

    def _ok(self, line: str) -> None:
        answer = self.command(line)
        if answer != "ok":
            raise RelayError(f"unexpected answer {answer!r} to {line!r}")


if __name__ == "__main__":
    sys.exit(asyncio.run(serve()))
