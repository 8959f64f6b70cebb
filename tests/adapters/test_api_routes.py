"""The HTTP API's routes against a fake of its port, over a real aiohttp server on
127.0.0.1: status codes, error JSON, content types, limits, the write token, the JSON
documents. No node, no database: the whole file runs in a few seconds."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from hashlib import blake2b
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from qudag_node import __version__
from qudag_node.api import make_app, start_api
from qudag_node.config import load_settings
from qudag_node.core.certificate import make_certificate
from qudag_node.core.checkpoint import (
    CertifiedCheckpoint,
    Checkpoint,
    decode_checkpoint,
    window_root,
)
from qudag_node.core.crypto import Purpose, Scheme, SignatureCheck, verify_check
from qudag_node.core.errors import InputRejected, Reason
from qudag_node.core.genesis import Genesis, Validator
from qudag_node.core.types import PublicKey, TxId, VertexId
from qudag_node.metrics import Metrics
from qudag_node.ports import (
    Check,
    CheckpointRecord,
    DagVertexRecord,
    DagWindow,
    EvidenceRecord,
    HeldRange,
    LogRecord,
    P2pInfo,
    PeerPosition,
    PeerTls,
    PeerView,
    RetentionInfo,
    StorageFull,
    TxRecord,
    TxState,
    VertexRecord,
)
from qudag_node.stream import Broadcaster
from tests.adapters.fakenode import GENESIS, ID_A, ID_B, KEY_A, KEY_B, SIGNER_A, SIGNER_B, FakeNode

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS: dict[str, Any] = json.loads((ROOT / "qudag_node" / "openapi.json").read_text())[
    "components"
]["schemas"]
TX = "/api/v1/transactions"
TOKEN = "9c41e07b2d5af3681e0c4b97d2a5f836"  # noqa: S105 - a test value


def _tx_id(data: bytes) -> TxId:
    return TxId(blake2b(data, digest_size=32, person=b"qudag:tx").digest())


def _batch(*txs: bytes) -> dict[str, list[str]]:
    return {"transactions": [base64.b64encode(t).decode() for t in txs]}


class Api:
    """A served API over a :class:`FakeNode`: its base URL, the fake, a client."""

    def __init__(self, url: str, node: FakeNode, session: aiohttp.ClientSession) -> None:
        self.url = url
        self.node = node
        self.session = session

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.session.get(self.url + path) as response:
            assert response.content_type == "application/json", await response.text()
            return response.status, await response.json()

    async def post(
        self,
        body: bytes | dict[str, Any],
        *,
        query: str = "",
        headers: dict[str, str] | None = None,
    ) -> aiohttp.ClientResponse:
        url = f"{self.url}{TX}{query}"
        if isinstance(body, bytes):
            sent = {"Content-Type": "application/octet-stream", **(headers or {})}
            return await self.session.post(url, data=body, headers=sent)
        return await self.session.post(url, json=body, headers=headers)


ApiFactory = Callable[..., Awaitable[Api]]


@pytest.fixture
async def serve() -> AsyncIterator[ApiFactory]:
    """Serve the API over a fresh :class:`FakeNode`; settings in environment form."""
    runners = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:

        async def start(**overrides: str) -> Api:
            settings = load_settings({"QUDAG_API_WRITE_RATE": "0", **overrides})
            node = FakeNode()
            metrics = Metrics(__version__)
            stream = Broadcaster(metrics, settings.stream_max_subscribers, log_length=0)
            runner, port = await start_api(
                make_app(node, metrics, settings, stream), "127.0.0.1", 0
            )
            runners.append(runner)
            return Api(f"http://127.0.0.1:{port}", node, session)

        yield start
        for runner in runners:
            await runner.cleanup()


async def _error(response: aiohttp.ClientResponse, status: int, code: str) -> dict[str, Any]:
    async with response:
        assert response.content_type == "application/json"
        body: dict[str, Any] = await response.json()
        assert response.status == status, body
    assert set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    return body


def _keys_match_schema(doc: Any, schema: dict[str, Any], where: str = "$") -> None:
    """Every object in ``doc`` has the documented required keys and no undocumented one."""
    if "$ref" in schema:
        schema = SCHEMAS[schema["$ref"].rsplit("/", 1)[1]]
    for alternative in schema.get("oneOf", []) + schema.get("anyOf", []):
        if doc is None and alternative.get("type") == "null":
            return
        if isinstance(doc, dict) and ("properties" in alternative or "$ref" in alternative):
            _keys_match_schema(doc, alternative, where)
            return
    if isinstance(doc, dict) and "properties" in schema:
        properties = schema["properties"]
        assert set(schema.get("required", [])) <= set(doc), where
        assert set(doc) <= set(properties), f"{where}: {set(doc) - set(properties)}"
        for key, value in doc.items():
            _keys_match_schema(value, properties[key], f"{where}.{key}")
    elif isinstance(doc, list) and "items" in schema:
        for i, item in enumerate(doc):
            _keys_match_schema(item, schema["items"], f"{where}[{i}]")


# ----------------------------------------------------------------- submit


async def test_one_octet_stream_transaction_is_accepted(serve: ApiFactory) -> None:
    api = await serve()
    async with await api.post(b"hello") as response:
        assert response.status == 202
        assert response.content_type == "application/json"
        assert await response.json() == {"ids": [_tx_id(b"hello").hex()]}
    assert api.node.submitted == [[b"hello"]]


async def test_a_json_batch_is_decoded_in_order(serve: ApiFactory) -> None:
    api = await serve()
    async with await api.post(_batch(b"a", b"bc", b"def")) as response:
        assert response.status == 202
        assert (await response.json())["ids"] == [_tx_id(t).hex() for t in (b"a", b"bc", b"def")]
    assert api.node.submitted == [[b"a", b"bc", b"def"]]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{", "malformed_json"),
        (b'{"transactions": [["YQ=="]]}', "malformed_json"),
        (b'{"transactions": []}', "bad_request"),
        (b'{"transactions": ["YQ=="], "x": 1}', "bad_request"),
        (b'{"transactions": [1]}', "bad_request"),
        (b'{"transactions": ["YR=="]}', "malformed_base64"),
        (b'{"transactions": ["YQ"]}', "malformed_base64"),
    ],
)
async def test_bad_json_batches_are_refused_before_the_node(
    serve: ApiFactory, body: bytes, code: str
) -> None:
    api = await serve()
    response = await api.session.post(
        api.url + TX, data=body, headers={"Content-Type": "application/json"}
    )
    await _error(response, 400, code)
    assert api.node.submitted == []


async def test_other_content_types_are_refused(serve: ApiFactory) -> None:
    api = await serve()
    response = await api.session.post(
        api.url + TX, data=b"x", headers={"Content-Type": "text/plain"}
    )
    await _error(response, 415, "unsupported_media_type")
    response = await api.session.post(api.url + TX, data=b"x", skip_auto_headers={"Content-Type"})
    await _error(response, 415, "unsupported_media_type")
    assert api.node.submitted == []


async def test_a_body_over_the_limit_is_refused(serve: ApiFactory) -> None:
    api = await serve(QUDAG_MAX_BODY_BYTES="1024", QUDAG_MAX_TX_BYTES="1024")
    await _error(await api.post(b"x" * 2048), 413, "payload_too_large")
    await _error(await api.post(_batch(b"y" * 1024)), 413, "payload_too_large")
    assert api.node.submitted == []


async def test_a_batch_of_too_many_items_is_refused(serve: ApiFactory) -> None:
    api = await serve(QUDAG_MAX_SUBMIT_TXS="3")
    body = await _error(
        await api.post(_batch(*(bytes([i]) for i in range(4)))), 400, "too_many_transactions"
    )
    assert "limit 3" in body["error"]["message"]
    assert api.node.submitted == []


@pytest.mark.parametrize(
    ("refusal", "status", "code"),
    [
        (InputRejected(Reason.POOL_FULL, "full"), 503, "pool_full"),
        (InputRejected(Reason.OVERSIZE_TRANSACTION, "big"), 400, "oversize_transaction"),
        (StorageFull("no space"), 507, "insufficient_storage"),
    ],
)
async def test_the_nodes_refusals_map_to_statuses(
    serve: ApiFactory, refusal: Exception, status: int, code: str
) -> None:
    api = await serve()
    api.node.refusal = refusal
    response = await api.post(b"tx")
    await _error(response, status, code)
    assert (response.headers.get("Retry-After") == "1") is (status == 503)


# ----------------------------------------------------------------- writes: token, rate


async def test_writes_need_the_token_and_reads_do_not(serve: ApiFactory) -> None:
    api = await serve(QUDAG_API_TOKEN=TOKEN)
    response = await api.post(b"tx")
    await _error(response, 401, "token_required")
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="qudag-node"'
    response = await api.post(b"tx", headers={"Authorization": "Bearer wrong"})
    await _error(response, 401, "bad_token")
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    response = await api.post(b"tx", headers={"Authorization": f"Basic {TOKEN}"})
    await _error(response, 401, "bad_token")
    assert api.node.submitted == []
    async with await api.post(b"tx", headers={"Authorization": f"Bearer {TOKEN}"}) as response:
        assert response.status == 202
    assert api.node.submitted == [[b"tx"]]
    status, _ = await api.get("/api/v1/status")
    assert status == 200


async def test_writes_beyond_the_burst_are_rate_limited(serve: ApiFactory) -> None:
    api = await serve(QUDAG_API_WRITE_RATE="0.01", QUDAG_API_WRITE_BURST="2")
    for tx in (b"1", b"2"):
        async with await api.post(tx) as response:
            assert response.status == 202
    response = await api.post(b"3")
    await _error(response, 429, "rate_limited")
    assert int(response.headers["Retry-After"]) >= 1
    assert api.node.submitted == [[b"1"], [b"2"]]


# ----------------------------------------------------------------- wait=final


async def test_wait_final_answers_final_or_504_with_the_ids(serve: ApiFactory) -> None:
    api = await serve(QUDAG_WAIT_TIMEOUT="30")
    api.node.final = {_tx_id(b"done")}
    async with await api.post(b"done", query="?wait=final&timeout=2.5") as response:
        assert response.status == 200
        assert await response.json() == {"ids": [_tx_id(b"done").hex()], "status": "final"}
    body = await _error(await api.post(b"later", query="?wait=final"), 504, "timeout")
    assert body["ids"] == [_tx_id(b"later").hex()]
    await _error(await api.post(b"capped", query="?wait=final&timeout=99"), 504, "timeout")
    assert api.node.waits == [2.5, 30.0, 30.0]


@pytest.mark.parametrize(
    "query", ["?timeout=5", "?wait=soon", "?wait=final&timeout=0", "?wait=final&timeout=1e3"]
)
async def test_bad_wait_options_are_refused_before_the_node(serve: ApiFactory, query: str) -> None:
    api = await serve()
    await _error(await api.post(b"tx", query=query), 400, "bad_request")
    assert api.node.submitted == []


# ----------------------------------------------------------------- reads


async def test_transactions_by_id(serve: ApiFactory) -> None:
    api = await serve()
    known = _tx_id(b"known")
    vertex = VertexId(b"\x05" * 32)
    api.node.transactions[known] = TxRecord(known, TxState.FINAL, vertex, 9, 5)
    assert await api.get(f"{TX}/{known.hex().upper()}") == (
        200,
        {"id": known.hex(), "status": "final", "vertex": vertex.hex(), "seq": 9},
    )
    status, body = await api.get(f"{TX}/{'0' * 64}")
    assert (status, body["error"]["code"]) == (404, "not_found")
    status, body = await api.get(f"{TX}/abc")
    assert (status, body["error"]["code"]) == (400, "malformed_id")


async def test_vertices_by_id(serve: ApiFactory) -> None:
    api = await serve()
    vid = VertexId(b"\x01" * 32)
    parent = VertexId(b"\x02" * 32)
    tx = TxId(b"\x03" * 32)
    api.node.vertices[vid] = VertexRecord(
        vid, 4, ID_A, 1_700_000_000_000, (parent,), (tx,), b"\x06" * 9, 2, b"\x04" * 64, True, None
    )
    status, body = await api.get(f"/api/v1/vertices/{vid.hex()}")
    assert status == 200
    assert body == {
        "id": vid.hex(),
        "round": 4,
        "author": ID_A.hex(),
        "timestamp_ms": 1_700_000_000_000,
        "parents": [parent.hex()],
        "transactions": [tx.hex()],
        "header": (b"\x06" * 9).hex(),
        "scheme": 2,
        "signature": (b"\x04" * 64).hex(),
        "signing": {"scheme": "mldsa65-ed25519", "context": "qudag/vertex", "message": vid.hex()},
        "certificate": None,
        "votes": [],
        "vote_signing": {
            "scheme": "mldsa65-ed25519",
            "context": "qudag/vote",
            "message": vid.hex(),
        },
        "ordered": True,
    }
    _keys_match_schema(body, {"$ref": "#/components/schemas/Vertex"})
    status, body = await api.get(f"/api/v1/vertices/{'f' * 64}")
    assert (status, body["error"]["code"]) == (404, "not_found")


async def test_a_vertex_shows_its_votes_and_what_they_sign(serve: ApiFactory) -> None:
    """With the genesis alone, a client checks each vote from what the vertex shows."""
    api = await serve()
    vid = VertexId(b"\x01" * 32)
    votes = {0: SIGNER_A.sign(Purpose.VOTE, vid), 1: SIGNER_B.sign(Purpose.VOTE, vid)}
    certificate = make_certificate(Scheme.MLDSA65_ED25519, votes).encode()
    signature = SIGNER_A.sign(Purpose.VERTEX, vid)
    api.node.vertices[vid] = VertexRecord(
        vid, 4, ID_A, 1, (), (), b"\x06", 2, signature, False, certificate
    )
    _, body = await api.get(f"/api/v1/vertices/{vid.hex()}")
    _keys_match_schema(body, {"$ref": "#/components/schemas/Vertex"})
    assert body["certificate"] == certificate.hex()
    assert body["votes"] == [
        {"validator": 0, "signature": votes[0].hex()},
        {"validator": 1, "signature": votes[1].hex()},
    ]
    _, genesis = await api.get("/api/v1/genesis")
    keys = [PublicKey(bytes.fromhex(v["public_key"])) for v in genesis["validators"]]

    def verifies(signing: dict[str, str], key: PublicKey, signature: str) -> bool:
        scheme = Scheme.from_label(signing["scheme"])
        purpose = Purpose(signing["context"].encode())
        message = bytes.fromhex(signing["message"])
        return verify_check(SignatureCheck(scheme, purpose, key, message, bytes.fromhex(signature)))

    assert verifies(body["signing"], keys[0], body["signature"])
    assert all(
        verifies(body["vote_signing"], keys[v["validator"]], v["signature"]) for v in body["votes"]
    )
    # what one purpose signs does not pass for the other
    assert not verifies(body["vote_signing"], keys[0], body["signature"])


async def test_an_ed25519_vertex_signs_its_id_with_no_context(serve: ApiFactory) -> None:
    api = await serve()
    vid = VertexId(b"\x01" * 32)
    api.node.vertices[vid] = VertexRecord(
        vid, 1, ID_A, 1, (), (), b"\x06", 1, b"\x04" * 64, False, None
    )
    _, body = await api.get(f"/api/v1/vertices/{vid.hex()}")
    expected = {"scheme": "ed25519", "context": None, "message": vid.hex()}
    assert (body["scheme"], body["signing"], body["vote_signing"]) == (1, expected, expected)
    _keys_match_schema(body, {"$ref": "#/components/schemas/Vertex"})


def _certified_checkpoint(number: int) -> CheckpointRecord:
    window = (VertexId(b"\x0b" * 32), VertexId(b"\x0a" * 32))
    cp = Checkpoint(
        GENESIS.hash,
        number,
        4 * number,
        VertexId(b"\x0c" * 32),
        1_700_000_000_000,
        2 * number,
        b"\x0d" * 32,
        len(window),
        window_root(window),
    )
    votes = {0: SIGNER_A.sign(Purpose.CHECKPOINT, cp.digest)}
    votes[1] = SIGNER_B.sign(Purpose.CHECKPOINT, cp.digest)
    return CheckpointRecord(
        CertifiedCheckpoint(cp, make_certificate(GENESIS.scheme, votes)), tuple(sorted(window))
    )


async def test_a_certified_checkpoint_shows_what_verifies_it_with_the_genesis_alone(
    serve: ApiFactory,
) -> None:
    api = await serve()
    api.node.checkpoints = {n: _certified_checkpoint(n) for n in (1, 2)}
    status, latest = await api.get("/api/v1/checkpoints/latest")
    assert status == 200
    _keys_match_schema(latest, {"$ref": "#/components/schemas/Checkpoint"})
    assert latest == (await api.get("/api/v1/checkpoints/2"))[1]
    _, first = await api.get("/api/v1/checkpoints/1")
    assert (first["number"], first["round"], first["log_length"]) == (1, 4, 2)
    record = api.node.checkpoints[1].certified
    assert first["encoding"] == record.checkpoint.encode().hex()
    assert first["certificate"] == record.certificate.encode().hex()
    assert first["window"] == sorted(first["window"])
    # from the document and the genesis alone: the encoding decodes to the fields, its
    # digest is what every signature signs, the window matches its root
    encoding = bytes.fromhex(first["encoding"])
    assert decode_checkpoint(encoding).number == 1
    digest = blake2b(encoding, digest_size=32, person=b"qudag:checkpoint").digest()
    assert first["digest"] == digest.hex() == first["signing"]["message"]
    assert first["signing"] == {
        "scheme": "mldsa65-ed25519",
        "context": "qudag/checkpoint",
        "message": digest.hex(),
    }
    ids = b"".join(bytes.fromhex(i) for i in first["window"])
    root = blake2b(ids, digest_size=32, person=b"qudag:window").digest()
    assert first["window_root"] == root.hex()
    _, genesis = await api.get("/api/v1/genesis")
    keys = [PublicKey(bytes.fromhex(v["public_key"])) for v in genesis["validators"]]
    assert [(s["validator"], s["name"], s["node_id"]) for s in first["signatures"]] == [
        (0, "v1", ID_A.hex()),
        (1, "v2", ID_B.hex()),
    ]
    for signed in first["signatures"]:
        check = SignatureCheck(
            Scheme.MLDSA65_ED25519,
            Purpose.CHECKPOINT,
            keys[signed["validator"]],
            digest,
            bytes.fromhex(signed["signature"]),
        )
        assert verify_check(check)
        assert not verify_check(check._replace(purpose=Purpose.VOTE))


async def test_a_checkpoint_never_certified_here_is_not_found_and_a_bad_number_refused(
    serve: ApiFactory,
) -> None:
    api = await serve()
    for path in ("/api/v1/checkpoints/latest", "/api/v1/checkpoints/3"):
        status, body = await api.get(path)
        assert (status, body["error"]["code"]) == (404, "not_found")
    api.node.checkpoints = {1: _certified_checkpoint(1)}
    assert (await api.get("/api/v1/checkpoints/3"))[0] == 404
    for bad in ("0", "abc", "-1", "+1", "1" * 20, "9223372036854775808"):
        status, body = await api.get(f"/api/v1/checkpoints/{bad}")
        assert (status, body["error"]["code"]) == (400, "bad_request"), bad


async def test_the_log_pages_with_the_head_of_the_status(serve: ApiFactory) -> None:
    api = await serve()
    api.node.entries = [
        LogRecord(seq, TxId(bytes([seq]) * 32), VertexId(b"\x0a" * 32), bytes([seq + 1]) * 32)
        for seq in (1, 2, 3)
    ]
    status, body = await api.get("/api/v1/log?from=2&limit=1")
    assert status == 200
    assert body == {
        "entries": [
            {
                "seq": 2,
                "tx_id": (b"\x02" * 32).hex(),
                "vertex": (b"\x0a" * 32).hex(),
                "hash": (b"\x03" * 32).hex(),
            }
        ],
        "length": 3,
        "hash": (b"\x09" * 32).hex(),
    }
    assert (await api.get("/api/v1/log"))[0] == 200
    assert api.node.pages == [(2, 1), (1, 100)]
    for query in ("from=0", "limit=0", "limit=1001", "from=-1", "limit=1.5", "from=%EF%BC%91"):
        status, body = await api.get(f"/api/v1/log?{query}")
        assert (status, body["error"]["code"]) == (400, "bad_request"), query


async def test_the_dag_window_lowest_round_first_with_its_committed_leaders(
    serve: ApiFactory,
) -> None:
    api = await serve()
    a2, b2, a1 = VertexId(b"\x0a" * 32), VertexId(b"\x0b" * 32), VertexId(b"\x0c" * 32)
    api.node.window = DagWindow(
        (
            DagVertexRecord(b2, 2, ID_B, (a1,), False, False),
            DagVertexRecord(a2, 2, ID_A, (a1,), True, True),
            DagVertexRecord(a1, 1, ID_A, (), True, True),
        ),
        (a2,),
    )
    status, body = await api.get("/api/v1/dag?rounds=2")
    assert status == 200
    first, *_ = sorted([ID_A.hex(), ID_B.hex()])
    vertices = body["vertices"]
    assert [(v["round"], v["author"]) for v in vertices] == [
        (1, ID_A.hex()),
        (2, first),
        (2, ID_B.hex() if first == ID_A.hex() else ID_A.hex()),
    ]
    assert vertices[0] == {
        "id": a1.hex(),
        "round": 1,
        "author": ID_A.hex(),
        "parents": [],
        "certified": True,
        "ordered": True,
    }
    by_id = {v["id"]: v for v in vertices}
    assert by_id[b2.hex()]["parents"] == [a1.hex()]
    assert (by_id[b2.hex()]["certified"], by_id[b2.hex()]["ordered"]) == (False, False)
    assert body["committed_leaders"] == [a2.hex()]
    _keys_match_schema(body, {"$ref": "#/components/schemas/DagWindow"})
    assert (await api.get("/api/v1/dag"))[0] == 200
    assert api.node.dag_rounds == [2, 10]
    for query in ("rounds=0", "rounds=51", "rounds=x", "rounds=-1"):
        status, body = await api.get(f"/api/v1/dag?{query}")
        assert (status, body["error"]["code"]) == (400, "bad_request"), query


async def test_the_explorer_is_served_from_the_package_with_a_strict_policy(
    serve: ApiFactory,
) -> None:
    api = await serve()
    async with api.session.get(api.url + "/", allow_redirects=False) as response:
        assert response.status == 302
        assert response.headers["Location"] == "/explorer"
    files = ROOT / "qudag_node" / "explorer"
    for path, name, content_type in (
        ("/explorer", "index.html", "text/html"),
        ("/explorer/explorer.js", "explorer.js", "text/javascript"),
        ("/explorer/explorer.css", "explorer.css", "text/css"),
    ):
        async with api.session.get(api.url + path) as response:
            assert response.status == 200, path
            assert response.content_type == content_type
            assert await response.read() == (files / name).read_bytes()
            policy = response.headers["Content-Security-Policy"]
            assert response.headers["X-Content-Type-Options"] == "nosniff"
        directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
        assert directives["default-src"] == "'none'"
        assert directives["script-src"] == directives["connect-src"] == "'self'"
        assert "unsafe" not in policy
    page = (files / "index.html").read_text()
    script = (files / "explorer.js").read_text()
    # Nothing from elsewhere, no inline script: the policy would refuse both.
    assert "http://" not in page + script.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in page + script
    assert "<script>" not in page
    assert page.count("<script ") == 1
    # Relative URLs only: the page works behind any proxy, against any node.
    urls = re.findall(r'(?:getJson|fetch|EventSource)\(\s*[`"]([^`"]*)|href: `([^`]*)', script)
    assert {u for pair in urls for u in pair if u} >= {"api/v1/status", "metrics"}
    assert [u for pair in urls for u in pair if u.startswith(("/", "http"))] == []


async def test_the_log_below_the_base_is_gone_not_missing(serve: ApiFactory) -> None:
    api = await serve()
    api.node.log_base = 2
    api.node.entries = [
        LogRecord(3, TxId(b"\x03" * 32), VertexId(b"\x0a" * 32), b"\x04" * 32),
    ]
    for query in ("", "?from=1", "?from=2&limit=5"):
        status, body = await api.get(f"/api/v1/log{query}")
        assert (status, body["error"]["code"], body["base"]) == (410, "pruned", 2), query
    status, body = await api.get("/api/v1/log?from=3")
    assert status == 200
    assert [e["seq"] for e in body["entries"]] == [3]


async def test_a_stream_from_below_the_base_is_gone_and_bad_starts_are_refused(
    serve: ApiFactory,
) -> None:
    api = await serve()
    api.node.log_base = 2
    for query, headers in (("?from=2", {}), ("", {"Last-Event-ID": "1"})):
        async with api.session.get(f"{api.url}/api/v1/stream{query}", headers=headers) as r:
            body = await r.json()
            assert (r.status, body["error"]["code"], body["base"]) == (410, "pruned", 2), query
    for query, headers in (
        ("?from=0", {}),
        ("?events=dag", {}),
        ("", {"Last-Event-ID": "x1"}),
        ("", {"Last-Event-ID": "-1"}),
    ):
        async with api.session.get(f"{api.url}/api/v1/stream{query}", headers=headers) as r:
            assert r.status == 400, (query, headers)
            assert (await r.json())["error"]["code"] == "bad_request"


async def test_what_was_pruned_answers_410_and_unknown_ids_say_what_is_held(
    serve: ApiFactory,
) -> None:
    api = await serve()
    held = RetentionInfo("1000rounds", "2h", HeldRange(oldest_round=900, oldest_log_position=51))
    api.node.current = replace(api.node.current, retention=held)
    api.node.log_base = 50
    api.node.entries = [
        LogRecord(51, TxId(b"\x01" * 32), None, b"\x02" * 32),
    ]
    status, body = await api.get("/api/v1/log?from=50")
    assert status == 410
    assert body["error"]["code"] == "pruned"
    assert "51" in body["error"]["message"]
    status, body = await api.get("/api/v1/log?from=51")
    assert status == 200
    assert body["entries"][0]["vertex"] is None
    _keys_match_schema(body, {"$ref": "#/components/schemas/LogPage"})
    for kind in ("transactions", "vertices"):
        status, body = await api.get(f"/api/v1/{kind}/{'ab' * 32}")
        assert (status, body["error"]["code"]) == (404, "not_found")
        assert "from round 900 and the log from position 51" in body["error"]["message"]
    _, doc = await api.get("/api/v1/status")
    assert doc["retention"] == {
        "dag": "1000rounds",
        "transactions": "2h",
        "oldest_round": 900,
        "oldest_log_position": 51,
    }


async def test_evidence(serve: ApiFactory) -> None:
    api = await serve()
    api.node.equivocations = [EvidenceRecord(ID_B, 7, b"\xee\xff")]
    assert await api.get("/api/v1/evidence?limit=5") == (
        200,
        {"equivocations": [{"author": ID_B.hex(), "round": 7, "evidence": "eeff"}]},
    )
    status, body = await api.get("/api/v1/evidence?limit=0")
    assert (status, body["error"]["code"]) == (400, "bad_request")


# ----------------------------------------------------------------- status and peers


async def test_the_status_document(serve: ApiFactory) -> None:
    api = await serve()
    status, doc = await api.get("/api/v1/status")
    assert status == 200
    assert doc == {
        "node": {
            "id": "node1",
            "version": __version__,
            "role": "validator",
            "node_id": ID_A.hex(),
            "public_key": KEY_A.hex(),
            "uptime_seconds": 12.346,
            "platform": {"region": "ams"},
            "peer_transport": "tls",
            "openssl": "OpenSSL 3.5.4 30 Sep 2025",
        },
        "network": {
            "id": "testnet",
            "mode": "committee",
            "genesis": GENESIS.hash.hex(),
            "scheme": "mldsa65-ed25519",
            "validators": [
                {"name": "v1", "node_id": ID_A.hex(), "public_key": KEY_A.hex()},
                {"name": "v2", "node_id": ID_B.hex(), "public_key": KEY_B.hex()},
            ],
            "f": 0,
            "quorum": 2,
        },
        "dag": {
            "round": 5,
            "highest_round": 6,
            "vertices": 11,
            "committed_round": 4,
            "window": 50,
            "buffered": 1,
            "buffer_dropped": 0,
            "fetching": 2,
        },
        "log": {"length": 3, "hash": (b"\x09" * 32).hex()},
        "transactions": {"pending": 7, "in_flight": 8},
        "p2p": {
            "peers": 1,
            "port": 7000,
            "quorum": {
                "can_finalize": True,
                "validators_linked": 2,
                "needed": 2,
                "since": "2026-01-02T03:04:05+00:00",
                "for_seconds": 61.235,
            },
        },
        "sync": {
            "catching_up": False,
            "gap_rounds": 0,
            "in_step": True,
            "detail": "in step",
            "state_sync": {"enabled": True, "active": False, "done": 0, "last_seconds": None},
            "backfill": {"enabled": True, "active": False, "base": 0, "entries": 0},
        },
        "checkpoint": {"number": 1, "round": 4, "log_length": 2},
        "retention": {
            "dag": "archive",
            "transactions": "archive",
            "oldest_round": 1,
            "oldest_log_position": 1,
        },
    }
    _keys_match_schema(doc, {"$ref": "#/components/schemas/Status"})


async def test_an_observer_without_a_peer_port_has_null_quorum_and_port(
    serve: ApiFactory,
) -> None:
    api = await serve()
    api.node.current = replace(api.node.current, p2p=P2pInfo(0, None, None), checkpoint=None)
    _, doc = await api.get("/api/v1/status")
    assert doc["p2p"] == {"peers": 0, "port": None, "quorum": None}
    assert doc["checkpoint"] is None
    _keys_match_schema(doc, {"$ref": "#/components/schemas/Status"})


async def test_peers_show_a_position_only_when_one_was_told(serve: ApiFactory) -> None:
    api = await serve()
    linked = PeerView(
        "v2", ID_B.hex(), "10.0.0.2:7000", "validator", "connected", "outbound", 0.5, 0, None
    )
    api.node.peer_views = [
        replace(
            linked,
            position=PeerPosition(6, 4, 3),
            transport="tls",
            tls=PeerTls("TLSv1.3", "TLS_AES_256_GCM_SHA384", "X25519MLKEM768"),
        ),
        PeerView(None, None, "10.0.0.3:7000", None, "backoff", None, None, 2, "refused"),
    ]
    status, doc = await api.get("/api/v1/peers")
    assert status == 200
    assert doc == {
        "peers": [
            {
                "name": "v2",
                "node_id": ID_B.hex(),
                "address": "10.0.0.2:7000",
                "role": "validator",
                "state": "connected",
                "direction": "outbound",
                "last_seen_seconds": 0.5,
                "failures": 0,
                "last_error": None,
                "transport": "tls",
                "tls": {
                    "version": "TLSv1.3",
                    "cipher": "TLS_AES_256_GCM_SHA384",
                    "group": "X25519MLKEM768",
                },
                "highest_round": 6,
                "committed_round": 4,
                "log_length": 3,
            },
            {
                "name": None,
                "node_id": None,
                "address": "10.0.0.3:7000",
                "role": None,
                "state": "backoff",
                "direction": None,
                "last_seen_seconds": None,
                "failures": 2,
                "last_error": "refused",
                "transport": None,
                "tls": None,
            },
        ]
    }
    _keys_match_schema(doc, {"$ref": "#/components/schemas/Peers"})


async def test_the_genesis_document_holds_what_verifying_needs(serve: ApiFactory) -> None:
    api = await serve()
    status, doc = await api.get("/api/v1/genesis")
    assert status == 200
    assert doc == {
        "network_id": "testnet",
        "scheme": "mldsa65-ed25519",
        "validators": [
            {"name": "v1", "public_key": KEY_A.hex(), "id": ID_A.hex()},
            {"name": "v2", "public_key": KEY_B.hex(), "id": ID_B.hex()},
        ],
        "hash": GENESIS.hash.hex(),
        "encoding": GENESIS.encode().hex(),
    }
    assert Genesis.decode(bytes.fromhex(doc["encoding"])) == GENESIS
    _keys_match_schema(doc, {"$ref": "#/components/schemas/Genesis"})


async def test_an_ed25519_genesis_document_keeps_its_version_1_encoding(
    serve: ApiFactory,
) -> None:
    api = await serve()
    key = PublicKey(bytes(range(32)))
    api.node.network = Genesis("old-net", (Validator("v1", key),))
    _, doc = await api.get("/api/v1/genesis")
    assert (doc["scheme"], doc["validators"]) == (
        "ed25519",
        [{"name": "v1", "public_key": key.hex(), "id": key.hex()}],
    )
    assert doc["encoding"].startswith("01")
    _keys_match_schema(doc, {"$ref": "#/components/schemas/Genesis"})


# ----------------------------------------------------------------- health, ready, others


async def test_health_is_503_when_a_check_fails(serve: ApiFactory) -> None:
    api = await serve()
    assert await api.get("/health") == (
        200,
        {"status": "ok", "checks": {"event_loop": {"ok": True, "detail": "answering"}}},
    )
    api.node.live = [Check("event_loop", True, "answering"), Check("database", False, "Timeout")]
    status, body = await api.get("/health")
    assert (status, body["status"]) == (503, "failing")
    assert body["checks"]["database"] == {"ok": False, "detail": "Timeout"}


async def test_ready_is_503_with_the_failing_checks_as_reasons(serve: ApiFactory) -> None:
    api = await serve()
    status, body = await api.get("/ready")
    assert (status, body["status"]) == (200, "ready")
    assert "reasons" not in body
    api.node.ready = [
        Check("started", True, "running"),
        Check("disk", False, "1 MiB free, need 64 MiB"),
    ]
    status, body = await api.get("/ready")
    assert status == 503
    assert body["status"] == "not_ready"
    assert body["reasons"] == ["disk: 1 MiB free, need 64 MiB"]
    assert body["checks"]["disk"]["ok"] is False


async def test_unknown_routes_and_methods_answer_the_error_envelope(serve: ApiFactory) -> None:
    api = await serve()
    await _error(await api.session.get(api.url + "/nowhere"), 404, "not_found")
    response = await api.session.delete(api.url + TX)
    await _error(response, 405, "method_not_allowed")
    assert response.headers["Allow"] == "POST"


async def test_metrics_and_the_description_are_served(serve: ApiFactory) -> None:
    api = await serve()
    await api.get("/api/v1/status")
    async with api.session.get(api.url + "/metrics") as response:
        assert response.status == 200
        assert response.content_type == "text/plain"
        assert 'route="/api/v1/status"' in await response.text()
    async with api.session.get(api.url + "/api/v1/openapi.json") as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        assert (await response.json())["openapi"].startswith("3.1")
