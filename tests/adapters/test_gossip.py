"""Peer links over real sockets on loopback: handshake, refusals, framing, slow peers.

Networks run in this process on port 0; a raw client built from the core's handshake
functions plays a peer that misbehaves on purpose. Every test runs over both transports
(inside TLS and plain) unless it names one: what a link refuses or survives must hold
inside TLS as it does in the clear.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import secrets
import socket
import struct
import warnings
from collections.abc import AsyncIterator

import pytest
from prometheus_client import generate_latest
from structlog.testing import capture_logs

from qudag_node.core.crypto import Scheme, Signer
from qudag_node.core.genesis import Genesis, Validator
from qudag_node.core.handshake import (
    LinkRole,
    Side,
    auth_size,
    decode_hello,
    encode_refusal,
    make_auth,
    make_hello,
    refusal_reason,
    transcript,
)
from qudag_node.core.types import PeerId
from qudag_node.gossip import LinkLimits
from tests.adapters.peerlinks import (
    DEADLINE,
    FRAME,
    TOKEN,
    TRANSPORTS,
    Recorder,
    Running,
    Start,
    link,
    networks,
    raw_connect,
    raw_dial,
    read_frame,
    until,
    write_frame,
)
from tests.core.support import C
from tests.relay import Relay

#: The committee's network in the composite scheme: same id and names, other keys.
PQ_SIGNERS = [Signer(bytes([0x60 + i]) * 64) for i in range(4)]
PQ_GENESIS = Genesis(
    C.genesis.network_id,
    tuple(
        Validator(v.name, s.public_key)
        for v, s in zip(C.genesis.validators, PQ_SIGNERS, strict=True)
    ),
    Scheme.MLDSA65_ED25519,
)


class HeldRecorder(Recorder):
    """A recorder that takes no frame until :attr:`gate` opens: a full inbox."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def frame(self, peer: PeerId, data: bytes) -> None:
        await self.gate.wait()
        await super().frame(peer, data)


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    """Each link test runs over TLS and over plain TCP."""
    return str(request.param)


@pytest.fixture
async def start(transport: str) -> AsyncIterator[Start]:
    """Start peer networks on port 0 over ``transport``; all are stopped at teardown."""
    async with networks(transport) as run:
        yield run


# ------------------------------------------------------------------- tests


async def test_two_validators_link_and_exchange_frames(start: Start) -> None:
    a, b = await start(C.signers[0]), await start(C.signers[1])
    link(a, b)
    await until(lambda: bool(a.recorder.up and b.recorder.up), "both ends up")
    assert a.recorder.up == [(PeerId("v1"), C.signers[1].node_id)]
    assert b.recorder.up == [(PeerId("v0"), C.signers[0].node_id)]
    assert a.network.send(PeerId("v1"), b"\x05hello")
    assert b.network.send(PeerId("v0"), b"\x06back")
    assert await asyncio.wait_for(b.recorder.frames.get(), DEADLINE) == ("v0", b"\x05hello")
    assert await asyncio.wait_for(a.recorder.frames.get(), DEADLINE) == ("v1", b"\x06back")
    sent = a.metrics.registry.get_sample_value(
        "qudag_peer_bytes_total", {"direction": "sent", "type": "fetch"}
    )
    assert sent == 4 + 6
    [view] = [v for v in a.network.views() if v.state == "connected"]
    assert (view.name, view.role, view.direction) == ("v1", "validator", "outbound")
    assert view.address == f"127.0.0.1:{b.port}"
    assert not a.network.send(PeerId("v3"), b"\x05nobody")


async def test_a_frame_far_larger_than_the_read_buffer_arrives_whole(start: Start) -> None:
    a, b = await start(C.signers[0]), await start(C.signers[1])
    link(a, b)
    await until(lambda: bool(a.recorder.up), "the link")
    big = b"\x04" + secrets.token_bytes(3 << 20)
    assert a.network.send(PeerId("v1"), big)
    assert await asyncio.wait_for(b.recorder.frames.get(), DEADLINE) == ("v0", big)


async def test_dials_an_ipv6_address(start: Start) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    a, b = await start(C.signers[0]), await start(C.signers[1])
    a.network.set_candidates(frozenset({("::1", b.port)}))
    await until(lambda: bool(b.recorder.up), "a link over ::1")
    assert b.network.views()[0].address.startswith("[::1]:")


async def test_a_wrong_token_is_refused_and_counted_at_both_ends(start: Start) -> None:
    a = await start(C.signers[0], token=bytes(reversed(TOKEN)))
    b = await start(C.signers[1])
    link(a, b)
    await until(lambda: a.failures("bad_token") >= 1 and b.failures("bad_token") >= 1, "refusals")
    assert not a.recorder.up
    assert not b.recorder.up
    [view] = a.network.views()
    assert view.state in {"backoff", "connecting"}
    assert view.last_error == "bad_token"
    assert view.failures >= 1


async def test_during_a_token_rotation_peers_with_either_token_link(start: Start) -> None:
    new = bytes(reversed(TOKEN))
    rotated = await start(C.signers[1], token=new, previous_token=TOKEN)
    old_peer = await start(C.signers[0])  # not rotated yet: dials with the old token
    new_peer = await start(C.signers[2], token=new)
    stranger = await start(C.signers[3], token=TOKEN[:32] + new[32:])
    for dialer in (old_peer, new_peer, stranger):
        link(dialer, rotated)
    await until(lambda: len(rotated.recorder.up) == 2, "both rotation peers linked")
    assert sorted(peer for peer, _ in rotated.recorder.up) == ["v0", "v2"]
    # The listener registers a link before the dialer has read its answer.
    await until(lambda: bool(old_peer.recorder.up and new_peer.recorder.up), "dialers linked")
    assert old_peer.recorder.up == new_peer.recorder.up == [("v1", C.signers[1].node_id)]
    await until(lambda: stranger.failures("bad_token") >= 1, "the stranger refused")
    assert not stranger.recorder.up


@pytest.mark.parametrize(
    ("other", "reason"),
    [
        (Genesis("another-network", C.genesis.validators), "wrong_network"),
        (Genesis(C.genesis.network_id, C.genesis.validators[:3]), "wrong_genesis"),
    ],
)
async def test_another_network_is_refused(start: Start, other: Genesis, reason: str) -> None:
    a = await start(C.signers[0], genesis=other)
    b = await start(C.signers[1])
    link(a, b)
    await until(lambda: a.failures(reason) >= 1 and b.failures(reason) >= 1, reason)
    assert not b.recorder.up


async def test_two_composite_validators_link_and_an_observer_joins(start: Start) -> None:
    a = await start(PQ_SIGNERS[0], genesis=PQ_GENESIS)
    b = await start(PQ_SIGNERS[1], genesis=PQ_GENESIS)
    link(a, b)
    await until(lambda: bool(a.recorder.up and b.recorder.up), "both ends up")
    assert a.recorder.up == [(PeerId("v1"), PQ_SIGNERS[1].node_id)]
    assert b.recorder.up == [(PeerId("v0"), PQ_SIGNERS[0].node_id)]
    assert a.network.send(PeerId("v1"), b"\x05hello")
    assert await asyncio.wait_for(b.recorder.frames.get(), DEADLINE) == ("v0", b"\x05hello")
    # a composite observer's raw handshake: AUTHs of the composite's size both ways
    observer = Signer(b"\x6f" * 64)
    await raw_dial(b, observer, genesis=PQ_GENESIS)
    await until(lambda: len(b.recorder.up) == 2, "the observer's link")
    assert b.recorder.up[1] == (PeerId(f"observer-{observer.node_id.hex()[:12]}"), observer.node_id)
    assert a.failures("wrong_scheme") == b.failures("wrong_scheme") == 0


@pytest.mark.parametrize("dialer", ["composite", "ed25519"])
async def test_a_composite_and_an_ed25519_node_refuse_each_other(start: Start, dialer: str) -> None:
    """Same network id and validator names, other scheme: refused as wrong_scheme (before
    the genesis hash is compared) and counted at both ends, whoever dials."""
    pq = await start(PQ_SIGNERS[0], genesis=PQ_GENESIS)
    ed = await start(C.signers[1])
    first, second = (pq, ed) if dialer == "composite" else (ed, pq)
    link(first, second)
    await until(
        lambda: pq.failures("wrong_scheme") >= 1 and ed.failures("wrong_scheme") >= 1,
        "refused at both ends",
    )
    assert not pq.recorder.up
    assert not ed.recorder.up
    [view] = first.network.views()
    assert view.last_error == "wrong_scheme"
    assert pq.failures("wrong_genesis") == ed.failures("wrong_genesis") == 0


async def test_a_raw_peer_of_the_other_scheme_is_told_wrong_scheme(start: Start) -> None:
    ed = await start(C.signers[1])

    def hello(binding: bytes | None) -> bytes:
        return make_hello(PQ_GENESIS, PQ_SIGNERS[2], secrets.token_bytes(32), binding).encode()

    peer = await raw_dial(ed, PQ_SIGNERS[2], hello=hello, complete=False)
    decode_hello(await asyncio.wait_for(read_frame(peer.reader), DEADLINE))  # ed's own
    assert await peer.refusal() == "wrong_scheme"
    assert ed.failures("wrong_scheme") == 1
    peer.writer.close()


async def test_another_protocol_version_is_refused(start: Start) -> None:
    b = await start(C.signers[1])

    def hello(binding: bytes | None) -> bytes:
        ours = make_hello(C.genesis, C.signers[2], secrets.token_bytes(32), binding).encode()
        return ours[:4] + struct.pack(">H", 5) + ours[6:]  # a version after 1 to 4

    peer = await raw_dial(b, C.signers[2], hello=hello, complete=False)
    decode_hello(await asyncio.wait_for(read_frame(peer.reader), DEADLINE))  # b's own hello
    assert await peer.refusal() == "bad_version"
    assert b.failures("bad_version") == 1


async def test_an_outsider_claiming_to_be_a_validator_is_refused(start: Start) -> None:
    b = await start(C.signers[1])

    def claim(binding: bytes | None) -> bytes:
        ours = make_hello(C.genesis, C.outsider, secrets.token_bytes(32), binding)
        return dataclasses.replace(ours, role=LinkRole.VALIDATOR).encode()

    peer = await raw_dial(b, C.outsider, hello=claim, complete=False)
    await read_frame(peer.reader)
    assert await peer.refusal() == "not_a_validator"
    assert b.failures("not_a_validator") == 1
    # the same key as an observer is welcome
    await raw_dial(b, C.outsider)
    await until(lambda: bool(b.recorder.up), "the observer's link")
    assert b.recorder.up[0][0].startswith("observer-")


async def test_a_replayed_handshake_is_refused(start: Start) -> None:
    b = await start(C.signers[1])
    first = await raw_dial(b, C.signers[2])
    await until(lambda: bool(b.recorder.up), "the genuine link")
    first.writer.close()
    await until(lambda: bool(b.recorder.down), "the genuine link closed")
    assert first.auth is not None
    again = await raw_dial(b, C.signers[2], hello=first.hello, complete=False)
    write_frame(again.writer, first.auth)
    await read_frame(again.reader)
    assert await again.refusal() == "replayed_handshake"
    assert b.failures("replayed_handshake") == 1
    assert len(b.recorder.up) == 1


async def test_an_auth_signed_by_another_key_is_refused_as_bad_signature(start: Start) -> None:
    """The right token, but a signature by another key than the one the HELLO claims:
    the dialer does not hold the key it presents."""
    b = await start(C.signers[1])
    peer = await raw_dial(b, C.signers[2], complete=False)
    theirs = await asyncio.wait_for(read_frame(peer.reader), DEADLINE)
    digest = transcript(peer.hello, theirs, peer.binding)
    write_frame(peer.writer, make_auth(TOKEN, C.signers[3], Side.DIALER, digest))
    assert await peer.refusal() == "bad_signature"
    assert await asyncio.wait_for(peer.reader.read(), DEADLINE) == b""
    assert b.failures("bad_signature") == 1
    assert b.failures("bad_token") == 0
    assert not b.recorder.up
    peer.writer.close()


async def test_a_malformed_frame_closes_only_that_link(start: Start) -> None:
    a, b = await start(C.signers[0]), await start(C.signers[1])
    link(a, b)
    await until(lambda: bool(b.recorder.up), "a's link")
    bad = await raw_dial(b, C.signers[2])
    await until(lambda: len(b.recorder.up) == 2, "the raw peer's link")
    bad.writer.write(FRAME.pack(0xFFFFFFFF))  # longer than any frame may be
    await until(lambda: b.closed("malformed_frame") == 1, "the bad link closed")
    assert b.recorder.down == [PeerId("v2")]
    assert await bad.reader.read() == b""  # closed by b
    assert a.network.send(PeerId("v1"), b"\x05still here")
    assert await asyncio.wait_for(b.recorder.frames.get(), DEADLINE) == ("v0", b"\x05still here")


async def test_a_peer_that_stops_reading_is_dropped_without_slowing_the_others(
    start: Start,
) -> None:
    limits = LinkLimits(max_queue_bytes=256 << 10)
    a, b = await start(C.signers[0]), await start(C.signers[1], limits=limits)
    link(a, b)
    await until(lambda: bool(b.recorder.up), "a's link")
    silent = await raw_dial(b, C.signers[2], rcvbuf=4096)  # never reads again
    await until(lambda: len(b.recorder.up) == 2, "the silent peer's link")
    chunk = b"\x05" + bytes(64 << 10)
    sent = 0
    loop = asyncio.get_running_loop()
    started = loop.time()
    while b.network.send(PeerId("v2"), chunk):
        sent += 1
        assert sent < 10_000, "the silent peer was never dropped"
        await asyncio.sleep(0)  # let the link's writer run
    assert loop.time() - started < DEADLINE
    await until(lambda: b.closed("slow_peer") == 1, "the slow peer dropped")
    assert PeerId("v2") in b.recorder.down
    assert b.network.send(PeerId("v0"), b"\x05after")
    assert await asyncio.wait_for(a.recorder.frames.get(), DEADLINE) == ("v1", b"\x05after")
    silent.writer.close()


async def test_a_peer_that_never_finishes_its_handshake_is_timed_out(start: Start) -> None:
    b = await start(C.signers[1], limits=LinkLimits(handshake_timeout=0.3))
    peer = await raw_connect(b.port, b.tls)  # b answers a finished TLS handshake...
    if not b.tls:
        peer.writer.write(b"\x00")  # ...or a plain frame's first byte with its HELLO
    decode_hello(await asyncio.wait_for(read_frame(peer.reader), DEADLINE))
    assert await peer.refusal() == "handshake_timeout"  # and the peer says nothing more
    assert await asyncio.wait_for(peer.reader.read(), DEADLINE) == b""
    assert b.failures("handshake_timeout") == 1
    peer.writer.close()


async def test_a_flood_of_connections_that_never_shake_hands_is_bounded(start: Start) -> None:
    b = await start(C.signers[1], limits=LinkLimits(max_handshakes=3, handshake_timeout=30))
    silent = [
        await asyncio.open_connection("127.0.0.1", b.port) for _ in range(3)
    ]  # connected, never a byte (b accepts in order: these three first)
    reader, writer = await asyncio.open_connection("127.0.0.1", b.port)
    # refused at once, with no HELLO first; in the clear a frame says why (a TLS dialer
    # could not read it: a TLS node only closes)
    if not b.tls:
        refusal = refusal_reason(await asyncio.wait_for(read_frame(reader), DEADLINE))
        assert refusal == "too_many_handshakes"
    assert await asyncio.wait_for(reader.read(), DEADLINE) == b""
    assert b.failures("too_many_handshakes") == 1
    for _, w in silent:
        w.close()
    writer.close()
    await until(lambda: b.failures("connection_lost") == 3, "the silent ones gone")
    await raw_dial(b, C.signers[2])  # once they are gone, a real peer gets in
    await until(lambda: bool(b.recorder.up), "the real peer's link")


async def test_our_own_address_is_recognised_and_not_redialed(start: Start) -> None:
    a = await start(C.signers[0])
    a.network.set_candidates(frozenset({("127.0.0.1", a.port)}))
    await until(lambda: [v.state for v in a.network.views()] == ["self"], "self recognised")
    assert not a.recorder.up
    assert a.failures("self_connection") == 0


async def test_two_ends_dialing_each_other_keep_one_link(start: Start) -> None:
    a, b = await start(C.signers[0]), await start(C.signers[1])
    link(a, b)
    link(b, a)

    def settled() -> bool:
        states = sorted(v.state for n in (a, b) for v in n.network.views())
        return states == ["connected", "connected", "linked_elsewhere"]

    def linked(n: Running) -> list[str | None]:
        return [v.name for v in n.network.views() if v.state == "connected"]

    await until(lambda: linked(a) == ["v1"] and linked(b) == ["v0"], "up")
    await until(settled, "one link each")
    # both keep the link dialed by the lower key
    lower = min((a, b), key=lambda n: n.signer.node_id)
    higher = b if lower is a else a
    [kept_low] = [v for v in lower.network.views() if v.state == "connected"]
    [kept_high] = [v for v in higher.network.views() if v.state == "connected"]
    assert (kept_low.direction, kept_high.direction) == ("outbound", "inbound")
    assert len(a.recorder.up) == 1  # a duplicate is not news
    assert len(b.recorder.up) == 1


async def test_a_lost_peer_is_redialed_when_it_comes_back(start: Start) -> None:
    a, b = await start(C.signers[0]), await start(C.signers[1])
    port = b.port
    link(a, b)
    await until(lambda: bool(a.recorder.up), "the first link")
    await b.stop()
    await until(lambda: a.recorder.down == [PeerId("v1")], "the link lost")
    again = await start(C.signers[1], port=port)
    await until(lambda: bool(again.recorder.up), "redialed")
    assert a.recorder.up[-1][0] == PeerId("v1")


# ------------------------------------------------------- the token's secrecy


async def test_a_client_without_the_token_receives_no_mac(start: Start) -> None:
    b = await start(C.signers[1])
    # A client that sends its HELLO and waits gets the listener's HELLO and nothing
    # else: the listener answers only a proof of the token.
    peer = await raw_dial(b, C.signers[2], complete=False)
    decode_hello(await asyncio.wait_for(read_frame(peer.reader), DEADLINE))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(read_frame(peer.reader), 0.5)
    # A wrong proof is answered with a REFUSAL and the end of the connection, no AUTH.
    guess = await raw_dial(b, C.signers[2], complete=False)
    theirs = await asyncio.wait_for(read_frame(guess.reader), DEADLINE)
    wrong = make_auth(
        bytes(reversed(TOKEN)),
        C.signers[2],
        Side.DIALER,
        transcript(guess.hello, theirs, guess.binding),
    )
    write_frame(guess.writer, wrong)
    rest = await asyncio.wait_for(guess.reader.read(), DEADLINE)
    (length,) = FRAME.unpack(rest[:4])
    assert refusal_reason(rest[4 : 4 + length]) == "bad_token"
    assert len(rest) == 4 + length, "nothing follows the refusal"
    assert length != auth_size(Scheme.ED25519)
    assert b.failures("bad_token") == 1
    assert not b.recorder.up
    peer.writer.close()


# ------------------------------------------------------- peer text never a label


def made_up(i: int) -> bytes:
    """A refusal reason no node ever sends, lowercase as the real ones are."""
    return b"no_such_reason_" + "".join(chr(0x61 + int(d)) for d in str(i)).encode()


async def refuse_with(node: Running, reason: bytes) -> None:
    """Dial, send a HELLO, read the listener's, then refuse it with ``reason``."""
    peer = await raw_dial(node, C.signers[2], complete=False)
    await asyncio.wait_for(read_frame(peer.reader), DEADLINE)
    write_frame(peer.writer, encode_refusal("bad_token")[:6] + reason)
    await asyncio.wait_for(peer.reader.read(), DEADLINE)
    peer.writer.close()


async def test_made_up_refusal_reasons_are_counted_as_unknown_and_logged_sparingly(
    start: Start,
) -> None:
    b = await start(C.signers[1])
    before = len(generate_latest(b.metrics.registry))
    count = 3000
    with capture_logs() as logs:
        for first in range(0, count, 50):
            await asyncio.gather(*(refuse_with(b, made_up(i)) for i in range(first, first + 50)))
        await until(lambda: b.failures("unknown") == count, "every refusal counted")
    after = len(generate_latest(b.metrics.registry))
    assert abs(after - before) <= 1024, (before, after)
    text = generate_latest(b.metrics.registry).decode()
    assert "no_such_reason" not in text
    failed = [r for r in logs if r["event"] == "handshake_failed"]
    assert {r["reason"] for r in failed} == {"unknown"}
    assert not any("no_such_reason" in str(r) for r in logs)
    # rate-limited: a few lines per 10 s, and a later line says how many were held back
    assert 1 <= len(failed) <= 20, len(failed)
    assert len(failed) + sum(int(r.get("suppressed", 0)) for r in failed) <= count
    print(
        f"\n{count} made-up refusals: /metrics {before} -> {after} bytes, {len(failed)} log lines"
    )


# ------------------------------------------------------------ silent links


async def test_a_silent_link_shows_stale_then_closes_as_idle_timeout(start: Start) -> None:
    limits = LinkLimits(stale_after=0.6, idle_timeout=1.5)
    b = await start(C.signers[1], limits=limits)
    with capture_logs() as logs:
        silent = await raw_dial(b, C.signers[2])  # linked, then never a frame
        await until(lambda: bool(b.recorder.up), "the silent peer's link")
        opened = asyncio.get_running_loop().time()
        [view] = b.network.views()
        assert view.state == "connected"
        await until(lambda: [v.state for v in b.network.views()] == ["stale"], "stale")
        assert b.closed("idle_timeout") == 0, "stale comes before the close"
        silent_for = b.network.views()[0].last_seen_seconds
        assert silent_for is not None
        assert silent_for >= limits.stale_after
        await until(lambda: b.closed("idle_timeout") == 1, "closed as idle")
        waited = asyncio.get_running_loop().time() - opened
    assert waited >= limits.idle_timeout - 0.05
    assert b.recorder.down == [PeerId("v2")]
    assert b.network.views() == []
    assert await asyncio.wait_for(silent.reader.read(), DEADLINE) == b""
    events = [r["event"] for r in logs]
    assert events.index("peer_silent") < events.index("peer_idle_timeout")
    # Every line about the link names its peer and address, bound once to the link.
    about_link = [
        r
        for r in logs
        if r["event"] in {"peer_connected", "peer_silent", "peer_idle_timeout", "peer_disconnected"}
    ]
    assert [r["event"] for r in about_link] == [
        "peer_connected",
        "peer_silent",
        "peer_idle_timeout",
        "peer_disconnected",
    ]
    assert {(r["peer"], r["address"]) for r in about_link} == {(view.name, view.address)}


async def test_frames_keep_a_link_fresh(start: Start) -> None:
    limits = LinkLimits(stale_after=1.0, idle_timeout=2.5)
    b = await start(C.signers[1], limits=limits)
    chatty = await raw_dial(b, C.signers[2])
    await until(lambda: bool(b.recorder.up), "the link")
    loop = asyncio.get_running_loop()
    started = loop.time()
    while loop.time() - started < 3 * limits.idle_timeout:
        write_frame(chatty.writer, b"\x07status")  # as a peer's STATUS every interval
        await asyncio.wait_for(b.recorder.frames.get(), DEADLINE)
        assert [v.state for v in b.network.views()] == ["connected"]
        await asyncio.sleep(0.2)  # the peer's sending interval, not a wait for a condition
    assert b.closed("idle_timeout") == 0
    assert not b.recorder.down


async def test_a_link_waiting_for_room_in_the_inbox_is_not_silent(start: Start) -> None:
    """A full inbox stops the link's reading: the wait is ours, not the peer's silence,
    so the link neither turns stale nor times out meanwhile."""
    limits = LinkLimits(stale_after=1.0, idle_timeout=2.0)
    held = HeldRecorder()
    b = await start(C.signers[1], limits=limits, recorder=held)
    peer = await raw_dial(b, C.signers[2])
    await until(lambda: bool(b.recorder.up), "the link")
    write_frame(peer.writer, b"\x07waits for the inbox")
    loop = asyncio.get_running_loop()
    started = loop.time()
    while loop.time() - started < 3 * limits.idle_timeout:  # the inbox stays full this long
        assert [v.state for v in b.network.views()] == ["connected"]
        await asyncio.sleep(0.05)
    assert b.closed("idle_timeout") == 0
    held.gate.set()
    assert await asyncio.wait_for(held.frames.get(), DEADLINE) == ("v2", b"\x07waits for the inbox")
    # once the peer is really silent, the usual bounds apply
    await until(lambda: b.closed("idle_timeout") == 1, "closed as idle")


async def test_links_bound_unacknowledged_data_with_keepalive_and_user_timeout(
    start: Start,
) -> None:
    limits = LinkLimits(stale_after=7.0, idle_timeout=21.0)
    a, b = await start(C.signers[0], limits=limits), await start(C.signers[1], limits=limits)
    link(a, b)
    await until(lambda: bool(a.recorder.up and b.recorder.up), "the link")
    for n in (a, b):
        [kept] = n.network._links.values()
        sock = kept.writer.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 7
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 21_000


async def test_a_peer_linking_again_replaces_its_stale_link(start: Start) -> None:
    limits = LinkLimits(stale_after=1.5, idle_timeout=30.0)
    b = await start(C.signers[1], limits=limits)
    old = await raw_dial(b, C.signers[2])
    old_port = old.writer.get_extra_info("sockname")[1]
    await until(lambda: bool(b.recorder.up), "the first link")
    # while the old link is live, a second dial of the same end is a duplicate
    second = await raw_dial(b, C.signers[2])
    await until(lambda: b.closed("duplicate") == 1, "the duplicate refused")
    assert await asyncio.wait_for(second.reader.read(), DEADLINE) == b""
    # the old link goes silent (its host vanished); the peer comes back on a new link
    await until(lambda: [v.state for v in b.network.views()] == ["stale"], "stale")
    new = await raw_dial(b, C.signers[2])
    new_port = new.writer.get_extra_info("sockname")[1]
    await until(lambda: b.closed("replaced") == 1, "the stale link replaced")
    assert await asyncio.wait_for(old.reader.read(), DEADLINE) == b""
    [view] = b.network.views()
    assert view.state == "connected"
    assert view.address != f"127.0.0.1:{old_port}"
    assert view.address == f"127.0.0.1:{new_port}"
    # the engine hears that the peer relinked
    assert b.recorder.up == [(PeerId("v2"), C.signers[2].node_id)] * 2
    assert b.recorder.down == [PeerId("v2")]
    write_frame(new.writer, b"\x05on the new link")
    assert await asyncio.wait_for(b.recorder.frames.get(), DEADLINE) == (
        "v2",
        b"\x05on the new link",
    )


# ------------------------------------------------------------------ storms


async def test_a_duplicate_link_fight_backs_off(start: Start) -> None:
    """Two ends holding one key (an old process of a moved peer that still answers, say):
    the listener keeps the older link and closes each newer one as a duplicate. The
    dialer counts each such link as a failure and backs off instead of redialing at
    once; the listener logs and counts every close."""
    quiet = LinkLimits(stale_after=600.0, idle_timeout=1200.0)
    b = await start(C.signers[1], limits=quiet)
    first = await start(C.signers[0], limits=quiet)
    link(first, b)
    await until(lambda: bool(b.recorder.up), "the first link")
    second = await start(C.signers[0], limits=quiet)
    window = 12.0
    with capture_logs() as logs:
        link(second, b)
        await asyncio.sleep(window)  # a measuring window: the handshakes it holds are counted
    handshakes = b.closed("duplicate")
    closes = [r for r in logs if r["event"] == "duplicate_link_closed"]
    print(f"\nduplicate-link fight: {handshakes:.0f} handshakes in {window:.0f} s")
    assert 3 <= handshakes <= 30, handshakes
    assert closes
    assert all(r["reason"] == "duplicate" for r in closes)
    [view] = second.network.views()
    assert view.state in {"backoff", "connecting"}
    assert view.last_error == "closed_early"
    assert view.failures >= handshakes - 1
    assert len(b.recorder.up) == 1, "the kept link never went down"


# ---------------------------------------------------------------- shutdown


async def test_a_cancel_arriving_while_a_link_closes_still_stops_the_network(
    start: Start,
) -> None:
    """Python 3.11's TaskGroup drops a cancellation that arrives while it is aborting;
    the link's task must stop all the same."""
    a, b = await start(C.signers[0]), await start(C.signers[1])
    link(a, b)
    await until(lambda: bool(a.recorder.up), "the link")
    [kept] = a.network._links.values()
    kept.close("test")  # the link's TaskGroup aborts on its next step...
    a.task.cancel()  # ...and the network is cancelled in the same step
    done, _ = await asyncio.wait({a.task}, timeout=DEADLINE)
    assert done == {a.task}, "the network ignored its cancellation"
    assert a.task.cancelled()


async def test_a_peer_back_at_a_new_address_is_linked_once_its_old_link_is_stale(
    start: Start,
) -> None:
    """A peer's host vanishes without a word and the peer returns at a new address (a
    moved Machine): the dialer, refused its new link as a duplicate while the old one
    still looks live, dials again as soon as the old one turns stale, well before the
    idle timeout would close it. (Links here carry no frames: each turns stale by
    itself.)"""
    limits = LinkLimits(stale_after=1.0, idle_timeout=60.0)
    a = await start(C.signers[0], limits=limits)
    old = await start(C.signers[1], limits=limits)
    with Relay() as relay:  # a reaches the old address through a relay it can silence
        relay.target("old", old.port)
        via = relay.listen("a", "old")
        a.network.set_candidates(frozenset({("127.0.0.1", via)}))
        await until(lambda: bool(a.recorder.up), "the first link")
        relay.stall("old")  # its host is gone: the open link falls silent, dials hang
        moved = await start(C.signers[1], limits=limits)  # the same key at a new address
        loop = asyncio.get_running_loop()
        began = loop.time()
        a.network.set_candidates(frozenset({("127.0.0.1", via), ("127.0.0.1", moved.port)}))

        def linked_to_moved() -> bool:
            views = [v for v in a.network.views() if v.state in {"connected", "stale"}]
            return [(v.address, v.state) for v in views] == [
                (f"127.0.0.1:{moved.port}", "connected")
            ]

        await until(linked_to_moved, "the link to the new address")
        took = loop.time() - began
        assert took < limits.idle_timeout / 2, took
        # the stale link leaves the views at once; its close is counted when its task ends
        await until(lambda: a.closed("replaced") >= 1, "the stale link closed as replaced")
        assert a.recorder.up[-1] == (PeerId("v1"), C.signers[1].node_id)
        assert bool(moved.recorder.up)
        print(f"\nrelinked at the new address {took:.2f} s after it appeared (stale after 1 s)")


async def test_a_peer_refusing_our_new_link_while_ours_is_stale_is_not_stormed(
    start: Start,
) -> None:
    """Silence in one direction only: a hears nothing from b (its link is stale), while b
    hears a and refuses a's new links, dialed at b's second address, as duplicates of a
    live one. a backs off instead of dialing again at once."""
    a = await start(C.signers[0], limits=LinkLimits(stale_after=0.3, idle_timeout=600.0))
    b = await start(C.signers[1], limits=LinkLimits(stale_after=600.0, idle_timeout=1200.0))
    link(a, b)
    await until(lambda: bool(b.recorder.up), "the link")
    # b is reachable at a second loopback address as well
    a.network.set_candidates(frozenset({("127.0.0.1", b.port), ("127.0.0.2", b.port)}))
    loop = asyncio.get_running_loop()
    started = loop.time()
    window = 6.0
    while loop.time() - started < window:  # a talks, b never answers
        a.network.send(PeerId("v1"), b"\x07status")
        await asyncio.sleep(0.1)  # a's sending interval, not a wait for a condition
    refused = b.closed("duplicate")
    print(f"\none-way silence: {refused:.0f} new links refused in {window:.0f} s")
    assert 1 <= refused <= 12, refused
    assert len(b.recorder.up) <= refused + 1, "each relink cost a refusal and a backoff"


async def test_text_from_a_peer_is_cut_short_in_the_log(start: Start) -> None:
    b = await start(C.signers[1])
    long_name = "x" * 250  # a network id of a peer's choosing, near the 255-byte limit

    def hello(binding: bytes | None) -> bytes:
        ours = make_hello(C.genesis, C.signers[2], secrets.token_bytes(32), binding)
        return dataclasses.replace(ours, network_id=long_name).encode()

    with capture_logs() as logs:
        peer = await raw_dial(b, C.signers[2], hello=hello, complete=False)
        await read_frame(peer.reader)  # b's HELLO
        assert await peer.refusal() == "wrong_network"
        await until(lambda: b.failures("wrong_network") == 1, "the refusal counted")
    [line] = [r for r in logs if r["event"] == "handshake_failed"]
    assert len(line["detail"]) <= 120
    assert long_name not in str(line)
    assert line["reason"] == "wrong_network"
    peer.writer.close()


async def test_refused_connections_are_logged_sparingly_with_the_count_held_back(
    start: Start,
) -> None:
    # a period the 20 refusals fit in with room, TLS handshakes on a loaded machine too
    period = 3.0
    b = await start(C.signers[1], limits=LinkLimits(refusal_log_period=period))
    with capture_logs() as logs:
        for _ in range(20):
            await refuse_with(b, b"bad_token")
        await until(lambda: b.failures("bad_token") == 20, "every refusal counted")
        lines = [r for r in logs if r["event"] == "handshake_failed"]
        assert len(lines) == 5
        assert not any("suppressed" in r for r in lines)
        await asyncio.sleep(period)  # the throttle's period passes
        await refuse_with(b, b"bad_token")
        await until(lambda: b.failures("bad_token") == 21, "the next refusal counted")
    [*_, last] = [r for r in logs if r["event"] == "handshake_failed"]
    assert last["suppressed"] == 15
    assert last["by"] == "peer"


async def test_a_stale_link_is_replaced_by_a_fresh_dial_when_the_peer_answers(
    start: Start,
) -> None:
    """The dialer does not wait for TCP's retransmissions on a stale link (after a
    partition shorter than the idle timeout, say): it dials again beside it, and the
    fresh link replaces the stale one at both ends. (No frames flow here, so the first
    link turns stale by itself.)"""
    limits = LinkLimits(stale_after=0.5, idle_timeout=60.0)
    a, b = await start(C.signers[0], limits=limits), await start(C.signers[1], limits=limits)
    link(a, b)
    await until(lambda: bool(a.recorder.up and b.recorder.up), "the first link")
    [first] = a.network._links.values()
    await until(lambda: a.closed("replaced") >= 1 and b.closed("replaced") >= 1, "replaced")
    [fresh] = a.network._links.values()
    assert fresh is not first
    assert first.close_reason == "replaced"
    assert a.closed("idle_timeout") == b.closed("idle_timeout") == 0
    # each end told its engine that the peer relinked
    assert a.recorder.down.count(PeerId("v1")) >= 1
    assert len(a.recorder.up) == len(a.recorder.down) + 1


async def test_connections_mid_handshake_are_closed_when_the_network_stops(start: Start) -> None:
    """A stop cancels the handshakes under way: their sockets are closed then, not left
    to the garbage collector (which would warn of each)."""
    b = await start(C.signers[1], limits=LinkLimits(handshake_timeout=30))
    silent = [await asyncio.open_connection("127.0.0.1", b.port) for _ in range(2)]
    await until(lambda: b.network._handshaking == 2, "two handshakes under way")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        await b.stop()
        gc.collect()
    assert [str(w.message) for w in caught if w.category is ResourceWarning] == []
    for reader, writer in silent:  # and each dialer sees its connection end
        assert await asyncio.wait_for(reader.read(), DEADLINE) == b""
        writer.close()
