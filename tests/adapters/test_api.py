"""The HTTP API against a real in-process node over real sockets."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from hashlib import blake2b
from pathlib import Path
from typing import Any

import aiohttp
import nacl.signing
import pytest
from multidict import CIMultiDictProxy
from prometheus_client.parser import text_string_to_metric_families

from qudag_node.core.certificate import decode_certificate
from qudag_node.core.crypto import (
    PRIVATE_KEY_SIZES,
    Purpose,
    Scheme,
    SignatureCheck,
    Signer,
    verify_check,
)
from qudag_node.core.events import EquivocationDetected
from qudag_node.core.evidence import decode_equivocation
from qudag_node.core.types import VertexId
from qudag_node.store import Store
from tests.conftest import NodeFactory, NodeHandle
from tests.core.support import NOW, PEER, C, drain, moment, proposal
from tests.independent import verifier
from tests.independent.verifier import Refused

TX = "/api/v1/transactions"
EVIDENCE = "/api/v1/evidence"
HEX_ZERO = "0" * 64
#: Series of the consensus, by family name (a counter's family drops ``_total``).
CONSENSUS_SERIES = (
    "qudag_leaders_skipped",
    "qudag_finality_seconds",
    "qudag_equivocations",
    "qudag_vertices_rejected",
    "qudag_vertices_buffered",
    "qudag_vertices_buffer_dropped",
    "qudag_peers_connected",
)


def _tx_id(data: bytes) -> str:
    return blake2b(data, digest_size=32, person=b"qudag:tx").hexdigest()


def _batch(*txs: bytes) -> dict[str, list[str]]:
    return {"transactions": [base64.b64encode(t).decode() for t in txs]}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client, closed at teardown."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
        yield s


async def _json(response: aiohttp.ClientResponse) -> Any:
    assert response.content_type == "application/json", await response.text()
    return await response.json()


async def _expect_error(
    request: Awaitable[aiohttp.ClientResponse], status: int, code: str
) -> tuple[dict[str, Any], CIMultiDictProxy[str]]:
    """The JSON error body and headers of ``request``, after checking status and code."""
    async with await request as response:
        body = await _json(response)
        assert response.status == status, body
    assert set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    return dict(body), response.headers


async def _post(
    session: aiohttp.ClientSession, url: str, data: bytes, content_type: str
) -> aiohttp.ClientResponse:
    return await session.post(url, data=data, headers={"Content-Type": content_type})


async def _submit(
    session: aiohttp.ClientSession, node: NodeHandle, *txs: bytes, query: str = ""
) -> tuple[int, Any]:
    url = f"{node.url}{TX}{query}"
    async with session.post(url, json=_batch(*txs)) as response:
        return response.status, await _json(response)


async def _get(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as response:
        body = await _json(response)
        assert response.status == 200, body
        return body


async def _until(
    check: Callable[[], Awaitable[bool]], timeout: float = 10.0, what: str = "condition"
) -> None:
    """Poll ``check`` until it holds, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"{what} did not hold within {timeout} s"
        await asyncio.sleep(0.01)


# ----------------------------------------------------------------- submit


async def test_submit_one_octet_stream_transaction(
    node_factory: NodeFactory, session: aiohttp.ClientSession
) -> None:
    node = await node_factory()
    data = b"hello qudag"
    response = await _post(session, f"{node.url}{TX}", data, "application/octet-stream")
    async with response:
        assert response.status == 202
        assert await _json(response) == {"ids": [_tx_id(data)]}
    record = await _get(session, f"{node.url}{TX}/{_tx_id(data)}")
    assert record["id"] == _tx_id(data)
    assert record["status"] in {"pending", "included", "final"}
    assert set(record) == {"id", "status", "vertex", "seq"}


async def test_submit_json_batch_and_resubmission_is_idempotent(
    node_factory: NodeFactory, session: aiohttp.ClientSession
) -> None:
    node = await node_factory()
    txs = (b"one", b"two", b"three")
    expected = [_tx_id(t) for t in txs]
    assert await _submit(session, node, *txs) == (202, {"ids": expected})
    assert await _submit(session, node, *txs) == (202, {"ids": expected})
    for tx_id in expected:
        record = await _get(session, f"{node.url}{TX}/{tx_id}")
        assert record["id"] == tx_id


@pytest.mark.parametrize("scheme", list(Scheme), ids=lambda s: s.label)
async def test_wait_final_then_transaction_and_vertex_are_final(
    node_factory: NodeFactory, session: aiohttp.ClientSession, scheme: Scheme
) -> None:
    """Whatever its scheme, a node's vertex carries what verifying it takes: its header,
    its signature and its certificate's votes, and what each of them signs."""
    key = Signer(bytes([7]) * PRIVATE_KEY_SIZES[scheme])
    node = await node_factory(NODE_PRIVATE_KEY=key.seed().hex())
    data = b"wait for me"
    status, body = await _submit(session, node, data, query="?wait=final&timeout=10")
    assert (status, body) == (200, {"ids": [_tx_id(data)], "status": "final"})

    record = await _get(session, f"{node.url}{TX}/{_tx_id(data)}")
    assert record["status"] == "final"
    assert isinstance(record["seq"], int)
    assert record["seq"] >= 1
    assert isinstance(record["vertex"], str)

    vertex = await _get(session, f"{node.url}/api/v1/vertices/{record['vertex']}")
    assert set(vertex) == {
        "id",
        "round",
        "author",
        "timestamp_ms",
        "parents",
        "transactions",
        "header",
        "scheme",
        "signature",
        "signing",
        "certificate",
        "votes",
        "vote_signing",
        "ordered",
    }
    assert vertex["id"] == record["vertex"]
    assert (
        vertex["id"]
        == blake2b(
            bytes.fromhex(vertex["header"]), digest_size=32, person=b"qudag:vertex"
        ).hexdigest()
    )
    assert _tx_id(data) in vertex["transactions"]
    assert vertex["ordered"] is True
    # a one-validator network: the certificate is the author's own vote (voter 0)
    cert = decode_certificate(bytes.fromhex(vertex["certificate"]))
    assert cert.voters == (0,)
    assert vertex["votes"] == [{"validator": 0, "signature": cert.signatures[0].hex()}]
    assert vertex["round"] >= 1
    assert vertex["timestamp_ms"] > 0
    assert vertex["scheme"] == scheme
    assert all(len(p) == 64 for p in vertex["parents"])
    status_doc = await _get(session, f"{node.url}/api/v1/status")
    assert status_doc["network"]["scheme"] == scheme.label
    assert vertex["author"] == status_doc["node"]["node_id"] == key.node_id.hex()
    assert status_doc["node"]["public_key"] == key.public_key.hex()
    # the author's signature over the vertex id, and its vote, verify as they say
    for signing, signature in (
        (vertex["signing"], vertex["signature"]),
        (vertex["vote_signing"], vertex["votes"][0]["signature"]),
    ):
        assert signing["scheme"] == scheme.label
        assert signing["message"] == vertex["id"]
        # no context: Ed25519 signs the message itself, whatever the purpose
        purpose = Purpose(signing["context"].encode()) if signing["context"] else Purpose.VOTE
        check = SignatureCheck(
            scheme,
            purpose,
            key.public_key,
            bytes.fromhex(signing["message"]),
            bytes.fromhex(signature),
        )
        assert verify_check(check)
    if scheme is Scheme.ED25519:  # as before schemes were named: the key is the author
        assert vertex["signing"]["context"] is None
        nacl.signing.VerifyKey(bytes.fromhex(vertex["author"])).verify(
            bytes.fromhex(vertex["id"]), bytes.fromhex(vertex["signature"])
        )
    else:  # each purpose has its own context, so the vote is not the vertex signature
        assert (vertex["signing"]["context"], vertex["vote_signing"]["context"]) == (
            "qudag/vertex",
            "qudag/vote",
        )
        assert vertex["votes"][0]["signature"] != vertex["signature"]


async def test_wait_final_times_out_with_the_transaction_stored(
    node_factory: NodeFactory, session: aiohttp.ClientSession
) -> None:
    node = await node_factory(QUDAG_MIN_ROUND_INTERVAL="5")
    data = b"slow rounds"
    url = f"{node.url}{TX}?wait=final&timeout=0.2"
    started = time.monotonic()
    body, _ = await _expect_error(
        _post(session, url, data, "application/octet-stream"), 504, "timeout"
    )
    assert time.monotonic() - started < 4
    assert body["ids"] == [_tx_id(data)]
    record = await _get(session, f"{node.url}{TX}/{_tx_id(data)}")
    assert record["status"] in {"pending", "included"}


async def test_status_moves_from_pending_to_included(
    node_factory: NodeFactory, session: aiohttp.ClientSession
) -> None:
    """The first transaction is proposed at once; the next waits out the round interval."""
    node = await node_factory(QUDAG_MIN_ROUND_INTERVAL="30")
    assert (await _submit(session, node, b"first"))[0] == 202
    assert (await _submit(session, node, b"second"))[0] == 202
    first = await _get(session, f"{node.url}{TX}/{_tx_id(b'first')}")
    second = await _get(session, f"{node.url}{TX}/{_tx_id(b'second')}")
    assert (first["status"], first["seq"]) == ("included", None)
    assert (second["status"], second["vertex"], second["seq"]) == ("pending", None, None)
    vertex = await _get(session, f"{node.url}/api/v1/vertices/{first['vertex']}")
    assert vertex["transactions"] == [_tx_id(b"first")]
    assert vertex["round"] == 1
    assert vertex["ordered"] is False


@pytest.mark.parametrize(
    "query",
    [
        "?wait=final&timeout=abc",
        "?wait=final&timeout=0",
        "?wait=final&timeout=-1",
        "?wait=final&timeout=nan",
        "?wait=final&timeout=inf",
        "?wait=soon",
        "?timeout=1",
    ],
)
async def test_invalid_wait_options_are_refused_before_storing(
    node_factory: NodeFactory, session: aiohttp.ClientSession, query: str
) -> None:
    node = await node_factory()
    data = b"never stored"
    await _expect_error(
        _post(session, f"{node.url}{TX}{query}", data, "application/octet-stream"),
        400,
        "bad_request",
    )
    await _expect_error(session.get(f"{node.url}{TX}/{_tx_id(data)}"), 404, "not_found")


# -------------------------------------------------------------------- log


async def test_log_pages_in_order_with_a_chained_hash(
    node_factory: NodeFactory, session: aiohttp.ClientSession
) -> None:
    node = await node_factory()
    txs = [f"entry {i}".encode() for i in range(5)]
    status, _ = await _submit(session, node, *txs, query="?wait=final")
    assert status == 200

    entries: list[dict[str, Any]] = []
    for start in (1, 3, 5):
        page = await _get(session, f"{node.url}/api/v1/log?from={start}&limit=2")
        assert page["length"] == 5
        assert [e["seq"] for e in page["entries"]] == list(range(start, min(start + 2, 6)))
        entries += page["entries"]
    assert len(entries) == 5
    assert sorted(e["tx_id"] for e in entries) == sorted(_tx_id(t) for t in txs)

    genesis = bytes.fromhex(
        (await _get(session, f"{node.url}/api/v1/status"))["network"]["genesis"]
    )
    previous = blake2b(genesis, digest_size=32, person=b"qudag:log").digest()
    for entry in entries:
        expected = blake2b(
            previous + bytes.fromhex(entry["tx_id"]), digest_size=32, person=b"qudag:log"
        ).digest()
        assert entry["hash"] == expected.hex()
        previous = expected
    assert page["hash"] == previous.hex()

    whole = await _get(session, f"{node.url}/api/v1/log")
    assert whole["entries"] == entries
    beyond = await _get(session, f"{node.url}/api/v1/log?from=6")
    assert beyond["entries"] == []
    assert beyond["length"] == 5


@pytest.mark.parametrize(
    "query", ["from=0", "from=-1", "from=x", "limit=0", "limit=1001", "limit=1.5"]
)
async def test_log_refuses_bad_paging(
    node_factory: NodeFactory, session: aiohttp.ClientSession, query: str
) -> None:
    node = await node_factory()
    await _expect_error(session.get(f"{node.url}/api/v1/log?{query}"), 400, "bad_request")


# --------------------------------------------------------------- evidence


async def test_a_fresh_node_holds_no_evidence(
    node_factory: NodeFactory, session: aiohttp.ClientSession
) -> None:
    node = await node_factory()
    assert await _get(session, f"{node.url}{EVIDENCE}") == {"equivocations": []}
    assert await _get(session, f"{node.url}{EVIDENCE}?limit=1000") == {"equivocations": []}


@pytest.mark.parametrize("query", ["limit=0", "limit=abc", "limit=-1", "limit=1001", "limit="])
async def test_evidence_refuses_a_bad_limit(
    node_factory: NodeFactory, session: aiohttp.ClientSession, query: str
) -> None:
    node = await node_factory()
    body, _ = await _expect_error(session.get(f"{node.url}{EVIDENCE}?{query}"), 400, "bad_request")
    assert "limit" in body["error"]["message"]


def _caught(author: int, round_: int, parents: list[VertexId]) -> EquivocationDetected:
    """What an engine reports when validator ``author`` proposes two vertices for
    ``round_`` of the committee network."""
    observer = C.observer()
    for payload in (b"one", b"two"):
        vertex = C.vertex(author, round_, parents, txs=[payload])
        observer.receive_message(PEER, proposal(vertex), moment(NOW))
    [event] = [e for e in drain(observer) if isinstance(e, EquivocationDetected)]
    return event


def _committee_settings(**more: str) -> dict[str, str]:
    """Settings that make a node part of the committee network :data:`C`."""
    validators = ",".join(f"{v.name}={v.public_key.hex()}" for v in C.genesis.validators)
    return {
        "QUDAG_NETWORK_ID": C.genesis.network_id,
        "QUDAG_VALIDATORS": validators,
        "PEER_AUTH_TOKEN": "58d2f0a4c6e81b3d97a5f1c3e0b2d4a6f8193e5c7a0b2d4f6e8c1a3b5d7f9e02",
        **more,
    }


async def test_a_validator_without_peers_waits(
    node_factory: NodeFactory, session: aiohttp.ClientSession
) -> None:
    """Validator 0 of four, alone: it stores the transaction but proposes nothing, and
    is not ready, until a peer tells it where the network stands."""
    node = await node_factory(**_committee_settings(NODE_PRIVATE_KEY=C.signers[0].seed().hex()))
    assert (await _submit(session, node, b"alone"))[0] == 202
    assert (await _get(session, f"{node.url}{TX}/{_tx_id(b'alone')}"))["status"] == "pending"
    async with session.get(f"{node.url}/ready") as resp:
        assert resp.status == 503
        doc = await resp.json()
    assert doc["checks"]["sync"] == {"ok": False, "detail": "no peer has told us its position yet"}
    status = await _get(session, f"{node.url}/api/v1/status")
    assert status["dag"]["round"] == 0
    assert status["sync"]["catching_up"] is True
    assert await _get(session, f"{node.url}/api/v1/peers") == {"peers": []}


async def test_a_vertex_without_a_quorum_has_no_certificate(
    node_factory: NodeFactory, session: aiohttp.ClientSession
) -> None:
    """Validators 0 and 1 of four, linked: each proposes round 1, which two votes
    cannot certify (the quorum is three)."""
    other = await node_factory(**_committee_settings(NODE_PRIVATE_KEY=C.signers[1].seed().hex()))
    node = await node_factory(
        **_committee_settings(
            NODE_PRIVATE_KEY=C.signers[0].seed().hex(),
            QUDAG_PEERS=f"127.0.0.1:{other.p2p_port}",
        )
    )

    async def linked() -> bool:
        peers = (await _get(session, f"{node.url}/api/v1/peers"))["peers"]
        return [(p["name"], p["state"]) for p in peers] == [("v1", "connected")]

    await _until(linked, what="the link to validator 1")
    assert (await _submit(session, node, b"alone"))[0] == 202
    url = f"{node.url}{TX}/{_tx_id(b'alone')}"

    async def included() -> bool:
        return bool((await _get(session, url))["status"] == "included")

    await _until(included, what="the transaction in a vertex")
    record = await _get(session, url)
    vertex = await _get(session, f"{node.url}/api/v1/vertices/{record['vertex']}")
    assert vertex["certificate"] is None
    assert vertex["ordered"] is False
    assert (vertex["round"], vertex["author"]) == (1, C.signers[0].public_key.hex())
    assert vertex["transactions"] == [_tx_id(b"alone")]


async def test_evidence_kept_in_the_database_is_served(
    node_factory: NodeFactory, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """An observer of the committee network, whose database already holds evidence."""
    data_dir = tmp_path / "observer"
    data_dir.mkdir()
    earlier = _caught(1, 1, [])
    later = _caught(2, 3, [C.vertex(i, 2).id for i in range(3)])
    store = await Store.open(data_dir, C.genesis)
    try:
        await store.persist([earlier])
        await store.persist([later, earlier])
    finally:
        await store.close()
    node = await node_factory(**_committee_settings(QUDAG_DATA_DIR=str(data_dir)))
    status = await _get(session, f"{node.url}/api/v1/status")
    assert status["network"]["genesis"] == C.genesis.hash.hex()
    assert status["node"]["role"] == "observer"

    body = await _get(session, f"{node.url}{EVIDENCE}")
    assert [(e["author"], e["round"]) for e in body["equivocations"]] == [
        (C.signers[2].public_key.hex(), 3),
        (C.signers[1].public_key.hex(), 1),
    ]
    for entry, caught in zip(body["equivocations"], (later, earlier), strict=True):
        assert set(entry) == {"author", "round", "evidence"}
        assert entry["evidence"] == caught.evidence.encode().hex()
        proof = decode_equivocation(bytes.fromhex(entry["evidence"]), C.genesis)
        assert (proof.author.hex(), proof.round) == (entry["author"], entry["round"])
    latest = await _get(session, f"{node.url}{EVIDENCE}?limit=1")
    assert latest["equivocations"] == body["equivocations"][:1]


# ------------------------------------------------- status, health, metrics


async def test_status_document(node_factory: NodeFactory, session: aiohttp.ClientSession) -> None:
    node = await node_factory()
    doc = await _get(session, f"{node.url}/api/v1/status")
    assert {"id", "version", "role", "public_key"} <= set(doc["node"])
    assert {"id", "genesis", "validators"} <= set(doc["network"])
    assert {"round", "vertices", "committed_round"} <= set(doc["dag"])
    assert set(doc["log"]) >= {"length", "hash"}
    assert "peers" in doc["p2p"]
    assert doc["node"]["id"] == node.settings.node_id
    assert doc["node"]["role"] == "validator"
    assert doc["network"]["id"] == node.settings.effective_network_id
    assert doc["log"]["length"] == 0


async def test_health_and_ready(node_factory: NodeFactory, session: aiohttp.ClientSession) -> None:
    node = await node_factory()
    health = await _get(session, f"{node.url}/health")
    assert health["status"] == "ok"
    assert health["checks"]
    assert all(c["ok"] is True and isinstance(c["detail"], str) for c in health["checks"].values())
    ready = await _get(session, f"{node.url}/ready")
    assert ready["status"] == "ready"
    assert ready["checks"]
    assert all(c["ok"] is True for c in ready["checks"].values())
    assert set(ready["checks"]) == {"started", "disk", "sync"}


async def test_not_ready_when_the_disk_is_nearly_full(
    node_factory: NodeFactory, session: aiohttp.ClientSession
) -> None:
    node = await node_factory(QUDAG_MIN_FREE_DISK_MB=str(1 << 20))  # asks for 1 TiB free
    async with session.get(f"{node.url}/ready") as resp:
        assert resp.status == 503
        doc = await resp.json()
    assert doc["status"] == "not_ready"
    assert [r.split(":")[0] for r in doc["reasons"]] == ["disk"]
    assert doc["checks"]["started"]["ok"] is True
    async with session.get(f"{node.url}/health") as resp:
        assert resp.status == 200  # alive, only not ready


async def test_metrics_endpoint(node_factory: NodeFactory, session: aiohttp.ClientSession) -> None:
    node = await node_factory()
    assert (await _submit(session, node, b"counted"))[0] == 202
    await _get(session, f"{node.url}/api/v1/status")
    await _get(session, f"{node.url}/api/v1/status")
    async with session.get(f"{node.url}/metrics") as response:
        assert response.status == 200
        assert response.content_type == "text/plain"
        text = await response.text()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("qudag_dag_nodes_total", ())] >= 1
    assert samples[("qudag_transactions_total", (("result", "admitted"),))] == 1
    status_requests = (("method", "GET"), ("route", "/api/v1/status"), ("status", "200"))
    assert samples[("qudag_http_requests_total", status_requests)] == 2
    submit_requests = (("method", "POST"), ("route", TX), ("status", "202"))
    assert samples[("qudag_http_requests_total", submit_requests)] == 1


async def test_metrics_endpoint_exposes_the_consensus_series(
    node_factory: NodeFactory, session: aiohttp.ClientSession
) -> None:
    node = await node_factory()
    status, _ = await _submit(session, node, b"timed", query="?wait=final&timeout=10")
    assert status == 200
    async with session.get(f"{node.url}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    for name in CONSENSUS_SERIES:
        assert name in families, name
    samples = {s.name: s.value for f in families.values() for s in f.samples if not s.labels}
    assert samples["qudag_finality_seconds_count"] == 1
    assert samples["qudag_peers_connected"] == 0  # no peer links yet
    assert samples["qudag_vertices_buffered"] == 0
    assert samples["qudag_vertices_buffer_dropped_total"] == 0
    assert samples["qudag_equivocations_total"] == 0
    assert "qudag_leaders_skipped_total" in samples


# ----------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "malformed_json"),
        (b"\xff\xfe", "malformed_json"),
        (b"[1, 2]", "bad_request"),
        (b'{"txs": ["aGk="]}', "bad_request"),
        (b'{"transactions": "aGk="}', "bad_request"),
        (b'{"transactions": [1]}', "bad_request"),
        (b'{"transactions": []}', "bad_request"),
        (b'{"transactions": ["***"]}', "malformed_base64"),
        (b'{"transactions": ["aGk"]}', "malformed_base64"),
        (b'{"transactions": ["aGk=", "a b="]}', "malformed_base64"),
        (b'{"transactions": [""]}', "empty_transaction"),
    ],
)
async def test_bad_json_submissions(
    node_factory: NodeFactory, session: aiohttp.ClientSession, body: bytes, code: str
) -> None:
    node = await node_factory()
    await _expect_error(_post(session, f"{node.url}{TX}", body, "application/json"), 400, code)
    doc = await _get(session, f"{node.url}/api/v1/status")
    assert doc["transactions"]["pending"] == 0


async def test_empty_octet_stream_body(
    node_factory: NodeFactory, session: aiohttp.ClientSession
) -> None:
    node = await node_factory()
    await _expect_error(
        _post(session, f"{node.url}{TX}", b"", "application/octet-stream"),
        400,
        "empty_transaction",
    )


async def test_oversize_transaction(
    node_factory: NodeFactory, session: aiohttp.ClientSession
) -> None:
    node = await node_factory(QUDAG_MAX_TX_BYTES="1024")
    url = f"{node.url}{TX}"
    await _expect_error(
        _post(session, url, b"x" * 1025, "application/octet-stream"),
        400,
        "oversize_transaction",
    )
    body = json.dumps(_batch(b"ok", b"y" * 1025)).encode()
    await _expect_error(_post(session, url, body, "application/json"), 400, "oversize_transaction")
    async with await _post(session, url, b"x" * 1024, "application/octet-stream") as response:
        assert response.status == 202


async def test_too_many_transactions(
    node_factory: NodeFactory, session: aiohttp.ClientSession
) -> None:
    node = await node_factory(QUDAG_MAX_SUBMIT_TXS="3")
    body = json.dumps(_batch(b"1", b"2", b"3", b"4")).encode()
    await _expect_error(
        _post(session, f"{node.url}{TX}", body, "application/json"), 400, "too_many_transactions"
    )
    assert (await _submit(session, node, b"1", b"2", b"3"))[0] == 202


@pytest.mark.parametrize("size", [2049, 8 << 20])
async def test_body_over_the_limit_is_413(
    node_factory: NodeFactory, session: aiohttp.ClientSession, size: int
) -> None:
    # aiohttp keeps reading (and dropping) the rest of a refused body for a while, and a
    # shutdown waits for that: the short shutdown timeout keeps the teardown quick.
    node = await node_factory(
        QUDAG_MAX_BODY_BYTES="2048", QUDAG_MAX_TX_BYTES="1024", QUDAG_SHUTDOWN_TIMEOUT="1"
    )
    await _expect_error(
        _post(session, f"{node.url}{TX}", b"z" * size, "application/octet-stream"),
        413,
        "payload_too_large",
    )
    # the node still answers afterwards
    await _get(session, f"{node.url}/health")


async def test_unsupported_media_type(
    node_factory: NodeFactory, session: aiohttp.ClientSession
) -> None:
    node = await node_factory()
    await _expect_error(
        _post(session, f"{node.url}{TX}", b"hello", "text/plain"), 415, "unsupported_media_type"
    )


async def test_unknown_route_and_wrong_method(
    node_factory: NodeFactory, session: aiohttp.ClientSession
) -> None:
    node = await node_factory()
    await _expect_error(session.get(f"{node.url}/api/v1/nothing"), 404, "not_found")
    await _expect_error(session.delete(f"{node.url}/api/v1/status"), 405, "method_not_allowed")
    _, headers = await _expect_error(session.get(f"{node.url}{TX}"), 405, "method_not_allowed")
    assert headers["Allow"] == "POST"
    async with session.get(f"{node.url}/metrics") as response:
        text = await response.text()
    assert 'route="unmatched",status="404"' in text


@pytest.mark.parametrize("kind", ["transactions", "vertices"])
async def test_malformed_and_unknown_ids(
    node_factory: NodeFactory, session: aiohttp.ClientSession, kind: str
) -> None:
    node = await node_factory()
    base = f"{node.url}/api/v1/{kind}"
    for bad in ("xyz", "ab" * 31, "ab" * 33, "g" * 64):
        await _expect_error(session.get(f"{base}/{bad}"), 400, "malformed_id")
    await _expect_error(session.get(f"{base}/{HEX_ZERO}"), 404, "not_found")


async def test_pool_full_is_503_with_retry_after(
    node_factory: NodeFactory, session: aiohttp.ClientSession
) -> None:
    node = await node_factory(
        QUDAG_MAX_PENDING="2", QUDAG_MAX_SUBMIT_TXS="2", QUDAG_MIN_ROUND_INTERVAL="30"
    )
    first = _tx_id(b"first")

    async def first_taken() -> bool:
        record = await _get(session, f"{node.url}{TX}/{first}")
        return bool(record["status"] != "pending")

    # the first round takes this one at once; the next round comes only after 30 s
    assert (await _submit(session, node, b"first"))[0] == 202
    await _until(first_taken, what="first transaction in a vertex")
    assert (await _submit(session, node, b"a", b"b"))[0] == 202
    for txs in ((b"c",), (b"c", b"d")):
        request = session.post(f"{node.url}{TX}", json=_batch(*txs))
        _, headers = await _expect_error(request, 503, "pool_full")
        assert headers["Retry-After"] == "1"
    # a batch the pool could never hold is no reason to come back
    request = session.post(f"{node.url}{TX}", json=_batch(b"c", b"d", b"e"))
    _, headers = await _expect_error(request, 400, "too_many_transactions")
    assert "Retry-After" not in headers
    await _expect_error(session.get(f"{node.url}{TX}/{_tx_id(b'c')}"), 404, "not_found")
    doc = await _get(session, f"{node.url}/api/v1/status")
    assert doc["transactions"]["pending"] == 2


# ---------------------------------------------------------------- binding


def _ipv6_loopback_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


async def test_default_host_answers_on_ipv4_and_ipv6_loopback(
    node_factory: NodeFactory, session: aiohttp.ClientSession
) -> None:
    if not _ipv6_loopback_available():
        pytest.skip("this machine has no IPv6 loopback (cannot bind ::1)")
    node = await node_factory()
    assert node.settings.api_host == ""
    for host in ("127.0.0.1", "[::1]"):
        body = await _get(session, f"http://{host}:{node.port}/health")
        assert body["status"] == "ok"


# ------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("scheme", list(Scheme), ids=lambda s: s.label)
async def test_a_certified_checkpoint_is_served_and_verifies_with_the_genesis_alone(
    node_factory: NodeFactory, session: aiohttp.ClientSession, scheme: Scheme
) -> None:
    key = Signer(bytes([9]) * PRIVATE_KEY_SIZES[scheme])
    node = await node_factory(NODE_PRIVATE_KEY=key.seed().hex(), QUDAG_CHECKPOINT_INTERVAL="2")
    await _expect_error(session.get(f"{node.url}/api/v1/checkpoints/latest"), 404, "not_found")
    for k in range(3):
        data = f"checkpointed {k}".encode()
        status, _ = await _submit(session, node, data, query="?wait=final&timeout=10")
        assert status == 200

    async def covered() -> bool:
        held = (await _get(session, f"{node.url}/api/v1/status"))["checkpoint"]
        return held is not None and held["log_length"] >= 3

    await _until(covered, what="a certified checkpoint after the three transactions")
    document = await _get(session, f"{node.url}/api/v1/checkpoints/latest")
    genesis = await _get(session, f"{node.url}/api/v1/genesis")
    network = verifier.read_genesis_file(json.dumps(genesis))
    checked = verifier.verify_checkpoint(network, document)
    assert [m.name for m in checked.signers] == [node.settings.node_id]
    by_number = await _get(session, f"{node.url}/api/v1/checkpoints/{checked.number}")
    assert by_number == document
    newer = f"{node.url}/api/v1/checkpoints/{checked.number + 1000}"
    await _expect_error(session.get(newer), 404, "not_found")
    # the checkpoint's log position is the node's log there, and its leader a vertex
    log = await _get(session, f"{node.url}/api/v1/log?from={checked.log_length}&limit=1")
    assert log["entries"][0]["hash"] == checked.log_hash.hex()
    leader = await _get(session, f"{node.url}/api/v1/vertices/{checked.leader.hex()}")
    assert (leader["round"], leader["timestamp_ms"]) == (checked.round, document["timestamp_ms"])
    assert checked.window
    # anything changed is refused
    wrong = dict(document, log_hash="00" * 32)
    with pytest.raises(Refused, match="mismatch"):
        verifier.verify_checkpoint(network, wrong)
    with pytest.raises(Refused, match="bad_window"):
        verifier.verify_checkpoint(network, dict(document, window=document["window"][1:]))
    signature = bytearray.fromhex(document["signatures"][0]["signature"])
    signature[-1] ^= 1
    certificate = bytearray.fromhex(document["certificate"])
    certificate[-len(signature) :] = signature
    forged = dict(
        document,
        certificate=certificate.hex(),
        signatures=[dict(document["signatures"][0], signature=signature.hex())],
    )
    with pytest.raises(Refused, match="bad_checkpoint"):
        verifier.verify_checkpoint(network, forged)
    async with session.get(f"{node.url}/metrics") as response:
        text = await response.text()
    gauge = next(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "qudag_checkpoint_certified_number"
    )
    assert gauge >= checked.number
