"""Peer links: the authenticated, framed, bounded connections between nodes.

One :class:`PeerNetwork` listens on the peer port (IPv4 and IPv6) and dials the
candidate addresses discovery hands it. A link runs inside TLS 1.3
(:mod:`qudag_node.linktls`) or, on a network that chose ``plain``, over bare TCP; both
ends must have made the same choice. The listener peeks at a connection's first byte
to tell a TLS ClientHello (0x16) from a plain frame (0x00), so a peer of the other
kind is refused as ``wrong_transport`` (a plain dialer reads that in a REFUSAL frame;
a TLS dialer sees a plain answer where TLS was due) instead of failing obscurely.
Every connection then runs the handshake of :mod:`qudag_node.core.handshake` (inside
TLS, bound to the session); after it, both ends exchange frames::

    frame = length:u32  payload       (1 <= length <= max_frame)

A payload is one peer message (its first byte is the type). A frame of another
length closes that link, and only that link, as does a TLS record that fails its
check (``tls_error``: bytes injected into the stream). During the handshake, an end
that refuses the other sends a REFUSAL frame with a reason code and closes. The whole
handshake, TLS included, must finish within ``handshake_timeout``.

Sending never blocks the caller: each link has a queue bounded in bytes, written by
the link's own task. A peer that stops reading lets its queue grow; past the bound
the link is dropped, so a slow peer never slows the others.

At most one link per peer key is used. When two ends dial each other at once, both
keep the link dialed by the lower key; two links dialed by the same end keep the
older one, unless the older one is *stale*: a live link wins over a stale one.

Peers send a STATUS every sync interval, so silence means trouble: a link that has
carried no frame for ``stale_after`` seconds shows as ``stale`` (and a warning is
logged); after ``idle_timeout`` seconds it is closed as ``idle_timeout``. TCP
keepalive and ``TCP_USER_TIMEOUT`` bound how long the kernel lets unacknowledged data
hang on a peer that vanished without a FIN or RST.

A link that closes within ``settle_time`` of its handshake (refused as a duplicate by
either end, say) counts as a failure of the address it was dialed at, so redials
back off instead of storming.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import random
import secrets
import socket
import ssl
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from structlog.typing import FilteringBoundLogger

from qudag_node.core.backoff import backoff_delay
from qudag_node.core.crypto import Signer
from qudag_node.core.errors import InputRejected, Reason, UsageError
from qudag_node.core.genesis import Genesis
from qudag_node.core.handshake import (
    LinkRole,
    ReplayGuard,
    Side,
    answer_auth,
    check_auth,
    check_hello,
    decode_hello,
    encode_refusal,
    make_auth,
    make_hello,
    refusal_reason,
    transcript,
)
from qudag_node.core.types import NodeId, PeerId
from qudag_node.core.wire import message_kind
from qudag_node.linktls import (
    TLS_HANDSHAKE_RECORD,
    LinkTls,
    accepted_streams,
    first_byte,
    peer_binding,
    session_of,
    speaks_plain,
)
from qudag_node.logs import Throttle, get_logger
from qudag_node.metrics import Metrics
from qudag_node.ports import PeerTls, PeerView
from qudag_node.sockets import dual_stack_socket, set_link_timeouts

log = get_logger("qudag.gossip")

_LENGTH = struct.Struct(">I")
#: Bytes a link reads ahead of the frame being read (asyncio's flow-control limit).
_READ_BUFFER = 256 << 10
#: Address of a peer: (IP text without brackets, port).
Address = tuple[str, int]
#: Failures that say the address cannot be reached (now): retried on the short cap.
_UNREACHABLE = frozenset({"timeout", "refused", "connection_lost", "handshake_timeout"})
#: A connection's streams, once its transport (and TLS, if any) is up, and whether the
#: other end speaks TLS (it may where we do not: refused as ``wrong_transport``).
_Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]
#: Why an established link closed (the values of ``qudag_peer_links_closed_total``).
CLOSE_REASONS = frozenset(
    {
        "closed",
        "connection_lost",
        "duplicate",
        "replaced",
        "idle_timeout",
        "malformed_frame",
        "slow_peer",
        "tls_error",
        "shutdown",
    }
)
#: Longest piece of text from a peer that a log line carries.
_DETAIL_CHARS = 120


@dataclass(frozen=True, slots=True)
class LinkLimits:
    """Sizes and times of the peer links (times in seconds)."""

    max_frame: int = 8 << 20
    max_queue_bytes: int = 16 << 20
    handshake_timeout: float = 5.0
    #: Most inbound connections in their handshake at once; more are closed at once.
    max_handshakes: int = 64
    #: A link whose queued frames have not moved for this long is dropped.
    send_timeout: float = 30.0
    #: A link that has carried no frame for this long is ``stale`` (and a warning is
    #: logged); any new link of its peer wins over it.
    stale_after: float = 45.0
    #: A link that has carried no frame for this long is closed (``idle_timeout``).
    idle_timeout: float = 90.0
    #: A link that closes sooner than this after its handshake counts as a failure.
    settle_time: float = 10.0
    backoff_base: float = 0.25
    #: Longest envelope between redials after a refusal or a link that did not hold.
    backoff_cap: float = 30.0
    #: Longest envelope between redials of an address that cannot be reached.
    reconnect_cap: float = 4.0
    #: Refused connections logged per reason and direction in this many seconds: 5.
    refusal_log_period: float = 10.0

    @classmethod
    def for_interval(cls, interval: float) -> LinkLimits:
        """Limits for peers that send a STATUS every ``interval`` seconds: ``stale`` after
        1.5 intervals of silence (at least the interval + 1 s), closed after 3 (at least
        the interval + 2 s)."""
        stale = max(1.5 * interval, interval + 1.0)
        idle = max(3.0 * interval, interval + 2.0)
        return cls(stale_after=stale, idle_timeout=idle)


class LinkState(enum.Enum):
    """What the network is doing about one candidate address."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    STALE = "stale"  # linked, but silent for longer than stale_after
    BACKOFF = "backoff"
    SELF = "self"  # the address is this node
    LINKED_ELSEWHERE = "linked_elsewhere"  # the key behind it is linked by another address


class LinkHandler:
    """What the network tells its owner. Override the methods you need."""

    def link_up(self, peer: PeerId, public_key: NodeId) -> None:
        """A first link to ``peer`` is up."""

    def link_down(self, peer: PeerId) -> None:
        """The last link to ``peer`` is gone."""

    async def frame(self, peer: PeerId, data: bytes) -> None:
        """A message from ``peer``; awaiting here slows only that link's reading."""


class PeerRefused(Exception):
    """The handshake failed: ``reason`` says whose fault and why."""

    def __init__(self, reason: str, message: str, remote: bool = False) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.remote = remote  # the other end refused us


def peer_name(genesis: Genesis, key: NodeId) -> PeerId:
    """The name a peer goes by: its validator name, else ``observer-<key prefix>``."""
    index = genesis.index_of(key)
    if index is not None:
        return PeerId(genesis.validators[index].name)
    return PeerId(f"observer-{key.hex()[:12]}")


def format_address(address: Address) -> str:
    """``host:port``, with brackets around an IPv6 host."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(eq=False)
class _Link:
    peer: PeerId
    key: NodeId
    role: LinkRole
    address: str
    side: Side
    writer: asyncio.StreamWriter
    limits: LinkLimits
    tls: PeerTls | None
    queue: deque[bytes] = field(default_factory=deque)
    queued_bytes: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    gone: asyncio.Event = field(default_factory=asyncio.Event)  # unregistered, tasks ended
    close_reason: str | None = None
    last_seen: float = field(default_factory=time.monotonic)
    opened: float = field(default_factory=time.monotonic)
    delivering: bool = False  # a frame read is waiting for the handler
    log: FilteringBoundLogger = field(init=False)  # lines about this link name its peer

    def __post_init__(self) -> None:
        self.log = log.bind(peer=self.peer, address=self.address)

    def silent(self, now: float) -> float:
        """Seconds since the last frame (or the handshake); 0 while a frame of it waits
        for room in the inbox (that wait is ours, not the peer's silence)."""
        return 0.0 if self.delivering else now - self.last_seen

    def close(self, reason: str) -> None:
        if self.close_reason is None:
            self.close_reason = reason
            self.closed.set()
            self.wake.set()


@dataclass
class _Candidate:
    address: Address
    state: LinkState = LinkState.CONNECTING
    key: NodeId | None = None
    failures: int = 0
    last_error: str | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class PeerNetwork:
    """The node's peer links. :meth:`start`, then :meth:`run` inside a TaskGroup."""

    def __init__(
        self,
        genesis: Genesis,
        signer: Signer,
        token: bytes,
        handler: LinkHandler,
        metrics: Metrics,
        limits: LinkLimits | None = None,
        rng: random.Random | None = None,
        previous_token: bytes | None = None,
        tls: LinkTls | None = None,
    ) -> None:
        self._genesis = genesis
        self._tls = tls  # None: plain links
        self._signer = signer
        self._token = token  # what we prove when we dial
        #: what a dialer may prove: the token, and during a rotation the previous one
        self._accepted_tokens = (token,) if previous_token is None else (token, previous_token)
        self._handler = handler
        self._metrics = metrics
        self.limits = limits or LinkLimits()
        self._random = rng or random.Random()
        self._replays = ReplayGuard()
        self._links: dict[NodeId, _Link] = {}
        self._by_peer: dict[PeerId, _Link] = {}
        self._candidates: dict[Address, _Candidate] = {}
        self._listener: socket.socket | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._candidates_changed = asyncio.Event()
        self._handshaking = 0  # inbound connections in their handshake
        # refused connections: a few lines per reason and period, then a count
        self._throttle = Throttle(period=self.limits.refusal_log_period, burst=5)
        self.port: int | None = None

    # ------------------------------------------------------------ life cycle

    async def start(self, port: int) -> int:
        """Bind ``port`` (0 = any) on every IPv4 and IPv6 address and return it; connections
        are taken from the backlog once :meth:`run` runs."""
        self._listener = dual_stack_socket(port)
        self.port = int(self._listener.getsockname()[1])
        return self.port

    @property
    def transport(self) -> str:
        """``tls`` or ``plain``: what this node's links run over."""
        return "plain" if self._tls is None else "tls"

    async def run(self) -> None:
        """Serve and dial until cancelled; every connection lives in this TaskGroup."""
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                if self._listener is not None:
                    tg.create_task(self._accept_loop(self._listener))
                tg.create_task(self._dial_manager())
                await asyncio.Future()  # until cancelled
        finally:
            self._tg = None
            if self._listener is not None:
                self._listener.close()
            for link in list(self._links.values()):
                link.close("shutdown")

    def set_candidates(self, addresses: frozenset[Address]) -> None:
        """The addresses to dial (from discovery); others stop being redialed."""
        for address in addresses - self._candidates.keys():
            self._candidates[address] = _Candidate(address)
        for address in self._candidates.keys() - addresses:
            candidate = self._candidates.pop(address)
            candidate.changed.set()
        self._candidates_changed.set()

    # ------------------------------------------------------------- sending

    def send(self, peer: PeerId, data: bytes) -> bool:
        """Queue ``data`` for ``peer``; False if no link is up. Never blocks."""
        link = self._by_peer.get(peer)
        if link is None or link.close_reason is not None:
            return False
        size = len(data) + _LENGTH.size
        if link.queued_bytes + size > self.limits.max_queue_bytes:
            link.log.warning(
                "peer_too_slow",
                queued_bytes=link.queued_bytes,
                limit=self.limits.max_queue_bytes,
            )
            link.close("slow_peer")
            return False
        link.queue.append(data)
        link.queued_bytes += size
        link.wake.set()
        self._metrics.on_peer_message("sent", message_kind(data), size)
        return True

    def linked(self) -> list[tuple[PeerId, NodeId]]:
        """Each linked peer and the key it proved."""
        return [(peer, link.key) for peer, link in self._by_peer.items()]

    def last_seen(self) -> dict[PeerId, float]:
        """Seconds since each linked peer last sent a frame."""
        now = time.monotonic()
        return {p: now - link.last_seen for p, link in self._by_peer.items()}

    def live_validators(self) -> int:
        """Validators linked now by a link that is not stale."""
        now = time.monotonic()
        return sum(
            1
            for link in self._links.values()
            if link.role is LinkRole.VALIDATOR and self._state(link, now) is LinkState.CONNECTED
        )

    def views(self) -> list[PeerView]:
        """Every linked peer and every candidate address not linked."""
        now = time.monotonic()
        out = [
            PeerView(
                link.peer,
                link.key.hex(),
                link.address,
                link.role.name.lower(),
                (self._state(link, now)).value,
                "outbound" if link.side is Side.DIALER else "inbound",
                round(link.silent(now), 3),
                0,
                None,
                transport="plain" if link.tls is None else "tls",
                tls=link.tls,
            )
            for link in sorted(self._by_peer.values(), key=lambda lk: lk.peer)
        ]
        for c in sorted(self._candidates.values(), key=lambda c: c.address):
            if c.state is LinkState.CONNECTED:
                continue
            name = peer_name(self._genesis, c.key) if c.key is not None else None
            out.append(
                PeerView(
                    name,
                    c.key.hex() if c.key is not None else None,
                    format_address(c.address),
                    None,
                    c.state.value,
                    None,
                    None,
                    c.failures,
                    c.last_error,
                )
            )
        return out

    def _state(self, link: _Link, now: float) -> LinkState:
        stale = link.silent(now) >= self.limits.stale_after
        return LinkState.STALE if stale else LinkState.CONNECTED

    # ------------------------------------------------------------- dialing

    async def _dial_manager(self) -> None:
        dialing: set[Address] = set()
        assert self._tg is not None
        while True:
            for address in list(self._candidates):
                if address not in dialing:
                    dialing.add(address)
                    self._tg.create_task(self._dial_loop(address, dialing))
            self._candidates_changed.clear()
            await self._candidates_changed.wait()

    async def _dial_loop(self, address: Address, dialing: set[Address]) -> None:
        try:
            while (candidate := self._candidates.get(address)) is not None:
                if candidate.state is LinkState.SELF:
                    await candidate.changed.wait()
                    continue
                linked = self._links.get(candidate.key) if candidate.key is not None else None
                if linked is not None and self._state(linked, time.monotonic()) is not (
                    LinkState.STALE
                ):
                    candidate.state = (
                        LinkState.LINKED_ELSEWHERE
                        if linked.address != format_address(address)
                        else LinkState.CONNECTED
                    )
                    await self._until_gone_or_stale(linked)
                    continue
                if await self._dial_once(candidate):
                    log.info("own_address_skipped", address=format_address(address))
                elif candidate.failures and address in self._candidates:
                    other = self._links.get(candidate.key) if candidate.key else None
                    if other is not None and self._state(other, time.monotonic()) is not (
                        LinkState.STALE
                    ):
                        continue  # refused as a duplicate of a live link: wait for that one
                    candidate.state = LinkState.BACKOFF
                    unreachable = candidate.last_error in _UNREACHABLE
                    delay = backoff_delay(
                        candidate.failures,
                        self.limits.backoff_base,
                        self.limits.reconnect_cap if unreachable else self.limits.backoff_cap,
                        self._random.random(),
                    )
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await candidate.changed.wait()  # removed from the candidates
        finally:
            dialing.discard(address)

    async def _until_gone_or_stale(self, link: _Link) -> None:
        """Return once ``link`` is gone, or has been silent for ``stale_after``."""
        left = self.limits.stale_after - link.silent(time.monotonic())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(left, 0.0) + 0.01):
                await link.gone.wait()

    async def _dial_once(self, candidate: _Candidate) -> bool:
        """Connect, shake hands, and follow the link (served by a task of its own) until
        it closes or turns stale; True if the address turned out to be our own. A stale
        link stays open meanwhile: the loop dials again, and a new link, if the peer
        answers, replaces it, instead of waiting for TCP's retransmissions."""
        candidate.state = LinkState.CONNECTING
        host, port = candidate.address
        try:
            async with asyncio.timeout(self.limits.handshake_timeout):
                reader, writer = await asyncio.open_connection(host, port, limit=_READ_BUFFER)
        except (OSError, TimeoutError) as e:
            candidate.failures += 1
            candidate.last_error = "timeout" if isinstance(e, TimeoutError) else "refused"
            return False

        async def secured() -> _Streams:
            if self._tls is not None:
                started = time.perf_counter()
                await writer.start_tls(self._tls.client)
                self._metrics.on_tls_handshake(time.perf_counter() - started)
            return reader, writer, self._tls is not None

        try:
            link, _ = await self._handshake(secured(), writer.close, Side.DIALER, candidate.address)
        except PeerRefused as e:
            if e.reason == Reason.SELF_CONNECTION.value:
                candidate.state = LinkState.SELF
                return True
            candidate.failures += 1
            candidate.last_error = e.reason
            return False
        candidate.key = link.key
        candidate.state = LinkState.CONNECTED
        assert self._tg is not None
        self._tg.create_task(self._serve(link, reader))
        while not link.gone.is_set() and self._state(link, time.monotonic()) is not (
            LinkState.STALE
        ):
            await self._until_gone_or_stale(link)
        held = time.monotonic() - link.opened >= self.limits.settle_time
        if not link.gone.is_set():  # stale: dial again beside it, at once if it had held
            if held:
                candidate.failures = 0
            return False
        if held:
            candidate.failures = 0  # the link held: the address works
            candidate.last_error = link.close_reason
        else:  # dropped soon after the handshake (a duplicate, say): no quick redial
            candidate.failures += 1
            reason = link.close_reason or "closed"
            candidate.last_error = "closed_early" if reason == "connection_lost" else reason
        return False

    # ------------------------------------------------------------- accepting

    async def _accept_loop(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        assert self._tg is not None
        while True:
            sock, peer = await loop.sock_accept(listener)
            address: Address = (str(peer[0]).removeprefix("::ffff:"), int(peer[1]))
            if self._handshaking >= self.limits.max_handshakes:
                # a flood of connections: no task, no buffer for it; a plain frame says
                # why to a plain dialer (a TLS dialer could not read it: it sees the close)
                if self._tls is None:
                    _refuse_raw(sock, "too_many_handshakes")
                sock.close()
                self._metrics.on_handshake_failure("too_many_handshakes")
                self._log_refusal(
                    log.warning, "too_many_handshakes", address=format_address(address)
                )
                continue
            self._handshaking += 1
            self._tg.create_task(self._serve_inbound(sock, address))

    async def _serve_inbound(self, sock: socket.socket, address: Address) -> None:
        try:
            link, reader = await self._handshake(
                self._inbound_streams(sock), sock.close, Side.LISTENER, address
            )
        except PeerRefused:
            return
        finally:
            self._handshaking -= 1
        await self._serve(link, reader)

    async def _inbound_streams(self, sock: socket.socket) -> _Streams:
        """The streams of an accepted connection: inside TLS if the dialer opens with a
        TLS record and we speak TLS, else plain; and whether the dialer speaks TLS (the
        handshake refuses a dialer of the other transport as ``wrong_transport``)."""
        first = await first_byte(sock)
        if first is None:
            raise asyncio.IncompleteReadError(b"", 1)
        tls = first == TLS_HANDSHAKE_RECORD
        if not tls or self._tls is None:
            return *await accepted_streams(sock, None, _READ_BUFFER), tls
        started = time.perf_counter()
        streams = await accepted_streams(sock, self._tls.server, _READ_BUFFER)
        self._metrics.on_tls_handshake(time.perf_counter() - started)
        return *streams, tls

    # ----------------------------------------------------------- handshake

    async def _handshake(
        self,
        opening: Awaitable[_Streams],
        abort: Callable[[], None],
        side: Side,
        address: Address,
    ) -> tuple[_Link, asyncio.StreamReader]:
        """Open the connection's streams (TLS included) and run the handshake, all
        within the handshake timeout; on failure count it, log it, close (``abort``
        if the streams never opened), raise PeerRefused."""
        where = format_address(address)
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(self.limits.handshake_timeout):
                reader, writer, peer_tls = await opening
                link = await self._handshake_steps(reader, writer, side, where, peer_tls)
                return link, reader
        except PeerRefused as e:
            failure = e
        except TimeoutError:
            failure = PeerRefused("handshake_timeout", "no handshake within the timeout")
        except ssl.SSLError as e:
            failure = (
                PeerRefused(Reason.WRONG_TRANSPORT.value, "the peer answered without TLS")
                if speaks_plain(e)
                else PeerRefused("tls_failed", f"TLS handshake failed: {e.reason or e}")
            )
        except (OSError, asyncio.IncompleteReadError):
            failure = PeerRefused("connection_lost", "closed during the handshake")
        except asyncio.CancelledError:  # the network stops: close it now, not at collection
            if writer is None:
                abort()
            else:
                writer.close()
            raise
        if writer is None:
            abort()
        self._refused(writer, failure, where, side)
        raise failure

    async def _handshake_steps(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        side: Side,
        where: str,
        peer_tls: bool,
    ) -> _Link:
        binding = self._binding(writer, side, peer_tls)
        ours = make_hello(self._genesis, self._signer, secrets.token_bytes(32), binding)
        our_bytes = ours.encode()
        _write_frame(writer, our_bytes)
        their_bytes = await self._read_handshake_frame(reader)
        try:
            theirs = decode_hello(their_bytes)
            check_hello(theirs, self._genesis, self._signer.node_id, binding)
            if side is Side.LISTENER:
                self._replays.check(theirs.nonce)
        except InputRejected as e:
            raise PeerRefused(e.reason.value, e.message) from None
        try:
            if side is Side.DIALER:  # the dialer proves the token first
                digest = transcript(our_bytes, their_bytes, binding)
                _write_frame(writer, make_auth(self._token, self._signer, side, digest))
                auth = await self._read_handshake_frame(reader)
                check_auth(auth, self._token, theirs, Side.LISTENER, digest)
            else:  # and the listener answers only a proof that holds
                digest = transcript(their_bytes, our_bytes, binding)
                auth = await self._read_handshake_frame(reader)
                ours_auth = answer_auth(auth, self._accepted_tokens, self._signer, theirs, digest)
                _write_frame(writer, ours_auth)
        except InputRejected as e:
            raise PeerRefused(e.reason.value, e.message) from None
        peer = peer_name(self._genesis, theirs.node_id)
        return _Link(
            peer, theirs.node_id, theirs.role, where, side, writer, self.limits, session_of(writer)
        )

    def _binding(self, writer: asyncio.StreamWriter, side: Side, peer_tls: bool) -> bytes | None:
        """The TLS channel binding of this connection (None on a plain one); refuses a
        peer whose transport is not ours before any HELLO is sent."""
        if peer_tls != (self._tls is not None):
            theirs, ours = ("tls", "plain") if peer_tls else ("plain", "tls")
            raise PeerRefused(
                Reason.WRONG_TRANSPORT.value, f"the peer links over {theirs}, this node over {ours}"
            )
        if self._tls is None:
            return None
        return self._tls.binding if side is Side.LISTENER else peer_binding(writer)

    async def _read_handshake_frame(self, reader: asyncio.StreamReader) -> bytes:
        data = await _read_frame(reader, 4096)
        if data is None:
            raise PeerRefused("malformed_frame", "handshake frame of a bad length")
        reason = refusal_reason(data)
        if reason is not None:
            raise PeerRefused(reason, "the peer refused the link", remote=True)
        return data

    def _refused(
        self, writer: asyncio.StreamWriter | None, e: PeerRefused, where: str, side: Side
    ) -> None:
        if writer is not None:
            if not e.remote:
                with contextlib.suppress(OSError, RuntimeError, UsageError):
                    _write_frame(writer, encode_refusal(e.reason))
            writer.close()
        if e.reason == Reason.SELF_CONNECTION.value:
            log.debug("self_address", address=where)
            return
        self._metrics.on_handshake_failure(e.reason)
        quiet = e.reason in {"connection_lost", "handshake_timeout"}  # often a restart
        self._log_refusal(
            log.info if quiet else log.warning,
            "handshake_failed",
            address=where,
            direction="outbound" if side is Side.DIALER else "inbound",
            reason=e.reason,
            by="peer" if e.remote else "us",
            detail=_short(str(e)),
        )

    def _log_refusal(self, method: Callable[..., Any], event: str, **fields: Any) -> None:
        """Log a refused connection, at most a few lines per reason and period; a line
        after some were held back says how many (``suppressed``)."""
        key = f"{event}:{fields.get('reason', event)}:{fields.get('direction', '')}"
        suppressed = self._throttle.allow(key)
        if suppressed is None:
            return
        if suppressed:
            fields["suppressed"] = suppressed
        method(event, **fields)

    # --------------------------------------------------------------- links

    async def _serve(self, link: _Link, reader: asyncio.StreamReader) -> None:
        """Run a link until it closes: register it, read, write and watch it, unregister it."""
        if not self._register(link):
            link.writer.close()
            link.gone.set()
            return
        sock = link.writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                set_link_timeouts(sock, self.limits.stale_after, self.limits.idle_timeout)
        try:
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._write_loop(link))
                    tg.create_task(self._read_loop(link, reader))
                    tg.create_task(self._watch_loop(link))
                    await link.closed.wait()
                    raise _LinkClosed
            except* _LinkClosed:
                pass
        except asyncio.CancelledError:
            link.close("shutdown")  # the network stops
            raise
        finally:
            link.close("closed")
            link.writer.close()
            self._unregister(link)
            link.gone.set()
        _cancel_if_cancelling()

    def _register(self, link: _Link) -> bool:
        old = self._links.get(link.key)
        direction = "outbound" if link.side is Side.DIALER else "inbound"
        if old is not None:
            now = time.monotonic()
            stale = self._state(old, now) is LinkState.STALE
            if not stale and not _prefer(link, old, self._signer.node_id):
                link.close("duplicate")
                self._closed(link, "duplicate_link_closed", kept=old.address)
                return False
            self._links[link.key] = self._by_peer[link.peer] = link
            old.close("replaced" if stale else "duplicate")
            if not stale:  # one link of a live peer for another: not news
                return True
            link.log.warning(  # the stale link's peer is back: tell the engine it relinked
                "peer_relinked",
                direction=direction,
                stale_address=old.address,
                silent_seconds=round(old.silent(now), 1),
            )
            self._handler.link_down(link.peer)
            self._handler.link_up(link.peer, link.key)
            return True
        self._links[link.key] = self._by_peer[link.peer] = link
        link.log.info(
            "peer_connected",
            direction=direction,
            role=link.role.name.lower(),
        )
        self._handler.link_up(link.peer, link.key)
        return True

    def _unregister(self, link: _Link) -> None:
        if self._links.get(link.key) is not link:
            # replaced by a preferred duplicate: the peer is still linked
            self._closed(link, "link_replaced")
            return
        del self._links[link.key]
        del self._by_peer[link.peer]
        reason = _close_reason(link)
        self._metrics.on_link_closed(reason)
        link.log.info(
            "peer_disconnected",
            reason=reason,
            seconds=round(time.monotonic() - link.opened, 3),
        )
        self._handler.link_down(link.peer)

    def _closed(self, link: _Link, event: str, **fields: Any) -> None:
        """Count and log a link closed while its peer stays linked by another."""
        reason = _close_reason(link)
        self._metrics.on_link_closed(reason)
        self._log_refusal(
            link.log.info,
            event,
            direction="outbound" if link.side is Side.DIALER else "inbound",
            reason=reason,
            **fields,
        )

    async def _read_loop(self, link: _Link, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
                link.last_seen = time.monotonic()  # a large frame is on its way
                if not 1 <= length <= self.limits.max_frame:
                    link.log.warning("malformed_frame", limit=self.limits.max_frame)
                    link.close("malformed_frame")
                    return
                data = await reader.readexactly(length)
                link.last_seen = time.monotonic()
                self._metrics.on_peer_message("received", message_kind(data), len(data) + 4)
                link.delivering = True  # a full inbox holds us, not the peer: not silence
                try:
                    await self._handler.frame(link.peer, data)
                finally:
                    link.delivering = False
                    link.last_seen = time.monotonic()
        except ssl.SSLError as e:
            link.log.warning("tls_record_failed", detail=_short(str(e.reason or e)))
            link.close("tls_error")
        except (asyncio.IncompleteReadError, OSError):
            link.close("connection_lost")

    async def _write_loop(self, link: _Link) -> None:
        writer = link.writer
        try:
            while link.close_reason is None:
                if not link.queue:
                    link.wake.clear()
                    await link.wake.wait()
                    continue
                while link.queue:
                    data = link.queue.popleft()
                    link.queued_bytes -= len(data) + _LENGTH.size
                    _write_frame(writer, data)
                try:
                    async with asyncio.timeout(self.limits.send_timeout):
                        await writer.drain()
                except TimeoutError:
                    link.log.warning("peer_not_reading", seconds=self.limits.send_timeout)
                    link.close("slow_peer")
        except (OSError, RuntimeError):
            link.close("connection_lost")

    async def _watch_loop(self, link: _Link) -> None:
        """Warn once a link turns stale; close it once it has been idle too long."""
        warned = False
        while link.close_reason is None:
            silent = link.silent(time.monotonic())
            if silent >= self.limits.idle_timeout:
                link.log.warning(
                    "peer_idle_timeout",
                    silent_seconds=round(silent, 1),
                )
                link.close("idle_timeout")
                return
            if silent >= self.limits.stale_after:
                if not warned:
                    link.log.warning(
                        "peer_silent",
                        silent_seconds=round(silent, 1),
                        closing_in=round(self.limits.idle_timeout - silent, 1),
                    )
                warned = True
                until = self.limits.idle_timeout
            else:
                warned = False
                until = self.limits.stale_after
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(until - silent + 0.01):
                    await link.closed.wait()


class _LinkClosed(Exception):
    """Ends a link's TaskGroup."""


def _cancel_if_cancelling() -> None:
    """Raise CancelledError if this task has a cancellation pending.

    Python 3.11's TaskGroup drops a cancellation that arrives while it is already
    aborting because its body raised (here ``_LinkClosed``); the task would then go on
    as if nothing had been asked of it, and a shutdown would wait for it forever.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _prefer(new: _Link, old: _Link, own_key: NodeId) -> bool:
    """Whether ``new`` should replace ``old`` (same peer, both live): the link dialed by
    the lower key wins; between two dialed by the same end, the older one stays. (A
    stale ``old`` is replaced whatever this says.)"""

    def dialer(link: _Link) -> NodeId:
        return own_key if link.side is Side.DIALER else link.key

    if dialer(new) == dialer(old):
        return False
    return dialer(new) < dialer(old)


def _close_reason(link: _Link) -> str:
    """Why ``link`` closed, as one of :data:`CLOSE_REASONS`."""
    reason = link.close_reason or "closed"
    return reason if reason in CLOSE_REASONS else "closed"


def _short(text: str, limit: int = _DETAIL_CHARS) -> str:
    """``text`` cut to ``limit`` characters (peer-supplied text in a log line)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _refuse_raw(sock: socket.socket, reason: str) -> None:
    """Send a REFUSAL frame for ``reason`` straight on an accepted socket, which the
    caller then closes. What the peer has sent so far is read and dropped first: bytes
    left unread would turn the close into a reset, which can discard the refusal."""
    with contextlib.suppress(OSError):
        sock.recv(_READ_BUFFER)
    refusal = encode_refusal(reason)
    with contextlib.suppress(OSError):
        sock.send(_LENGTH.pack(len(refusal)) + refusal)


def _write_frame(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.writelines((_LENGTH.pack(len(data)), data))


async def _read_frame(reader: asyncio.StreamReader, limit: int) -> bytes | None:
    """The next frame's payload; None for a length of 0 or over ``limit``."""
    (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    if not 1 <= length <= limit:
        return None
    return await reader.readexactly(length)
