"""Connection limits for the HTTP API, beneath aiohttp's routes.

aiohttp's server holds a connection as long as its client likes: partial headers, a
body that stalls and an idle keep-alive connection are never closed in practice, and
each holds a file descriptor. This module bounds every connection and their number,
and makes every request aiohttp's parser refuses a JSON error:

- a connection waits at most ``idle_timeout`` for the first byte of a request (from
  its opening, or from the end of the previous response on keep-alive);
- from a request's first byte, its headers must end within ``header_timeout``;
- its body may go at most ``body_timeout`` without a byte arriving, and after that
  long it must have arrived at ``min_body_rate`` bytes/s or more on average (time in
  which the node itself stopped reading does not count); an answer the client stops
  reading may hold the connection (writing paused) for ``body_timeout`` at most;
- at most ``max_connections`` are open. When a new one would pass that cap, the
  connection that has waited longest for a request (sent nothing yet, or part of its
  headers) is closed to make room, so that a health check still gets in; if every
  connection is busy with a request, the new one is answered 503 and closed;
- ``accept()`` failures (EMFILE, ENFILE, ...) reach the event loop's exception
  handler; :func:`install_accept_error_handler` counts them and logs one rate-limited
  line instead of a traceback each (asyncio itself retries the listener after 1 s);
- aiohttp's parser failures answer ``{"error": {"code", "message"}}`` with a stable
  code and a fixed message that never repeats the input, logged at info through a
  :class:`~qudag_node.logs.Throttle`;
- a request with a ``Content-Encoding`` other than ``identity`` is refused with 415
  before its body is read, and aiohttp never decompresses a body.

:class:`LimitedAppRunner` is an ``aiohttp.web.AppRunner`` whose server makes these
connections; :func:`guard_middleware` is the application's innermost middleware.
"""

from __future__ import annotations

import asyncio
import errno
import json
import math
import resource
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from http import HTTPStatus
from typing import Any

from aiohttp import hdrs, web
from aiohttp.http_exceptions import (
    BadHttpMethod,
    BadStatusLine,
    HttpProcessingError,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
    TransferEncodingError,
)
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.typedefs import Handler, Middleware
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server

from qudag_node.config import ConfigError
from qudag_node.logs import Throttle, get_logger
from qudag_node.metrics import Metrics

log = get_logger("qudag.http")

#: Descriptors kept for everything but API connections: peer links (64 inbound
#: handshakes at once, the links, dialing), SQLite's three connections (database, WAL
#: and shared-memory files each), DNS, the standard streams.
RESERVED_DESCRIPTORS = 128
#: Most connections one wake-up of the listener accepts (asyncio accepts up to the
#: listen backlog at once); an eighth of the descriptor limit when that is less.
MAX_ACCEPT_BURST = 128
#: The derived cap never goes above this, however high the descriptor limit.
MAX_DERIVED_CONNECTIONS = 4096
#: Most header fields in one request; more is 431 ``too_many_headers``.
MAX_HEADERS = 100
#: How long a refused or timed-out connection may take to send its last answer.
_CLOSE_GRACE = 1.0
#: asyncio's message for a failed accept() (selector_events, proactor_events).
_ACCEPT_MESSAGE = "socket.accept() out of system resource"
_ACCEPT_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: Reasons for closing a connection that are no news (or, for "evicted", logged as
#: http_connections_full): counted, not logged.
_QUIET_CLOSES = frozenset({"idle_timeout", "linger_timeout", "evicted"})
_TLS_HANDSHAKE = 0x16  # the first byte of a TLS record carrying a ClientHello


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """The bounds every API connection is held to (seconds, bytes per second, counts)."""

    header_timeout: float
    body_timeout: float
    min_body_rate: int
    idle_timeout: float
    max_connections: int
    #: the listen backlog, which is also the most connections accepted at once
    backlog: int = MAX_ACCEPT_BURST


def descriptor_limit() -> int:
    """This process's soft limit on open file descriptors (RLIMIT_NOFILE)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 20 if soft == resource.RLIM_INFINITY else int(soft)


def accept_burst(nofile: int) -> int:
    """The listen backlog under a descriptor limit of ``nofile``."""
    return max(8, min(MAX_ACCEPT_BURST, nofile // 8))


def connection_cap(setting: int, nofile: int) -> int:
    """The cap on open API connections for ``QUDAG_MAX_API_CONNECTIONS=setting`` (0:
    derived) under a descriptor limit of ``nofile``; raises :class:`ConfigError` when
    the setting leaves too little room for peer links and the database.

    Besides :data:`RESERVED_DESCRIPTORS`, two accept bursts stay free: a connection is
    counted (and a waiting one closed for it) one turn of the event loop after it is
    accepted, and the closed one's descriptor is released a turn later.
    """
    allowed = nofile - RESERVED_DESCRIPTORS - 2 * accept_burst(nofile)
    if setting == 0:
        if allowed < 16:
            raise ConfigError(
                f"the descriptor limit (RLIMIT_NOFILE) is {nofile}: too low to serve the API"
                " beside peer links and the database; raise it (ulimit -n)"
            )
        return min(allowed, MAX_DERIVED_CONNECTIONS)
    if setting > allowed:
        raise ConfigError(
            f"invalid QUDAG_MAX_API_CONNECTIONS: {setting} is above the {allowed} that the"
            f" descriptor limit (RLIMIT_NOFILE {nofile}) allows beside peer links and the"
            " database; lower it, leave it 0, or raise the limit (ulimit -n)"
        )
    return setting


def limits_from(
    header_timeout: float,
    body_timeout: float,
    min_body_rate: int,
    idle_timeout: float,
    max_connections: int,
    nofile: int | None = None,
) -> ConnectionLimits:
    """The limits from the settings' values, the cap checked against ``nofile`` (default:
    this process's descriptor limit)."""
    limit = descriptor_limit() if nofile is None else nofile
    cap = connection_cap(max_connections, limit)
    return ConnectionLimits(
        header_timeout, body_timeout, min_body_rate, idle_timeout, cap, accept_burst(limit)
    )


def json_error(status: int, code: str, message: str) -> web.Response:
    """The API's JSON error answer, ``{"error": {"code", "message"}}``."""
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


@dataclass(frozen=True, slots=True)
class Refusal:
    """How the node answers one kind of unparsable request."""

    status: int
    code: str
    message: str


_URI_TOO_LONG = Refusal(414, "uri_too_long", "the request line is over the size limit")
_HEADER_TOO_LARGE = Refusal(431, "header_too_large", "a header line is over the size limit")
_TOO_MANY_HEADERS = Refusal(431, "too_many_headers", "the request has too many header fields")
_BAD_METHOD = Refusal(400, "bad_method", "the request method is not a valid HTTP method")
_TLS = Refusal(400, "tls_on_plain_port", "this port speaks plain HTTP, not TLS")
_DUPLICATE_LENGTH = Refusal(
    400, "duplicate_content_length", "the request has more than one Content-Length"
)
_AMBIGUOUS_LENGTH = Refusal(
    400, "ambiguous_length", "the request has both Transfer-Encoding and Content-Length"
)
_BAD_LENGTH = Refusal(400, "bad_content_length", "the Content-Length is not a valid length")
_BAD_TRANSFER_ENCODING = Refusal(
    400, "bad_transfer_encoding", "the Transfer-Encoding is not supported"
)
_BAD_CHUNK = Refusal(400, "bad_chunk", "the chunked body is malformed")
_BAD_REQUEST_LINE = Refusal(400, "bad_request_line", "the request line is malformed")
_BAD_URL = Refusal(400, "bad_url", "the request target is not a valid URL")
_BAD_HEADER = Refusal(400, "bad_header", "a header field is malformed")
_MALFORMED = Refusal(400, "malformed_request", "the request is not valid HTTP/1.1")
_BODY_TIMEOUT = Refusal(408, "body_timeout", "the request body stalled or arrived too slowly")
_HEADER_TIMEOUT = Refusal(408, "header_timeout", "the request headers did not arrive in time")
_INCOMPLETE_BODY = Refusal(400, "incomplete_body", "the connection ended inside the body")
_INTERNAL = Refusal(500, "internal", "internal error")
_TOO_MANY_CONNECTIONS = Refusal(
    503, "too_many_connections", "the node has too many connections; try again"
)


def classify(exc: BaseException | None, *, long_request_line: bool, tls: bool) -> Refusal:
    """The answer to a request aiohttp's parser refused with ``exc``.

    The parser's own message names the fault (and quotes the input, which is never
    passed on); ``long_request_line`` tells a long URL from a long header line, ``tls``
    whether the connection began with a TLS record.
    """
    text = exc.message if isinstance(exc, HttpProcessingError) else ""
    if tls:
        return _TLS
    if isinstance(exc, LineTooLong):
        return _URI_TOO_LONG if long_request_line else _HEADER_TOO_LARGE
    if isinstance(exc, BadHttpMethod):
        return _BAD_METHOD
    if isinstance(exc, InvalidURLError):
        return _BAD_URL
    rules = (
        ("Too many headers", _TOO_MANY_HEADERS),
        ("Duplicate Content-Length", _DUPLICATE_LENGTH),
        ("Transfer-Encoding can't be present with Content-Length", _AMBIGUOUS_LENGTH),
        ("Content-Length", _BAD_LENGTH),
        ("chunk", _BAD_CHUNK),
        ("Transfer-Encoding", _BAD_TRANSFER_ENCODING),
    )
    for needle, refusal in rules:
        if needle.lower() in text.lower():
            return refusal
    if isinstance(exc, TransferEncodingError):
        return _BAD_CHUNK
    if isinstance(exc, BadStatusLine):
        return _BAD_REQUEST_LINE
    if isinstance(exc, InvalidHeader) or "header" in text.lower():
        return _BAD_HEADER
    if isinstance(exc, HttpProcessingError):
        return _MALFORMED
    return _INTERNAL


class BodyTimeoutError(Exception):
    """The client's request body stalled or arrived below the minimum rate."""


class BadChunkError(Exception):
    """The client's chunked request body turned out malformed after its headers."""


def _is_identity(encoding: str) -> bool:
    return all(part.strip().lower() in ("", "identity") for part in encoding.split(","))


def guard_middleware() -> Middleware:
    """The innermost middleware: refuses encoded bodies (415 ``unsupported_encoding``)
    before they are read, and turns failures of the request body (a stall, a bad chunk,
    the client leaving) into JSON errors rather than internal ones."""

    @web.middleware
    async def http_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        encoding = request.headers.get(hdrs.CONTENT_ENCODING)
        if encoding is not None and not _is_identity(encoding):
            return json_error(
                415,
                "unsupported_encoding",
                "send the body without Content-Encoding (identity); compressed bodies"
                " are not accepted",
            )
        try:
            return await handler(request)
        except Exception as e:
            if e is not request.content.exception():
                raise
            refusal = (
                _BODY_TIMEOUT
                if isinstance(e, BodyTimeoutError)
                else _BAD_CHUNK
                if isinstance(e, BadChunkError)
                else _INCOMPLETE_BODY
            )
            response = json_error(refusal.status, refusal.code, refusal.message)
            response.force_close()
            return response

    return http_guard


class _Phase(Enum):
    IDLE = "idle"  # waiting for the first byte of a request
    HEADERS = "headers"  # inside a request's headers
    BODY = "body"  # a request's body is arriving
    BUSY = "busy"  # a request is being answered (bounded by the routes)
    LINGER = "linger"  # answered; the rest of the body is read and dropped
    CLOSING = "closing"  # refused; its last answer is being sent


class LimitedRequestHandler(RequestHandler):
    """aiohttp's per-connection protocol, held to :class:`ConnectionLimits`."""

    __slots__ = (
        "_body",
        "_body_bytes",
        "_body_progress",
        "_body_started",
        "_deadline",
        "_early_bytes",
        "_limits",
        "_line_done",
        "_line_length",
        "_lost",
        "_phase",
        "_server",
        "_timer",
        "_tls",
        "_write_timer",
    )

    def __init__(self, manager: LimitedServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._server = manager
        self._limits = manager.limits
        self._phase = _Phase.IDLE
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = math.inf  # when the current phase's limit runs out
        self._body: StreamReader | None = None
        self._body_started = 0.0
        self._body_progress = 0.0
        self._body_bytes = 0
        self._line_done = False
        self._line_length = 0  # bytes of the request line seen so far
        self._tls = False
        self._early_bytes = False  # bytes of a next request arrived while busy
        self._write_timer: asyncio.TimerHandle | None = None
        self._lost: list[Callable[[], None]] = []

    # --------------------------------------------------------------- timers

    # One timer per connection, moved only when it would fire too late: a request that
    # arrives whole and is answered at once costs no timer operation.

    def _arm(self, delay: float) -> None:
        self._deadline = deadline = self._loop.time() + delay
        timer = self._timer
        if timer is not None and timer.when() <= deadline:
            return  # it fires first and finds the deadline still ahead
        if timer is not None:
            timer.cancel()
        self._timer = self._loop.call_at(deadline, self._on_timer)

    def _disarm(self) -> None:
        self._deadline = math.inf

    def _stop_timer(self) -> None:
        self._deadline = math.inf
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _enter(self, phase: _Phase) -> None:
        self._phase = phase
        if phase is _Phase.BUSY:
            self._deadline = math.inf
            self._server.busy(self)
        elif phase is _Phase.IDLE:
            self._line_done, self._line_length = False, 0
            self._server.waiting(self)
            self._arm(self._limits.idle_timeout)
        elif phase is _Phase.HEADERS:
            self._server.waiting(self, keep_place=True)
            self._arm(self._limits.header_timeout)
        elif phase is _Phase.BODY:
            self._server.busy(self)
            self._body_started = self._body_progress = self._loop.time()
            self._body_bytes = 0 if self._body is None else self._body.total_bytes
            self._arm(self._limits.body_timeout)
        elif phase is _Phase.LINGER:
            self._server.busy(self)
            self._arm(self._lingering_time + self._limits.idle_timeout)
        else:  # CLOSING
            self._server.busy(self)
            self._arm(_CLOSE_GRACE)

    def _on_timer(self) -> None:
        self._timer = None
        if self.transport is None or self._deadline == math.inf:
            return
        if self._loop.time() < self._deadline:
            self._timer = self._loop.call_at(self._deadline, self._on_timer)
            return
        phase = self._phase
        if phase is _Phase.BODY:
            self._check_body()
        elif phase is _Phase.HEADERS:
            self._refuse(_HEADER_TIMEOUT, "header_timeout")
        elif phase is _Phase.IDLE:
            self._close_for("idle_timeout")
        elif phase is _Phase.LINGER:
            self._close_for("linger_timeout")
        elif phase is _Phase.CLOSING:
            self.force_close()

    def _check_body(self) -> None:
        body, limits, now = self._body, self._limits, self._loop.time()
        if body is None or body.is_eof():
            self._enter(_Phase.BUSY)
            return
        if self._reading_paused or self._buffer_paused:
            # The node stopped reading (its buffer is full): not the client's stall, and
            # the rate is measured afresh from here.
            self._body_started = self._body_progress = now
            self._body_bytes = body.total_bytes
            self._arm(limits.body_timeout)
            return
        received = body.total_bytes - self._body_bytes
        stalled = now - self._body_progress >= limits.body_timeout
        elapsed = now - self._body_started - limits.body_timeout
        slow = (
            limits.min_body_rate > 0 and elapsed > 0 and received < limits.min_body_rate * elapsed
        )
        if stalled or slow:
            self._body_timed_out("body_timeout" if stalled else "body_too_slow")
            return
        due = self._body_progress + limits.body_timeout
        if limits.min_body_rate > 0:
            due = min(
                due, self._body_started + limits.body_timeout + received / limits.min_body_rate
            )
        self._arm(max(due - now, 0.01))

    def _body_timed_out(self, reason: str) -> None:
        self._server.on_closed(reason)
        body = self._body
        if self._current_request is not None and body is not None:
            # The route reading the body answers 408 (guard_middleware); then close.
            self._lingering_time = 0.0
            self.keep_alive(False)
            self._enter(_Phase.CLOSING)
            body.set_exception(BodyTimeoutError())
        else:
            self.force_close()

    def _close_for(self, reason: str) -> None:
        self._server.on_closed(reason)
        self.force_close()

    def _refuse(self, refusal: Refusal, reason: str) -> None:
        """Answer ``refusal`` on a connection without a request under way, and close it."""
        self._server.on_closed(reason, logged=False)
        self._server.note_refused(refusal, self.peername)
        self._disarm()
        self._phase = _Phase.CLOSING
        self._server.busy(self)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_raw_response(refusal))
        self.force_close()  # the transport sends what it holds, then closes

    def pause_writing(self) -> None:
        """The client stopped reading what the node sends: start the send timer."""
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self._loop.call_later(
                self._limits.body_timeout, self._on_send_stalled
            )

    def resume_writing(self) -> None:
        """The client reads again."""
        super().resume_writing()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _on_send_stalled(self) -> None:
        self._write_timer = None
        transport = self.transport
        if transport is None:
            return
        self._server.on_closed("send_timeout")
        transport.abort()  # close() would wait for the unread answer to drain
        self.force_close()

    def when_lost(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the connection is lost (a long answer, such as the
        log stream, learns it at once rather than at its next write)."""
        self._lost.append(callback)

    def evict(self) -> None:
        """Close this waiting connection to make room for a new one."""
        self._close_for("evicted")

    # ------------------------------------------------------- aiohttp's hooks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Start the idle timer, then let the server count the connection."""
        self._enter(_Phase.IDLE)
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        """Stop the timers and let the server forget the connection."""
        self._stop_timer()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        self._server.gone(self)
        lost, self._lost = self._lost, []
        for callback in lost:
            callback()
        super().connection_lost(exc)

    def _process_keepalive(self) -> None:
        """aiohttp's own keep-alive timer: the idle timeout here replaces it."""
        self._keepalive_handle = None

    def data_received(self, data: bytes) -> None:
        """Feed aiohttp's parser, then move the connection between phases."""
        phase = self._phase
        started = False
        if phase is _Phase.IDLE and data:
            if self._request_count == 0 and data[0] == _TLS_HANDSHAKE:
                self._tls = True
            # Still among the waiting connections, in its place. The header timer is set
            # below, unless the whole head came in this chunk.
            self._phase = phase = _Phase.HEADERS
            started = True
        if phase is _Phase.HEADERS and not self._line_done:
            end = data.find(b"\n")
            self._line_length += len(data) if end < 0 else end
            self._line_done = end >= 0
        before = self._request_count
        super().data_received(data)
        if self._request_count != before:
            self._on_messages()
        elif phase is _Phase.BUSY:
            if data:
                self._early_bytes = True
        elif self.transport is None or self._phase is _Phase.CLOSING:
            return
        elif started:
            self._arm(self._limits.header_timeout)
        elif phase is _Phase.BODY:
            body = self._body
            if body is None or body.is_eof():
                self._enter(_Phase.BUSY)
            else:
                self._body_progress = self._loop.time()
        elif phase is _Phase.LINGER and (self._body is None or self._body.is_eof()):
            self._enter(_Phase.IDLE)

    def _on_messages(self) -> None:
        """aiohttp's parser has queued one or more requests (or a parse failure)."""
        if self.transport is None or self._phase is _Phase.CLOSING or not self._messages:
            return
        message, payload = self._messages[-1]
        if not isinstance(message, RawRequestMessage):
            if self._phase is _Phase.BODY:
                # A parse failure inside a body the route is reading: fail that read.
                self._lingering_time = 0.0
                self.keep_alive(False)
                self._enter(_Phase.CLOSING)
                if self._body is not None:
                    self._body.set_exception(BadChunkError())
                return
            self._body = payload
            self._enter(_Phase.BUSY)
            return
        self._body = payload
        self._enter(_Phase.BUSY if payload.is_eof() else _Phase.BODY)

    def log_access(
        self, request: BaseRequest, response: web.StreamResponse, time: float | None
    ) -> None:
        """Called once an answer is written: the connection waits for its next request."""
        super().log_access(request, response, time)
        if self.transport is None or self._phase is _Phase.CLOSING or self._messages:
            return
        if not request.content.is_eof():
            self._enter(_Phase.LINGER)
        elif self._early_bytes:
            self._early_bytes = False
            self._enter(_Phase.HEADERS)
        else:
            self._enter(_Phase.IDLE)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A JSON error for a request aiohttp could not parse (or could not hand on)."""
        if status == 500 and not isinstance(exc, HttpProcessingError):
            refusal = _INTERNAL
            self._server.note_internal(exc)
        else:
            long_line = self._line_length > self.max_line_size
            refusal = classify(exc, long_request_line=long_line, tls=self._tls)
            self._server.note_refused(refusal, self.peername)
        if request.writer.output_size > 0:
            raise ConnectionError("the response had begun; the connection is dropped")
        response = json_error(refusal.status, refusal.code, refusal.message)
        response.force_close()
        return response

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """aiohttp's unexpected errors: one rate-limited line, no traceback."""
        exc = kw.get("exc_info")
        self._server.note_internal(exc if isinstance(exc, BaseException) else None)


def _raw_response(refusal: Refusal) -> bytes:
    """``refusal`` as a whole HTTP/1.1 response, for a connection without a request."""
    body = json.dumps({"error": {"code": refusal.code, "message": refusal.message}}).encode()
    retry = "Retry-After: 1\r\n" if refusal.status == 503 else ""
    head = (
        f"HTTP/1.1 {refusal.status} {HTTPStatus(refusal.status).phrase}\r\n"
        f"Content-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n{retry}Connection: close\r\n\r\n"
    )
    return head.encode() + body


class LimitedServer(Server):
    """aiohttp's server, making :class:`LimitedRequestHandler` connections and holding
    their number to ``limits.max_connections``."""

    def __init__(
        self,
        handler: Callable[[BaseRequest], Awaitable[web.StreamResponse]],
        *,
        limits: ConnectionLimits,
        metrics: Metrics,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self.limits = limits
        self._metrics = metrics
        self._throttle = Throttle()
        self._live: set[LimitedRequestHandler] = set()
        #: connections waiting for a request, longest-waiting first (dict order)
        self._waiting: dict[LimitedRequestHandler, None] = {}

    def __call__(self) -> LimitedRequestHandler:
        """A protocol for one new connection."""
        return LimitedRequestHandler(self, loop=self._loop, **self._kwargs)

    def waiting(self, conn: LimitedRequestHandler, *, keep_place: bool = False) -> None:
        """``conn`` waits for a request (it can be closed to make room)."""
        if keep_place and conn in self._waiting:
            return
        self._waiting.pop(conn, None)
        self._waiting[conn] = None

    def busy(self, conn: LimitedRequestHandler) -> None:
        """``conn`` is inside a request."""
        self._waiting.pop(conn, None)

    def gone(self, conn: LimitedRequestHandler) -> None:
        """``conn`` closed."""
        self._waiting.pop(conn, None)
        if conn in self._live:
            self._live.discard(conn)
            self._metrics.on_http_connections(len(self._live))

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        """Count the new connection; past the cap, close the longest-waiting one."""
        super().connection_made(handler, transport)
        assert isinstance(handler, LimitedRequestHandler)
        self._waiting.pop(handler, None)  # never its own victim
        if len(self._live) >= self.limits.max_connections:
            if self._waiting:
                victim = next(iter(self._waiting))
                self._waiting.pop(victim)
                self._live.discard(victim)
                victim.evict()
                self._say("http_connections_full", cap=self.limits.max_connections)
            else:
                handler._refuse(_TOO_MANY_CONNECTIONS, "refused_full")
                return
        self._live.add(handler)
        self._waiting[handler] = None
        self._metrics.on_http_connections(len(self._live))

    def on_closed(self, reason: str, *, logged: bool = True) -> None:
        """The node closed a connection on a limit; ``logged=False`` when another line
        says so already. Idle connections closed are ordinary: counted, never logged."""
        self._metrics.on_http_connection_closed(reason)
        if logged and reason not in _QUIET_CLOSES:
            self._say("http_connection_closed", level="info", reason=reason)

    def note_refused(self, refusal: Refusal, peer: object) -> None:
        """A request refused before any route: count it, log it (rate-limited)."""
        self._metrics.on_http_refused(refusal.code)
        client = peer[0] if isinstance(peer, tuple) and peer else None
        self._say("http_request_refused", level="info", code=refusal.code, client=client)

    def note_internal(self, exc: BaseException | None) -> None:
        """An unexpected failure inside aiohttp's connection handling."""
        error = None if exc is None else type(exc).__name__
        self._say("http_connection_error", key=f"http_connection_error:{error}", error=error)

    def _say(self, event: str, *, level: str = "warning", key: str = "", **fields: Any) -> None:
        throttle_key = key or (f"{event}:{fields.get('code') or fields.get('reason') or ''}")
        suppressed = self._throttle.allow(throttle_key)
        if suppressed is None:
            return
        if suppressed:
            fields["suppressed"] = suppressed
        if level == "info":
            log.info(event, **fields)
        else:
            log.warning(event, **fields)


class LimitedAppRunner(web.AppRunner):
    """An ``AppRunner`` whose server is a :class:`LimitedServer`."""

    __slots__ = ("_limits", "_metrics")

    def __init__(
        self, app: web.Application, *, limits: ConnectionLimits, metrics: Metrics, **kwargs: Any
    ) -> None:
        super().__init__(app, **kwargs)
        self._limits = limits
        self._metrics = metrics

    async def _make_server(self) -> Server:
        plain = await super()._make_server()
        return LimitedServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=asyncio.get_running_loop(),
            limits=self._limits,
            metrics=self._metrics,
            **self._kwargs,
        )


def on_connection_lost(request: web.BaseRequest, callback: Callable[[], None]) -> None:
    """Call ``callback`` once ``request``'s connection is lost (at once if it is; on a
    server other than :class:`LimitedAppRunner`'s, never: a write finds it)."""
    protocol = request.protocol
    if protocol is None or protocol.transport is None:
        callback()
    elif isinstance(protocol, LimitedRequestHandler):
        protocol.when_lost(callback)


def install_accept_error_handler(loop: asyncio.AbstractEventLoop, metrics: Metrics) -> None:
    """Route failed ``accept()`` calls on ``loop``'s listeners to ``metrics`` and one
    rate-limited log line; every other report goes on to the handler set before.

    Installing again on the same loop replaces the earlier installation (the API
    started last counts the loop's accept failures).
    """
    previous = loop.get_exception_handler()
    previous = getattr(previous, "replaces", previous)  # an earlier installation of ours
    throttle = Throttle()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if context.get("message") == _ACCEPT_MESSAGE or (
            isinstance(exc, OSError) and exc.errno in _ACCEPT_ERRNOS and "socket" in context
        ):
            code = exc.errno if isinstance(exc, OSError) and exc.errno else 0
            name = errno.errorcode.get(code, "unknown")
            metrics.on_accept_error(name)
            suppressed = throttle.allow(name)
            if suppressed is not None:
                log.warning("accept_failed", errno=name, retry_seconds=1.0, suppressed=suppressed)
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    handler.replaces = previous  # type: ignore[attr-defined]
    loop.set_exception_handler(handler)
