"""Helpers shared by the peer link tests: networks running in the test's event loop over
either transport, and a raw client that dials like a node from the core's handshake
functions so that it can misbehave on purpose.

:func:`networks` starts :class:`~qudag_node.gossip.PeerNetwork` instances on port 0,
inside TLS (each with its own fresh :class:`~qudag_node.linktls.LinkTls`) or plain.
:func:`raw_connect` opens a connection to one of them in the transport it speaks, and
:func:`raw_dial` runs the link handshake over it, with the channel binding the TLS
session gives.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import secrets
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

from qudag_node.core.crypto import Signer
from qudag_node.core.genesis import Genesis
from qudag_node.core.handshake import (
    Side,
    auth_size,
    decode_hello,
    make_auth,
    make_hello,
    refusal_reason,
    transcript,
)
from qudag_node.core.types import NodeId, PeerId
from qudag_node.gossip import LinkHandler, LinkLimits, PeerNetwork
from qudag_node.linktls import LinkTls
from qudag_node.metrics import Metrics
from tests.core.support import C

TOKEN = b"9f2c41d7e08a6b35c1f4e2a97d60b8c3e5a1f7092b4d6c8e0a3f5b7d9c1e2f40"
DEADLINE = 10.0
FRAME = struct.Struct(">I")
#: The two transports a link runs over.
TRANSPORTS = ("tls", "plain")


def link_tls(label: str = "qudag-link test") -> LinkTls:
    """A fresh TLS identity, as a node makes one at start."""
    return LinkTls.create(label, datetime.now(UTC))


class Recorder(LinkHandler):
    """Keeps what a network reports: links up and down, frames received."""

    def __init__(self) -> None:
        self.up: list[tuple[PeerId, NodeId]] = []
        self.down: list[PeerId] = []
        self.frames: asyncio.Queue[tuple[PeerId, bytes]] = asyncio.Queue()

    def link_up(self, peer: PeerId, node_id: NodeId) -> None:
        self.up.append((peer, node_id))

    def link_down(self, peer: PeerId) -> None:
        self.down.append(peer)

    async def frame(self, peer: PeerId, data: bytes) -> None:
        await self.frames.put((peer, data))


@dataclasses.dataclass
class Running:
    network: PeerNetwork
    recorder: Recorder
    metrics: Metrics
    signer: Signer
    task: asyncio.Task[None]

    async def stop(self) -> None:
        """Stop listening and close every link."""
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    @property
    def port(self) -> int:
        assert self.network.port is not None
        return self.network.port

    @property
    def tls(self) -> bool:
        """Whether this network's links run inside TLS."""
        return self.network.transport == "tls"

    def failures(self, reason: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "qudag_peer_handshake_failures_total", {"reason": reason}
        )
        return value or 0.0

    def closed(self, reason: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "qudag_peer_links_closed_total", {"reason": reason}
        )
        return value or 0.0


Start = Callable[..., Awaitable[Running]]


@contextlib.asynccontextmanager
async def networks(transport: str) -> AsyncIterator[Start]:
    """A function that starts peer networks on port 0, by default over ``transport``
    (``tls`` or ``plain``); all are stopped on exit."""
    tasks: list[asyncio.Task[None]] = []

    async def run(
        signer: Signer,
        genesis: Genesis = C.genesis,
        token: bytes = TOKEN,
        limits: LinkLimits | None = None,
        port: int = 0,
        previous_token: bytes | None = None,
        recorder: Recorder | None = None,
        transport: str = transport,
    ) -> Running:
        recorder, metrics = recorder or Recorder(), Metrics("test")
        tls = link_tls() if transport == "tls" else None
        network = PeerNetwork(
            genesis,
            signer,
            token,
            recorder,
            metrics,
            limits,
            previous_token=previous_token,
            tls=tls,
        )
        await network.start(port)
        task = asyncio.create_task(network.run())
        tasks.append(task)
        return Running(network, recorder, metrics, signer, task)

    try:
        yield run
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def until(condition: Callable[[], bool], what: str, deadline: float = DEADLINE) -> None:
    """Wait for ``condition`` with a deadline (polling the event loop)."""
    async with asyncio.timeout(deadline):
        while not condition():  # noqa: ASYNC110 - state of several objects, no one event
            await asyncio.sleep(0.01)
    assert condition(), what


def link(a: Running, b: Running) -> None:
    a.network.set_candidates(frozenset({("127.0.0.1", b.port)}))


# ---------------------------------------------------------------- raw peers

#: The raw client's TLS context: a dialer's, as a node's (it accepts any certificate).
_RAW_CLIENT = link_tls("qudag-link raw").client


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    (length,) = FRAME.unpack(await reader.readexactly(4))
    return await reader.readexactly(length)


def write_frame(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(FRAME.pack(len(data)) + data)


@dataclasses.dataclass
class RawPeer:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    #: SHA-256 of the listener's certificate; None on a plain connection.
    binding: bytes | None
    hello: bytes = b""
    auth: bytes | None = None

    async def refusal(self) -> str:
        """The reason of the refusal frame the other end sends before closing."""
        data = await asyncio.wait_for(read_frame(self.reader), DEADLINE)
        reason = refusal_reason(data)
        assert reason is not None, data[:40]
        return reason


async def raw_connect(port: int, tls: bool, rcvbuf: int | None = None) -> RawPeer:
    """A connection to 127.0.0.1:``port``, inside TLS if ``tls`` (handshake done, the
    binding read from the session), with no link handshake yet."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    if not tls:
        return RawPeer(reader, writer, None)
    await asyncio.wait_for(writer.start_tls(_RAW_CLIENT), DEADLINE)
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    return RawPeer(reader, writer, hashlib.sha256(der).digest())


async def raw_dial(
    node: Running,
    signer: Signer,
    token: bytes = TOKEN,
    hello: bytes | Callable[[bytes | None], bytes] | None = None,
    complete: bool = True,
    rcvbuf: int | None = None,
    genesis: Genesis = C.genesis,
) -> RawPeer:
    """Dial ``node`` like a node would, in its transport, from the core's functions;
    ``hello`` replaces ours (a function of the connection's binding makes it for this
    connection)."""
    peer = await raw_connect(node.port, node.tls, rcvbuf)
    if hello is None:
        ours = make_hello(genesis, signer, secrets.token_bytes(32), peer.binding).encode()
    else:
        ours = hello if isinstance(hello, bytes) else hello(peer.binding)
    peer.hello = ours
    write_frame(peer.writer, ours)
    if not complete:
        return peer
    theirs = await asyncio.wait_for(read_frame(peer.reader), DEADLINE)
    decode_hello(theirs)
    auth = make_auth(token, signer, Side.DIALER, transcript(ours, theirs, peer.binding))
    write_frame(peer.writer, auth)
    listener_auth = await asyncio.wait_for(read_frame(peer.reader), DEADLINE)
    assert len(listener_auth) == auth_size(genesis.scheme), listener_auth[:40]
    peer.auth = auth
    return peer
