"""The HTTP API: aiohttp routes over :class:`~qudag_node.ports.NodeApi`.

Every answer is JSON except ``/metrics``. Every error is
``{"error": {"code": ..., "message": ...}}``, produced by one middleware that also
records each request in the metrics under its route template.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import time
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client.aiohttp import make_aiohttp_handler

from qudag_node.config import Settings
from qudag_node.core.errors import InputRejected, Reason
from qudag_node.core.types import TxId, VertexId
from qudag_node.metrics import Metrics
from qudag_node.ports import Check, NodeApi, StorageFull, TxRecord, VertexRecord
from qudag_node.sockets import dual_stack_socket

log = structlog.get_logger("qudag.api")

_SETTINGS = web.AppKey("settings", Settings)
_HEX_ID = re.compile(r"[0-9a-fA-F]{64}")
_OCTET_STREAM = "application/octet-stream"
_JSON = "application/json"
_MAX_LOG_PAGE = 1000
_MAX_SEQ = 2**63 - 1  # SQLite's largest integer
_DEFAULT_LOG_PAGE = 100
_UNMATCHED = "unmatched"
#: Codes for aiohttp's own HTTP errors; any other status uses its phrase in snake_case.
_HTTP_CODES = {
    HTTPStatus.NOT_FOUND: "not_found",
    HTTPStatus.METHOD_NOT_ALLOWED: "method_not_allowed",
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: "payload_too_large",
    HTTPStatus.UNSUPPORTED_MEDIA_TYPE: "unsupported_media_type",
}
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


def _query_int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = lo - 1
    if not lo <= value <= hi:
        raise _bad_request(f"{name} must be a whole number from {lo} to {hi}")
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
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise _bad_request("timeout must be a positive number of seconds")
    return min(value, limit)


def _json_batch(body: bytes) -> list[bytes]:
    try:
        doc = json.loads(body)
    except ValueError:
        raise ApiError(400, "malformed_json", "the body is not valid JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("transactions"), list):
        raise _bad_request('expected {"transactions": ["<base64>", ...]}')
    items = doc["transactions"]
    if not items:
        raise _bad_request("transactions must hold at least one item")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise _bad_request(f"transaction {i} is not a string")
        try:
            out.append(base64.b64decode(item, validate=True))
        except (binascii.Error, ValueError):
            raise ApiError(
                400, "malformed_base64", f"transaction {i} is not valid base64"
            ) from None
    return out


def _checks(checks: Sequence[Check]) -> dict[str, dict[str, Any]]:
    return {c.name: {"ok": c.ok, "detail": c.detail} for c in checks}


def _tx_doc(record: TxRecord) -> dict[str, Any]:
    return {
        "id": record.id.hex(),
        "status": record.state.value,
        "vertex": None if record.vertex is None else record.vertex.hex(),
        "seq": record.seq,
    }


def _vertex_doc(record: VertexRecord) -> dict[str, Any]:
    return {
        "id": record.id.hex(),
        "round": record.round,
        "author": record.author.hex(),
        "timestamp_ms": record.timestamp_ms,
        "parents": [p.hex() for p in record.parents],
        "transactions": [t.hex() for t in record.tx_ids],
        "scheme": record.scheme,
        "signature": record.signature.hex(),
        "certificate": None if record.certificate is None else record.certificate.hex(),
        "ordered": record.ordered,
    }


class _Routes:
    """The request handlers, bound to one node."""

    def __init__(self, node: NodeApi, metrics: Metrics, settings: Settings) -> None:
        self._node = node
        self._metrics = metrics
        self._settings = settings

    async def submit(self, request: web.Request) -> web.Response:
        """POST /api/v1/transactions: store one or a batch, optionally wait for finality."""
        timeout = _wait_timeout(request, self._settings.wait_timeout)
        txs = await self._read_transactions(request)
        limit = self._settings.max_submit_txs
        if len(txs) > limit:
            self._metrics.on_submit_rejected(Reason.TOO_MANY_TRANSACTIONS, len(txs))
            raise _from_input_rejected(
                InputRejected(
                    Reason.TOO_MANY_TRANSACTIONS,
                    f"{len(txs)} transactions in one request, limit {limit}",
                )
            )
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
        if request.content_type == _OCTET_STREAM:
            return [await request.read()]
        if request.content_type == _JSON:
            return _json_batch(await request.read())
        raise ApiError(
            415,
            "unsupported_media_type",
            f"send {_OCTET_STREAM} (one transaction) or {_JSON} (a batch)",
        )

    async def transaction(self, request: web.Request) -> web.Response:
        """GET /api/v1/transactions/{id}."""
        record = await self._node.transaction(TxId(_parse_id(request)))
        if record is None:
            raise ApiError(404, "not_found", "no such transaction")
        return web.json_response(_tx_doc(record))

    async def vertex(self, request: web.Request) -> web.Response:
        """GET /api/v1/vertices/{id}."""
        record = await self._node.vertex(VertexId(_parse_id(request)))
        if record is None:
            raise ApiError(404, "not_found", "no such vertex")
        return web.json_response(_vertex_doc(record))

    async def log(self, request: web.Request) -> web.Response:
        """GET /api/v1/log?from=SEQ&limit=N: a page of the finalized log."""
        start = _query_int(request, "from", 1, 1, _MAX_SEQ)
        limit = _query_int(request, "limit", _DEFAULT_LOG_PAGE, 1, _MAX_LOG_PAGE)
        entries = await self._node.log(start, limit)
        head = self._node.status()["log"]
        return web.json_response(
            {
                "entries": [
                    {
                        "seq": e.seq,
                        "tx_id": e.tx_id.hex(),
                        "vertex": e.vertex.hex(),
                        "hash": e.hash.hex(),
                    }
                    for e in entries
                ],
                "length": head["length"],
                "hash": head["hash"],
            }
        )

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

    async def status(self, request: web.Request) -> web.Response:
        """GET /api/v1/status."""
        return web.json_response(self._node.status())

    async def peers(self, request: web.Request) -> web.Response:
        """GET /api/v1/peers: linked peers and candidate addresses."""
        return web.json_response({"peers": self._node.peers()})

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


def make_app(node: NodeApi, metrics: Metrics, settings: Settings) -> web.Application:
    """The aiohttp application serving ``node``."""
    app = web.Application(
        client_max_size=settings.max_body_bytes, middlewares=[_middleware(metrics)]
    )
    app[_SETTINGS] = settings
    routes = _Routes(node, metrics, settings)
    app.router.add_post("/api/v1/transactions", routes.submit)
    app.router.add_get("/api/v1/transactions/{id}", routes.transaction)
    app.router.add_get("/api/v1/vertices/{id}", routes.vertex)
    app.router.add_get("/api/v1/log", routes.log)
    app.router.add_get("/api/v1/evidence", routes.evidence)
    app.router.add_get("/api/v1/peers", routes.peers)
    app.router.add_get("/api/v1/status", routes.status)
    app.router.add_get("/health", routes.health)
    app.router.add_get("/ready", routes.ready)
    app.router.add_get("/metrics", make_aiohttp_handler(metrics.registry))
    return app


async def start_api(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on ``host:port`` ("" = every IPv4 and IPv6 address); returns the port.

    The caller stops it with ``await runner.cleanup()``.
    """
    settings = app[_SETTINGS]
    runner = web.AppRunner(
        app, access_log=None, shutdown_timeout=min(5.0, settings.shutdown_timeout / 4)
    )
    await runner.setup()
    try:
        site: web.BaseSite
        if host:
            site = web.TCPSite(runner, host, port)
        else:
            site = web.SockSite(runner, dual_stack_socket(port))
        await site.start()
        bound = int(runner.addresses[0][1])
    except BaseException:
        await runner.cleanup()
        raise
    return runner, bound
