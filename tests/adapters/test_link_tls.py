"""Peer links inside TLS over real sockets on loopback: what TLS and the channel binding
add to the link handshake.

A relay that terminates TLS on both sides is refused even though it forwards every
byte; bytes injected into a live link's TCP stream close that link and only that one;
a peer that never finishes its TLS handshake is dropped in time; a node of the other
transport is refused at both ends as ``wrong_transport``; the TLS key never touches a
disk for longer than loading it takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import ssl
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from qudag_node.core.types import PeerId
from qudag_node.gossip import LinkLimits
from tests.adapters.peerlinks import (
    DEADLINE,
    FRAME,
    Running,
    Start,
    link,
    link_tls,
    networks,
    raw_connect,
    raw_dial,
    until,
)
from tests.core.support import C


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    """Start peer networks on port 0, inside TLS unless told; stopped at teardown."""
    async with networks("tls") as run:
        yield run


def via(a: Running, port: int) -> None:
    """Make ``a`` dial 127.0.0.1:``port`` (a relay's) and nothing else."""
    a.network.set_candidates(frozenset({("127.0.0.1", port)}))


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy ``reader`` to ``writer`` until either end closes."""
    with contextlib.suppress(OSError, ssl.SSLError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


@contextlib.asynccontextmanager
async def forwarder(
    target: int, tls: bool = False
) -> AsyncIterator[tuple[int, list[asyncio.StreamWriter]]]:
    """A relay on 127.0.0.1 forwarding every connection to ``target``, both ways; yields
    its port and, per connection, the writer towards ``target`` (to inject bytes there).

    With ``tls`` it terminates TLS on both sides, as a party in the middle would: towards
    the dialer with a self-made certificate of its own, towards ``target`` as a client
    that accepts any certificate, and forwards the plaintext."""
    upstream: list[asyncio.StreamWriter] = []
    pumps: list[asyncio.Task[None]] = []
    mitm = link_tls("qudag-link in the middle") if tls else None
    async with asyncio.TaskGroup() as tg:

        async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                r, w = await asyncio.open_connection(
                    "127.0.0.1",
                    target,
                    ssl=mitm.client if mitm else None,
                    server_hostname="" if mitm else None,
                )
            except OSError:
                writer.close()
                return
            upstream.append(w)
            pumps.append(tg.create_task(_pump(reader, w)))
            pumps.append(tg.create_task(_pump(r, writer)))

        server = await asyncio.start_server(
            accepted, "127.0.0.1", 0, ssl=mitm.server if mitm else None
        )
        try:
            yield server.sockets[0].getsockname()[1], upstream
        finally:
            server.close()
            for w in upstream:
                w.close()
            for task in pumps:  # of connections still open
                task.cancel()


async def refused_at_both_ends(a: Running, b: Running, reason: str) -> None:
    """Wait until ``a``'s dial to ``b`` is refused at both ends for ``reason``; ``a``
    shows it on its view of the link and backs off, and neither end has a link."""
    await until(lambda: a.failures(reason) >= 1 and b.failures(reason) >= 1, "refused at both ends")
    [view] = a.network.views()
    assert view.last_error == reason
    assert view.state in {"backoff", "connecting"}
    assert not a.recorder.up
    assert not b.recorder.up


# ---------------------------------------------------------- a relay in the middle


async def test_a_relay_terminating_tls_is_refused_as_bad_channel_binding(start: Start) -> None:
    a, b = await start(C.signers[0]), await start(C.signers[1])
    async with forwarder(b.port, tls=True) as (port, upstream):
        via(a, port)
        await refused_at_both_ends(a, b, "bad_channel_binding")
        assert upstream, "the relay did reach the listener, inside TLS"
    # nothing else went wrong on the way: the two ends only disagree on the session
    for node in (a, b):
        assert node.failures("bad_token") == node.failures("bad_signature") == 0


async def test_the_same_relay_forwarding_tcp_alone_is_no_obstacle(start: Start) -> None:
    """The refusal above is the binding's: through a relay that forwards TCP without
    terminating TLS, the same two nodes link."""
    a, b = await start(C.signers[0]), await start(C.signers[1])
    async with forwarder(b.port) as (port, _):
        via(a, port)
        await until(lambda: bool(a.recorder.up and b.recorder.up), "linked through the relay")
    assert a.failures("bad_channel_binding") == b.failures("bad_channel_binding") == 0


# -------------------------------------------------------------- injected bytes


def _fake_application_data() -> bytes:
    """A TLS 1.3 application-data record of the right shape whose tag cannot check."""
    body = secrets.token_bytes(48)
    return bytes([0x17, 0x03, 0x03]) + len(body).to_bytes(2) + body


@pytest.mark.parametrize(
    "injected",
    [
        FRAME.pack(9) + b"\x05injected",  # a well-formed plain frame
        _fake_application_data(),
    ],
    ids=["plain_frame", "tls_record"],
)
async def test_bytes_injected_into_a_link_close_only_that_link_and_it_comes_back(
    start: Start, injected: bytes
) -> None:
    limits = LinkLimits(backoff_base=0.05, backoff_cap=0.2)
    a, b = await start(C.signers[0], limits=limits), await start(C.signers[1], limits=limits)
    third = await start(C.signers[2], limits=limits)
    link(third, b)
    await until(lambda: len(b.recorder.up) == 1, "the third peer's link")
    async with forwarder(b.port) as (port, upstream):
        via(a, port)
        await until(lambda: len(b.recorder.up) == 2 and bool(a.recorder.up), "a's link")
        [to_b] = upstream
        to_b.write(injected)  # into a's TLS stream towards b, between two records
        await until(lambda: b.closed("tls_error") == 1, "the link closed as tls_error")
        assert b.recorder.down == [PeerId("v0")]
        # the third peer's link stayed up meanwhile and carries frames
        assert third.network.send(PeerId("v1"), b"\x05still here")
        assert await asyncio.wait_for(b.recorder.frames.get(), DEADLINE) == (
            "v2",
            b"\x05still here",
        )
        # a redials through the same relay, and the new link works
        await until(lambda: len(a.recorder.up) == 2, "a redialed")
        await until(lambda: len(b.recorder.up) == 3, "b took the new link")
        assert a.network.send(PeerId("v1"), b"\x05again")
        assert await asyncio.wait_for(b.recorder.frames.get(), DEADLINE) == ("v0", b"\x05again")
    assert b.recorder.frames.empty(), "nothing else reached the handler"
    assert PeerId("v2") not in b.recorder.down
    assert b.closed("tls_error") == 1


# ------------------------------------------------------- unfinished TLS handshakes


def _client_hello() -> bytes:
    """The bytes of a TLS 1.3 ClientHello, as a node's dialer sends them first."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = link_tls().client.wrap_bio(incoming, outgoing)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


@pytest.mark.parametrize("sent", ["first_byte", "half_client_hello"])
async def test_a_peer_that_never_finishes_its_tls_handshake_is_dropped_in_time(
    start: Start, sent: str
) -> None:
    timeout = 0.5
    b = await start(C.signers[1], limits=LinkLimits(handshake_timeout=timeout))
    hello = _client_hello()
    assert hello[0] == 0x16
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", b.port)
    began = loop.time()
    writer.write(hello[:1] if sent == "first_byte" else hello[: len(hello) // 2])
    assert await asyncio.wait_for(reader.read(), DEADLINE) == b"", "closed, no plain frame"
    took = loop.time() - began
    assert timeout - 0.05 <= took <= timeout + 1.0, took
    print(f"\nunfinished TLS handshake ({sent}): dropped after {took:.2f} s, timeout {timeout} s")
    await until(lambda: b.failures("handshake_timeout") == 1, "counted")
    writer.close()
    # the node still takes a peer that finishes
    await raw_dial(b, C.signers[2])
    await until(lambda: bool(b.recorder.up), "a finished handshake's link")


async def test_a_flood_of_unfinished_tls_handshakes_is_bounded(start: Start) -> None:
    b = await start(C.signers[1], limits=LinkLimits(max_handshakes=3, handshake_timeout=30))
    half = _client_hello()[:40]
    stuck = []
    for _ in range(3):  # b accepts in order: these three take every handshake slot
        reader, writer = await asyncio.open_connection("127.0.0.1", b.port)
        writer.write(half)
        stuck.append((reader, writer))
    # a fourth is closed at once, before any TLS (a plain frame saying why would read
    # to a TLS dialer as the wrong transport)
    with pytest.raises(ConnectionResetError):
        await raw_connect(b.port, tls=True)
    await until(lambda: b.failures("too_many_handshakes") == 1, "the fourth refused")
    dialer = await start(C.signers[0])
    link(dialer, b)
    await until(lambda: b.failures("too_many_handshakes") == 2, "a node's dial refused")
    await until(lambda: dialer.network.views()[0].last_error is not None, "the dialer's view")
    assert dialer.network.views()[0].last_error == "connection_lost"
    assert dialer.failures("wrong_transport") == 0
    for _, w in stuck:
        w.close()
    await until(lambda: b.failures("connection_lost") == 3, "the stuck ones gone")
    assert b.failures("tls_failed") == b.failures("handshake_timeout") == 0
    await raw_dial(b, C.signers[2])  # once they are gone, a real peer gets in
    await until(lambda: bool(b.recorder.up), "the real peer's link")


# --------------------------------------------------------- the other transport


@pytest.mark.parametrize("dialer", ["plain", "tls"])
async def test_a_node_of_the_other_transport_is_refused_at_both_ends(
    start: Start, dialer: str
) -> None:
    listener = "plain" if dialer == "tls" else "tls"
    a = await start(C.signers[0], transport=dialer)
    b = await start(C.signers[1], transport=listener)
    link(a, b)
    await refused_at_both_ends(a, b, "wrong_transport")
    for node in (a, b):
        assert node.failures("malformed_frame") == node.failures("tls_failed") == 0


# ------------------------------------------------------------------- views


async def test_views_show_each_links_transport_and_tls_session(start: Start) -> None:
    a, b = await start(C.signers[0]), await start(C.signers[1])
    link(a, b)
    c, d = (
        await start(C.signers[2], transport="plain"),
        await start(C.signers[3], transport="plain"),
    )
    link(c, d)
    await until(lambda: bool(a.recorder.up and b.recorder.up), "the TLS link")
    await until(lambda: bool(c.recorder.up and d.recorder.up), "the plain link")
    for node in (a, b):
        [view] = node.network.views()
        assert view.transport == "tls"
        assert view.tls is not None
        assert view.tls.version == "TLSv1.3"
        assert view.tls.cipher.startswith("TLS_")
        if not hasattr(ssl.SSLObject, "group"):
            assert view.tls.group is None  # this Python cannot tell
    assert [v.tls for v in a.network.views()] == [v.tls for v in b.network.views()]
    for node in (c, d):
        [view] = node.network.views()
        assert view.transport == "plain"
        assert view.tls is None


# ------------------------------------------------------------ the key on disk


def test_the_tls_key_never_stays_on_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """:class:`~qudag_node.linktls.LinkTls` writes its key only for loading it, in a
    private directory under the temporary directory, and removes it again."""
    made: list[str] = []

    class Seen(tempfile.TemporaryDirectory[str]):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self.name)

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(tempfile, "TemporaryDirectory", Seen)
    link_tls()
    [directory] = made
    assert Path(directory).parent == tmp_path
    assert Path(directory).name.startswith("qudag-tls-")
    assert not Path(directory).exists()
    assert list(tmp_path.rglob("*")) == [], "no file of it left"
    assert not list(Path(tempfile.gettempdir()).glob("qudag-tls-*"))
