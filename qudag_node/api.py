"""The HTTP API: aiohttp routes over :class:`~qudag_node.ports.NodeApi`.

Every answer is JSON except ``/metrics``. Every error is
``{"error": {"code": ..., "message": ...}}``, produced by one middleware that also
records each request in the metrics under its route template.
"""

from __future__ import annotations

import asyncio
import binascii
import functools
import hmac
import ipaddress
import json
import math
import operator
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from importlib import resources
from typing import TYPE_CHECKING, Any

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client.aiohttp import make_aiohttp_handler

from qudag_node import explorer
from qudag_node.config import Settings
from qudag_node.core.certificate import Certificate, decode_certificate
from qudag_node.core.crypto import Purpose, Scheme, tx_ids
from qudag_node.core.errors import InputRejected, Reason
from qudag_node.core.genesis import Genesis
from qudag_node.core.types import TxId, VertexId
from qudag_node.genesis_file import genesis_to_json
from qudag_node.httpserver import (
    MAX_HEADERS,
    LimitedAppRunner,
    guard_middleware,
    install_accept_error_handler,
    limits_from,
    on_connection_lost,
)
from qudag_node.logs import Throttle, get_logger
from qudag_node.metrics import Metrics
from qudag_node.ports import (
    Check,
    CheckpointRecord,
    DagWindow,
    HeldRange,
    NodeApi,
    NodeStatus,
    PeerView,
    Pruned,
    QuorumInfo,
    StorageFull,
    TxRecord,
    VertexRecord,
)
from qudag_node.sockets import dual_stack_socket
from qudag_node.stream import FINAL_GRACE, Broadcaster, End, Feed, TooManySubscribers

if TYPE_CHECKING:
    from qudag_node.tracing.spans import Tracing

log = get_logger("qudag.api")

_SETTINGS = web.AppKey("settings", Settings)
_METRICS = web.AppKey("metrics", Metrics)
_HEX_ID = re.compile(r"[0-9a-fA-F]{64}")
#: Query integers and numbers: ASCII digits only, no sign, space, separator or exponent.
_DIGITS = re.compile(r"[0-9]{1,19}")
_DECIMAL = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,9})?")
_OCTET_STREAM = "application/octet-stream"
_JSON = "application/json"
_MAX_LOG_PAGE = 1000
_MAX_SEQ = 2**63 - 1  # SQLite's largest integer
_DEFAULT_LOG_PAGE = 100
_MAX_DAG_ROUNDS = 50
_DEFAULT_DAG_ROUNDS = 10
_UNMATCHED = "unmatched"
_STREAM_HEADERS = {
    hdrs.CONTENT_TYPE: "text/event-stream",
    hdrs.CACHE_CONTROL: "no-store",
    "X-Accel-Buffering": "no",  # proxies pass each event on at once
}
#: The header in which Fly's proxy passes the client's address.
_FLY_CLIENT_IP = "Fly-Client-IP"
_REALM = "qudag-node"
#: Codes for aiohttp's own HTTP errors; any other status uses its phrase in snake_case.
_HTTP_CODES = {
    HTTPStatus.NOT_FOUND: "not_found",
    HTTPStatus.METHOD_NOT_ALLOWED: "method_not_allowed",
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: "payload_too_large",
    HTTPStatus.UNSUPPORTED_MEDIA_TYPE: "unsupported_media_type",
}
#: The one shape of a JSON batch; its message for every other shape.
_BATCH_SHAPE = 'expected {"transactions": ["<base64>", ...]}'
#: Strict base64 (RFC 4648 alphabet, exact padding), one C call per item.
_b64decode = functools.partial(binascii.a2b_base64, strict_mode=True)
_b64encode = functools.partial(binascii.b2a_base64, newline=False)
#: The last quantum (4 characters) of an item; strict base64 has a multiple of 4.
_LAST_QUANTUM = operator.itemgetter(slice(-4, None))
#: Last quanta of canonical base64, once strict decoding has passed: before "=" and "=="
#: only characters whose unused low bits are zero (otherwise "YR==" would be b"a" too).
_CANONICAL_ENDS = re.compile(r"(?:[^=]{4}|[^=]{2}[AEIMQUYcgkosw048]=|[^=][AQgw]==)*")
#: Socket errors meaning this host has no usable IPv6.


class ApiError(Exception):
    """A request the API refuses, with its HTTP status and a stable code."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.extra = extra or {}

    def response(self) -> web.Response:
        """The JSON error answer."""
        body = {"error": {"code": self.code, "message": self.message}, **self.extra}
        return web.json_response(body, status=self.status, headers=self.headers)


def _bad_request(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


def _from_http_exception(e: web.HTTPException, request: web.Request) -> ApiError:
    status = HTTPStatus(e.status)
    code = _HTTP_CODES.get(status, status.phrase.lower().replace(" ", "_").replace("-", "_"))
    headers = {}
    if status is HTTPStatus.NOT_FOUND:
        message = f"no route for {request.method} {request.path}"
    elif status is HTTPStatus.METHOD_NOT_ALLOWED:
        allow = e.headers.get("Allow", "")
        headers["Allow"] = allow
        message = f"{request.method} is not allowed here; allowed: {allow}"
    elif status is HTTPStatus.REQUEST_ENTITY_TOO_LARGE:
        limit = request.app[_SETTINGS].max_body_bytes
        message = f"request body is over the limit of {limit} bytes"
    else:
        message = status.description or status.phrase
    return ApiError(e.status, code, message, headers=headers)


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "payload_too_large", f"request body is over the limit of {limit} bytes")


def _from_input_rejected(e: InputRejected) -> ApiError:
    if e.reason is Reason.POOL_FULL:
        return ApiError(503, e.reason.value, e.message, headers={"Retry-After": "1"})
    return ApiError(400, e.reason.value, e.message)


def _route_of(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return _UNMATCHED if resource is None else resource.canonical


def _middleware(metrics: Metrics) -> Middleware:
    @web.middleware
    async def errors_and_metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            response = await handler(request)
        except ApiError as e:
            response = e.response()
        except Pruned as e:
            response = ApiError(410, "pruned", str(e), extra={"base": e.base}).response()
        except web.HTTPException as e:
            response = _from_http_exception(e, request).response()
        except Exception:
            log.exception("internal_error", method=request.method, path=request.path)
            response = ApiError(500, "internal", "internal error").response()
        metrics.on_http(
            request.method, _route_of(request), response.status, time.perf_counter() - started
        )
        return response

    return errors_and_metrics


def _parse_id(request: web.Request) -> bytes:
    text = request.match_info["id"]
    if not _HEX_ID.fullmatch(text):
        raise ApiError(400, "malformed_id", "an id is 64 hex characters")
    return bytes.fromhex(text)


def _parse_number(text: str) -> int:
    """A checkpoint number in a path: a whole number from 1, in ASCII digits."""
    value = int(text) if _DIGITS.fullmatch(text) else 0
    if not 1 <= value <= _MAX_SEQ:
        raise _bad_request(f"a checkpoint number is latest or a whole number from 1 to {_MAX_SEQ}")
    return value


def _query_int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    # int() would also take " +5 ", "1_0" and digits of other scripts.
    value = int(raw) if _DIGITS.fullmatch(raw) else lo - 1
    if not lo <= value <= hi:
        raise _bad_request(f"{name} must be a whole number from {lo} to {hi} in ASCII digits")
    return value


def _wait_timeout(request: web.Request, limit: float) -> float | None:
    """The ``wait=final`` timeout in seconds (capped at ``limit``), or None for no wait."""
    if not request.query_string:
        return None  # the common case, without parsing a query
    wait = request.query.get("wait")
    raw = request.query.get("timeout")
    if wait is None:
        if raw is not None:
            raise _bad_request("timeout applies only with wait=final")
        return None
    if wait != "final":
        raise _bad_request("wait must be 'final'")
    if raw is None:
        return limit
    # float() would also take " 5", "1_0", "1e3", "inf" and digits of other scripts.
    value = float(raw) if _DECIMAL.fullmatch(raw) else math.nan
    if not math.isfinite(value) or value <= 0:
        raise _bad_request("timeout must be a positive number of seconds, such as 10 or 2.5")
    return min(value, limit)


def _stream_start(request: web.Request) -> int | None:
    """The first log position a stream sends: after ``Last-Event-ID`` (a reconnecting
    client's, so it wins), else ``from``; None: from the next live entry."""
    last = request.headers.get("Last-Event-ID")
    if last is not None:
        value = int(last) if _DIGITS.fullmatch(last) else -1
        if not 0 <= value < _MAX_SEQ:
            raise _bad_request(f"Last-Event-ID must be a log position from 0 to {_MAX_SEQ - 1}")
        return value + 1
    if "from" in request.query:
        return _query_int(request, "from", 1, 1, _MAX_SEQ)
    return None


def _stream_dag(request: web.Request) -> bool:
    """Whether a stream also sends the DAG events (``events=log,dag``)."""
    events = request.query.get("events", "log")
    if events not in ("log", "log,dag"):
        raise _bad_request("events must be 'log' or 'log,dag'")
    return events == "log,dag"


async def _end_stream(request: web.Request, response: web.StreamResponse) -> None:
    """End a stream's answer; a connection that takes nothing more is closed."""
    try:
        async with asyncio.timeout(FINAL_GRACE):
            await response.write_eof()
    except TimeoutError:
        if request.transport is not None:
            request.transport.close()
    except ConnectionError:
        pass  # the client is gone already


class _BatchScan:
    """Checks a JSON batch's raw bytes chunk by chunk, as they arrive, before parsing.

    A batch has one shape, ``{"transactions": ["<base64>", ...]}``, and base64 holds no
    bracket and no comma: counting those (C speed, one small chunk per step of the event
    loop) bounds the nesting and the items before anything is parsed or decoded, and
    refuses millions of items once the limit's worth of commas has arrived.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._opened = {b"[": False, b"{": False}
        self._commas = 0

    def feed(self, chunk: bytes) -> None:
        """Raise :class:`ApiError` or :class:`_TooMany` as soon as the bytes so far show it."""
        for bracket, seen in self._opened.items():
            first = chunk.find(bracket)
            if first >= 0:
                if seen or chunk.find(bracket, first + 1) >= 0:
                    raise ApiError(
                        400,
                        "malformed_json",
                        f"nested objects or arrays are not allowed; {_BATCH_SHAPE}",
                    )
                self._opened[bracket] = True
        self._commas += chunk.count(b",")
        if self._commas >= self._limit:
            raise _TooMany(self._commas + 1, self._limit, at_least=True)


def _json_batch(body: bytes, limit: int) -> list[bytes]:
    """The transactions of a JSON batch ``{"transactions": ["<base64>", ...]}``.

    ``body`` has passed :class:`_BatchScan` as it arrived. Raises :class:`ApiError`, or
    :class:`_TooMany` for more than ``limit`` items.
    """
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        raise ApiError(400, "malformed_json", "the body is not valid JSON") from None
    if not isinstance(doc, dict) or len(doc) != 1 or not isinstance(doc.get("transactions"), list):
        raise _bad_request(_BATCH_SHAPE)
    items: list[Any] = doc["transactions"]
    if not items:
        raise _bad_request("transactions must hold at least one item")
    if len(items) > limit:
        raise _TooMany(len(items), limit)
    if set(map(type, items)) != {str}:
        bad = next(i for i, item in enumerate(items) if not isinstance(item, str))
        raise _bad_request(f"transaction {bad} is not a string")
    try:
        out = list(map(_b64decode, items))
    except (binascii.Error, ValueError):
        out = []
    # Canonical too, so that each transaction has one spelling: checked on the last
    # quanta of all items together, with one regular expression.
    if len(out) != len(items) or not _CANONICAL_ENDS.fullmatch("".join(map(_LAST_QUANTUM, items))):
        raise ApiError(
            400,
            "malformed_base64",
            f"transaction {_first_bad_base64(items)} is not canonical base64 "
            "(RFC 4648 alphabet, padded, unused bits zero, no spaces)",
        )
    return out


def _first_bad_base64(items: Sequence[str]) -> int:
    """The index of the first item that is not canonical base64 (the error path only)."""
    for i, item in enumerate(items):
        try:
            if _b64encode(_b64decode(item)) != item.encode():
                return i
        except (binascii.Error, ValueError):
            return i
    return 0


class _TooMany(Exception):
    """A batch holds more transactions than one request may."""

    def __init__(self, count: int, limit: int, *, at_least: bool = False) -> None:
        counted = f"at least {count}" if at_least else str(count)
        super().__init__(f"{counted} transactions in one request, limit {limit}")
        self.count = count
        self.limit = limit


def _checks(checks: Sequence[Check]) -> dict[str, dict[str, Any]]:
    return {c.name: {"ok": c.ok, "detail": c.detail} for c in checks}


def _unknown(kind: str, held: HeldRange) -> str:
    """The 404 message for an id this node does not hold: it cannot tell one pruned
    from one never seen, so it says from where on it holds data."""
    if held.oldest_round <= 1 and held.oldest_log_position <= 1:
        return f"no such {kind}"
    return (
        f"no such {kind} on this node, which holds vertices from round {held.oldest_round}"
        f" and the log from position {held.oldest_log_position} on (older ones are pruned)"
    )


def _tx_doc(record: TxRecord) -> dict[str, Any]:
    return {
        "id": record.id.hex(),
        "status": record.state.value,
        "vertex": None if record.vertex is None else record.vertex.hex(),
        "seq": record.seq,
    }


def _vertex_doc(record: VertexRecord) -> dict[str, Any]:
    """A vertex and everything needed to verify it with the genesis alone (see
    docs/protocol.md, "Verifying a vertex and a certificate")."""
    scheme = Scheme(record.scheme)
    votes = () if record.certificate is None else _votes(decode_certificate(record.certificate))
    return {
        "id": record.id.hex(),
        "round": record.round,
        "author": record.author.hex(),
        "timestamp_ms": record.timestamp_ms,
        "parents": [p.hex() for p in record.parents],
        "transactions": [t.hex() for t in record.tx_ids],
        "header": record.header.hex(),
        "scheme": record.scheme,
        "signature": record.signature.hex(),
        "signing": _signing(scheme, Purpose.VERTEX, record.id),
        "certificate": None if record.certificate is None else record.certificate.hex(),
        "votes": [{"validator": voter, "signature": s.hex()} for voter, s in votes],
        "vote_signing": _signing(scheme, Purpose.VOTE, record.id),
        "ordered": record.ordered,
    }


def _dag_doc(window: DagWindow) -> dict[str, Any]:
    """The last rounds' vertices, lowest round first, and the committed leaders."""
    vertices = sorted(window.vertices, key=lambda v: (v.round, v.author))
    return {
        "vertices": [
            {
                "id": v.id.hex(),
                "round": v.round,
                "author": v.author.hex(),
                "parents": [p.hex() for p in v.parents],
                "certified": v.certified,
                "ordered": v.ordered,
            }
            for v in vertices
        ],
        "committed_leaders": [vid.hex() for vid in window.committed_leaders],
    }


def _checkpoint_doc(record: CheckpointRecord, genesis: Genesis) -> dict[str, Any]:
    """A certified checkpoint and everything needed to verify it with the genesis alone
    (see docs/protocol.md, "Verifying a certified checkpoint")."""
    cp, certificate = record.certified.checkpoint, record.certified.certificate
    return {
        "number": cp.number,
        "genesis": cp.genesis.hex(),
        "round": cp.round,
        "leader": cp.leader.hex(),
        "timestamp_ms": cp.timestamp_ms,
        "log_length": cp.log_length,
        "log_hash": cp.log_hash.hex(),
        "window_count": cp.window_count,
        "window_root": cp.window_root.hex(),
        "window": [vid.hex() for vid in record.window],
        "encoding": cp.encode().hex(),
        "digest": cp.digest.hex(),
        "certificate": certificate.encode().hex(),
        "signatures": [
            {
                "validator": voter,
                "name": genesis.validators[voter].name if voter < genesis.n else None,
                "node_id": genesis.ids[voter].hex() if voter < genesis.n else None,
                "signature": signature.hex(),
            }
            for voter, signature in _votes(certificate)
        ],
        "signing": _signing(certificate.scheme, Purpose.CHECKPOINT, cp.digest),
    }


def _votes(certificate: Certificate) -> list[tuple[int, bytes]]:
    return list(zip(certificate.voters, certificate.signatures, strict=True))


def _signing(scheme: Scheme, purpose: Purpose, message: bytes) -> dict[str, Any]:
    """What a signature of ``purpose`` signs: the message, and the composite's context
    (none for Ed25519, which signs the message itself)."""
    return {
        "scheme": scheme.label,
        "context": None if scheme is Scheme.ED25519 else purpose.value.decode(),
        "message": message.hex(),
    }


def _genesis_doc(genesis: Genesis) -> dict[str, Any]:
    """The genesis file's fields, each validator's node id, and the canonical bytes."""
    doc: dict[str, Any] = json.loads(genesis_to_json(genesis))
    for entry, node in zip(doc["validators"], genesis.ids, strict=True):
        entry["id"] = node.hex()
    doc["encoding"] = genesis.encode().hex()
    return doc


def _status_doc(status: NodeStatus) -> dict[str, Any]:
    node, network, dag = status.node, status.network, status.dag
    return {
        "node": {
            "id": node.id,
            "version": node.version,
            "role": node.role,
            "node_id": node.node_id.hex(),
            "public_key": node.public_key.hex(),
            "uptime_seconds": round(node.uptime_seconds, 3),
            "platform": dict(node.platform),
            "peer_transport": node.peer_transport,
            "openssl": node.openssl,
        },
        "network": {
            "id": network.id,
            "mode": network.mode,
            "genesis": network.genesis.hex(),
            "scheme": network.scheme,
            "validators": [
                {"name": v.name, "node_id": v.node_id.hex(), "public_key": v.public_key.hex()}
                for v in network.validators
            ],
            "f": network.f,
            "quorum": network.quorum,
        },
        "dag": {
            "round": dag.round,
            "highest_round": dag.highest_round,
            "vertices": dag.vertices,
            "committed_round": dag.committed_round,
            "window": dag.window,
            "buffered": dag.buffered,
            "buffer_dropped": dag.buffer_dropped,
            "fetching": dag.fetching,
        },
        "log": {"length": status.log.length, "hash": status.log.hash.hex()},
        "transactions": {
            "pending": status.transactions.pending,
            "in_flight": status.transactions.in_flight,
        },
        "p2p": {
            "peers": status.p2p.peers,
            "port": status.p2p.port,
            "quorum": None if status.p2p.quorum is None else _quorum_doc(status.p2p.quorum),
        },
        "sync": {
            "catching_up": status.sync.catching_up,
            "gap_rounds": status.sync.gap_rounds,
            "in_step": status.sync.in_step,
            "detail": status.sync.detail,
            "state_sync": {
                "enabled": status.sync.state_sync.enabled,
                "active": status.sync.state_sync.active,
                "done": status.sync.state_sync.done,
                "last_seconds": status.sync.state_sync.last_seconds,
            },
            "backfill": {
                "enabled": status.sync.backfill.enabled,
                "active": status.sync.backfill.active,
                "base": status.sync.backfill.base,
                "entries": status.sync.backfill.entries,
            },
        },
        "checkpoint": None
        if status.checkpoint is None
        else {
            "number": status.checkpoint.number,
            "round": status.checkpoint.round,
            "log_length": status.checkpoint.log_length,
        },
        "retention": {
            "dag": status.retention.dag,
            "transactions": status.retention.transactions,
            "oldest_round": status.retention.held.oldest_round,
            "oldest_log_position": status.retention.held.oldest_log_position,
        },
    }


def _quorum_doc(quorum: QuorumInfo) -> dict[str, Any]:
    return {
        "can_finalize": quorum.can_finalize,
        "validators_linked": quorum.validators_linked,
        "needed": quorum.needed,
        "since": quorum.since.isoformat(timespec="seconds"),
        "for_seconds": round(quorum.for_seconds, 3),
    }


def _peer_doc(view: PeerView) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": view.name,
        "node_id": view.node_id,
        "address": view.address,
        "role": view.role,
        "state": view.state,
        "direction": view.direction,
        "last_seen_seconds": view.last_seen_seconds,
        "failures": view.failures,
        "last_error": view.last_error,
        "transport": view.transport,
        "tls": None
        if view.tls is None
        else {"version": view.tls.version, "cipher": view.tls.cipher, "group": view.tls.group},
    }
    if view.position is not None:
        doc["highest_round"] = view.position.highest_round
        doc["committed_round"] = view.position.committed_round
        doc["log_length"] = view.position.log_length
    return doc


class RateLimiter:
    """A token bucket per client: ``rate`` writes a second, up to ``burst`` at once.

    At most ``max_clients`` buckets are kept; a new client beyond that pushes out the
    one unseen the longest (which starts again with a full bucket if it comes back), so
    a client rotating addresses costs a bounded table, never unbounded memory.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        max_clients: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1 or max_clients < 1:
            raise ValueError("rate must be positive, burst and max_clients at least 1")
        self._rate = rate
        self._burst = float(burst)
        self._max_clients = max_clients
        self._clock = clock
        # client -> [tokens, time of the last update], least recently seen first
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, client: str) -> float:
        """Take one token of ``client``: 0.0 if it had one, else seconds until it has."""
        now = self._clock()
        bucket = self._buckets.get(client)
        if bucket is None:
            if len(self._buckets) >= self._max_clients:
                self._buckets.popitem(last=False)
            bucket = self._buckets[client] = [self._burst, now]
        else:
            self._buckets.move_to_end(client)
            bucket[0] = min(self._burst, bucket[0] + (now - bucket[1]) * self._rate)
            bucket[1] = now
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return 0.0
        return (1.0 - bucket[0]) / self._rate


def client_address(request: web.Request, trust_fly_client_ip: bool) -> str:
    """The address a client's writes are counted under.

    The socket peer's address, or, when ``trust_fly_client_ip`` says the node is behind
    Fly's proxy, the proxy's ``Fly-Client-IP`` header (a missing or invalid one falls
    back to the peer). An IPv6 client counts as its /64, the block one host usually
    gets; an IPv4-mapped address as its IPv4 address.
    """
    address = None
    if trust_fly_client_ip:
        address = _ip(request.headers.get(_FLY_CLIENT_IP, ""))
    if address is None:
        address = _ip(request.remote or "")
    if address is None:
        return "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class _Refusal:
    """Why a write was refused before its body was read: for the throttled log line."""

    code: str
    client: str


class _WriteGuard:
    """What every write passes first: the client's rate limit, then the API token."""

    def __init__(self, settings: Settings) -> None:
        self._trust_fly = settings.api_trust_fly_client_ip
        self._limiter = (
            RateLimiter(settings.api_write_rate, settings.api_write_burst, settings.api_clients)
            if settings.api_write_rate > 0
            else None
        )
        token = settings.api_token
        self._token = None if token is None else token.reveal().encode()
        self._throttle = Throttle()

    def check(self, request: web.Request) -> None:
        """Raise :class:`ApiError` 429 or 401 unless ``request`` may write."""
        if self._limiter is not None:
            client = client_address(request, self._trust_fly)
            wait = self._limiter.take(client)
            if wait > 0:
                retry = max(1, math.ceil(wait))
                self._refused(_Refusal("rate_limited", client))
                raise ApiError(
                    429,
                    "rate_limited",
                    f"too many writes from this client; try again in {retry} s",
                    headers={"Retry-After": str(retry)},
                )
        if self._token is not None:
            self._check_token(request, self._token)

    def _check_token(self, request: web.Request, token: bytes) -> None:
        header = request.headers.get(hdrs.AUTHORIZATION)
        if header is None:
            self._refused(_Refusal("token_required", client_address(request, self._trust_fly)))
            raise ApiError(
                401,
                "token_required",
                "writes to this node need its API token: Authorization: Bearer <token>",
                headers={hdrs.WWW_AUTHENTICATE: f'Bearer realm="{_REALM}"'},
            )
        scheme, _, presented = header.strip().partition(" ")
        # compare_digest takes as long whatever the bytes: no timing hints at the token.
        given = presented.strip().encode("utf-8", "replace")
        if not hmac.compare_digest(given, token) or scheme.lower() != "bearer":
            self._refused(_Refusal("bad_token", client_address(request, self._trust_fly)))
            raise ApiError(
                401,
                "bad_token",
                "the Authorization header does not hold this node's API token as Bearer",
                headers={hdrs.WWW_AUTHENTICATE: f'Bearer realm="{_REALM}", error="invalid_token"'},
            )

    def _refused(self, refusal: _Refusal) -> None:
        suppressed = self._throttle.allow(refusal.code)
        if suppressed is not None:
            log.info(
                "write_refused", code=refusal.code, client=refusal.client, suppressed=suppressed
            )


async def _refuse_unread(request: web.Request, error: ApiError) -> web.StreamResponse:
    """Answer ``error``; if the body has not all arrived, close without reading the rest.

    aiohttp would otherwise read and drop the rest of the body (up to
    ``QUDAG_MAX_BODY_BYTES``) after the answer: a client sending bodies refused before
    or after their first chunks (rate-limited, without the token, too many items) could
    keep the event loop busy with bytes nobody reads. The answer goes out first, with
    ``Connection: close``. A body already here costs nothing more: the connection stays.
    """
    if request.content.is_eof():
        raise error
    response = error.response()
    response.force_close()
    try:
        await response.prepare(request)
        await response.write_eof()
    except ConnectionError:
        pass  # the client is gone already: nothing to answer
    request.protocol.force_close()
    return response


class _Routes:
    """The request handlers, bound to one node."""

    def __init__(
        self,
        node: NodeApi,
        metrics: Metrics,
        settings: Settings,
        stream: Broadcaster,
        tracing: Tracing | None,
    ) -> None:
        self._node = node
        self._metrics = metrics
        self._settings = settings
        self._stream = stream
        self._tracing = tracing
        self._guard = _WriteGuard(settings)

    async def submit(self, request: web.Request) -> web.StreamResponse:
        """POST /api/v1/transactions: store one or a batch, optionally wait for finality."""
        try:
            self._guard.check(request)
            timeout = _wait_timeout(request, self._settings.wait_timeout)
            txs = await self._read_transactions(request)
        except _TooMany as e:
            self._metrics.on_submit_rejected(Reason.TOO_MANY_TRANSACTIONS, e.count)
            error = _from_input_rejected(InputRejected(Reason.TOO_MANY_TRANSACTIONS, str(e)))
            return await _refuse_unread(request, error)
        except ApiError as e:
            return await _refuse_unread(request, e)
        if self._tracing is None:
            return await self._store_batch(txs, timeout)
        with self._tracing.submit(request.headers, tx_ids(txs)):
            return await self._store_batch(txs, timeout)

    async def _store_batch(self, txs: list[bytes], timeout: float | None) -> web.StreamResponse:
        """Submit ``txs`` to the node; answer once stored, or once final (``timeout``)."""
        try:
            receipt = await self._node.submit(txs)
        except InputRejected as e:
            raise _from_input_rejected(e) from None
        except StorageFull as e:
            raise ApiError(507, "insufficient_storage", str(e)) from None
        ids = [i.hex() for i in receipt.ids]
        if timeout is None:
            return web.json_response({"ids": ids}, status=202)
        if not await self._node.wait_final(receipt.ids, timeout):
            raise ApiError(
                504,
                "timeout",
                f"not final after {timeout:g} s; the transactions are stored",
                extra={"ids": ids},
            )
        return web.json_response({"ids": ids, "status": "final"})

    async def _read_transactions(self, request: web.Request) -> list[bytes]:
        # A batch larger than the pool could ever hold would be refused for ever: it is
        # refused as too large (the settings keep max_submit_txs <= max_pending anyway).
        limit = min(self._settings.max_submit_txs, self._settings.max_pending)
        # Without the header aiohttp reports application/octet-stream: say it instead.
        if hdrs.CONTENT_TYPE in request.headers:
            if request.content_type == _OCTET_STREAM:
                return [await request.read()]
            if request.content_type == _JSON:
                return _json_batch(await self._read_batch(request, limit), limit)
        raise ApiError(
            415,
            "unsupported_media_type",
            f"send Content-Type {_OCTET_STREAM} (one transaction) or {_JSON} (a batch)",
        )

    async def _read_batch(self, request: web.Request, limit: int) -> bytes:
        """The body of a JSON batch, refused as soon as its bytes show it is bad.

        A body too large, too deep or of too many items never freezes the event loop:
        each chunk is checked as it arrives, and the answer goes out without the rest.
        """
        most = self._settings.max_body_bytes
        if (request.content_length or 0) > most:
            raise _too_large(most)
        scan = _BatchScan(limit)
        chunks = []
        size = 0
        async for chunk in request.content.iter_any():
            size += len(chunk)
            if size > most:
                raise _too_large(most)
            scan.feed(chunk)
            chunks.append(chunk)
        return b"".join(chunks)

    async def transaction(self, request: web.Request) -> web.Response:
        """GET /api/v1/transactions/{id}."""
        record = await self._node.transaction(TxId(_parse_id(request)))
        if record is None:
            held = self._node.status().retention.held
            raise ApiError(404, "not_found", _unknown("transaction", held))
        return web.json_response(_tx_doc(record))

    async def vertex(self, request: web.Request) -> web.Response:
        """GET /api/v1/vertices/{id}."""
        record = await self._node.vertex(VertexId(_parse_id(request)))
        if record is None:
            held = self._node.status().retention.held
            raise ApiError(404, "not_found", _unknown("vertex", held))
        return web.json_response(_vertex_doc(record))

    async def log(self, request: web.Request) -> web.Response:
        """GET /api/v1/log?from=SEQ&limit=N: a page of the finalized log."""
        start = _query_int(request, "from", 1, 1, _MAX_SEQ)
        limit = _query_int(request, "limit", _DEFAULT_LOG_PAGE, 1, _MAX_LOG_PAGE)
        entries = await self._node.log(start, limit)
        head = self._node.status().log
        return web.json_response(
            {
                "entries": [
                    {
                        "seq": e.seq,
                        "tx_id": e.tx_id.hex(),
                        "vertex": None if e.vertex is None else e.vertex.hex(),
                        "hash": e.hash.hex(),
                    }
                    for e in entries
                ],
                "length": head.length,
                "hash": head.hash.hex(),
            }
        )

    async def dag(self, request: web.Request) -> web.Response:
        """GET /api/v1/dag?rounds=N: the vertices of the last N rounds held."""
        rounds = _query_int(request, "rounds", _DEFAULT_DAG_ROUNDS, 1, _MAX_DAG_ROUNDS)
        return web.json_response(_dag_doc(await self._node.dag(rounds)))

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """GET /api/v1/stream?from=SEQ&events=log,dag: the finalized log as Server-Sent
        Events, from a position (or ``Last-Event-ID``) on, then live."""
        start = _stream_start(request)
        dag = _stream_dag(request)
        try:
            sub = self._stream.subscribe(dag)
        except TooManySubscribers as e:
            raise ApiError(
                503, "too_many_subscribers", str(e), headers={"Retry-After": "5"}
            ) from None
        try:
            feed = Feed(sub, self._node.log, self._metrics, start)
            await feed.open()  # a start no longer held is 410 pruned, before answering
            response = web.StreamResponse(headers=_STREAM_HEADERS)
            await response.prepare(request)
            on_connection_lost(request, lambda: sub.stop(End.GONE))
            try:
                end = await feed.run(response.write)
            except ConnectionError:
                return response  # the client is gone
            if end is not End.GONE:
                await _end_stream(request, response)
            return response
        finally:
            self._stream.unsubscribe(sub)

    async def evidence(self, request: web.Request) -> web.Response:
        """GET /api/v1/evidence?limit=N: equivocation evidence, latest rounds first."""
        limit = _query_int(request, "limit", _DEFAULT_LOG_PAGE, 1, _MAX_LOG_PAGE)
        records = await self._node.evidence(limit)
        return web.json_response(
            {
                "equivocations": [
                    {"author": r.author.hex(), "round": r.round, "evidence": r.data.hex()}
                    for r in records
                ]
            }
        )

    async def checkpoint(self, request: web.Request) -> web.Response:
        """GET /api/v1/checkpoints/{number}, or /latest: a certified checkpoint."""
        text = request.match_info.get("number", "latest")
        number = None if text == "latest" else _parse_number(text)
        record = await self._node.checkpoint(number)
        if record is None:
            raise ApiError(404, "not_found", "no such certified checkpoint")
        return web.json_response(_checkpoint_doc(record, self._node.genesis()))

    async def genesis(self, request: web.Request) -> web.Response:
        """GET /api/v1/genesis: the network's genesis (node ids and canonical bytes too)."""
        return web.json_response(_genesis_doc(self._node.genesis()))

    async def status(self, request: web.Request) -> web.Response:
        """GET /api/v1/status."""
        return web.json_response(_status_doc(self._node.status()))

    async def peers(self, request: web.Request) -> web.Response:
        """GET /api/v1/peers: linked peers and candidate addresses."""
        return web.json_response({"peers": [_peer_doc(v) for v in self._node.peers()]})

    async def health(self, request: web.Request) -> web.Response:
        """GET /health: liveness (the loop and the database answer)."""
        checks = await self._node.liveness()
        ok = all(c.ok for c in checks)
        return web.json_response(
            {"status": "ok" if ok else "failing", "checks": _checks(checks)},
            status=200 if ok else 503,
        )

    async def ready(self, request: web.Request) -> web.Response:
        """GET /ready: readiness, with the failing checks as reasons."""
        checks = self._node.readiness()
        failing = [f"{c.name}: {c.detail}" for c in checks if not c.ok]
        if not failing:
            return web.json_response({"status": "ready", "checks": _checks(checks)})
        return web.json_response(
            {"status": "not_ready", "reasons": failing, "checks": _checks(checks)}, status=503
        )


def openapi_document() -> bytes:
    """The API's OpenAPI 3.1 description, as kept in the package (``openapi.json``)."""
    return resources.files("qudag_node").joinpath("openapi.json").read_bytes()


def _openapi_handler() -> Handler:
    document = openapi_document()  # read once: the file is part of the installed package

    async def openapi(request: web.Request) -> web.Response:
        """GET /api/v1/openapi.json: this API's description."""
        return web.Response(body=document, content_type=_JSON)

    return openapi


def make_app(
    node: NodeApi,
    metrics: Metrics,
    settings: Settings,
    stream: Broadcaster,
    tracing: Tracing | None = None,
) -> web.Application:
    """The aiohttp application serving ``node``, and its log ``stream``; ``tracing``, if
    the node traces, gets a span for each submit."""
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[_middleware(metrics), guard_middleware()],
    )
    app[_SETTINGS] = settings
    app[_METRICS] = metrics
    routes = _Routes(node, metrics, settings, stream, tracing)
    app.router.add_post("/api/v1/transactions", routes.submit)
    app.router.add_get("/api/v1/transactions/{id}", routes.transaction)
    app.router.add_get("/api/v1/vertices/{id}", routes.vertex)
    app.router.add_get("/api/v1/log", routes.log)
    app.router.add_get("/api/v1/dag", routes.dag)
    app.router.add_get("/api/v1/stream", routes.stream)
    app.router.add_get("/api/v1/evidence", routes.evidence)
    app.router.add_get("/api/v1/checkpoints/latest", routes.checkpoint)
    app.router.add_get("/api/v1/checkpoints/{number}", routes.checkpoint)
    app.router.add_get("/api/v1/peers", routes.peers)
    app.router.add_get("/api/v1/status", routes.status)
    app.router.add_get("/api/v1/genesis", routes.genesis)
    app.router.add_get("/health", routes.health)
    app.router.add_get("/ready", routes.ready)
    app.router.add_get("/metrics", make_aiohttp_handler(metrics.registry))
    app.router.add_get("/api/v1/openapi.json", _openapi_handler())
    explorer.add_routes(app.router)
    return app


async def start_api(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on ``host:port`` ("" = every IPv4 and IPv6 address); returns the port.

    Every connection is held to the limits of :mod:`qudag_node.httpserver`; a cap on
    connections that the descriptor limit cannot hold raises ``ConfigError``. The caller
    stops it with ``await runner.cleanup()``.
    """
    settings = app[_SETTINGS]
    limits = limits_from(
        settings.http_header_timeout,
        settings.http_body_timeout,
        settings.http_min_body_rate,
        settings.http_idle_timeout,
        settings.max_api_connections,
    )
    install_accept_error_handler(asyncio.get_running_loop(), app[_METRICS])
    runner = LimitedAppRunner(
        app,
        limits=limits,
        metrics=app[_METRICS],
        access_log=None,
        shutdown_timeout=min(5.0, settings.shutdown_timeout / 4),
        auto_decompress=False,  # bodies are never inflated (encoded ones are refused)
        max_headers=MAX_HEADERS,
    )
    await runner.setup()
    try:
        site: web.BaseSite
        if host:
            site = web.TCPSite(runner, host, port, backlog=limits.backlog)
        else:
            site = web.SockSite(runner, dual_stack_socket(port), backlog=limits.backlog)
        await site.start()
        bound = int(runner.addresses[0][1])
    except BaseException:
        await runner.cleanup()
        raise
    return runner, bound
