"""Known-answer vectors: keys, ids, roots, encodings, signatures and log hashes.

The expected values live in ``vectors.json`` beside this module. Every test compares
the implementation with the file and, where it can, recomputes the value
independently: hashes with ``hashlib.blake2b`` and the documented personalisation
strings, headers with ``struct`` following the layout in ``core/vertex.py``,
signatures with PyNaCl. A change of format therefore fails here until the file is
rewritten on purpose. After a deliberate format change, rewrite it with::

    QUDAG_REGEN_VECTORS=1 .venv/bin/pytest tests/core/test_vectors.py

and review the diff.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

import nacl.signing
import pytest

from qudag_node.core import crypto
from qudag_node.core.crypto import Signer
from qudag_node.core.genesis import Genesis
from qudag_node.core.params import Params
from qudag_node.core.types import PublicKey, TxId, VertexId
from qudag_node.core.vertex import Vertex, decode_vertex, make_vertex
from tests.core.support import SoloNode, vertex_of

VECTORS_PATH = Path(__file__).with_name("vectors.json")

SEED = bytes(range(32))
NETWORK_ID = "qudag-vectors"
NODE_NAME = "node-1"
TXS = [b"hello", b"world", bytes(range(256)), b"\x00"]
#: (round, timestamp in ms, indexes into TXS) of the two vertices; round 2's parent is round 1.
VERTICES = [(1, 1_700_000_000_000, [0, 1, 2]), (2, 1_700_000_001_000, [3])]


def h(data: bytes, person: bytes) -> bytes:
    """BLAKE2b-256 with a personalisation string, straight from hashlib."""
    return hashlib.blake2b(data, digest_size=32, person=person).digest()


def implementation_vertices() -> list[Vertex]:
    """The vector vertices as the implementation builds them."""
    signer = Signer(SEED)
    genesis = Genesis.solo(NETWORK_ID, NODE_NAME, signer.public_key)
    out: list[Vertex] = []
    for round_, ts, indexes in VERTICES:
        txs = [TXS[i] for i in indexes]
        parents = [out[-1].id] if out else []
        out.append(make_vertex(signer, genesis.hash, round_, ts, parents, txs, crypto.tx_ids(txs)))
    return out


def generate() -> dict[str, Any]:
    """Compute every vector with the implementation (for QUDAG_REGEN_VECTORS=1)."""
    signer = Signer(SEED)
    genesis = Genesis.solo(NETWORK_ID, NODE_NAME, signer.public_key)
    ids = crypto.tx_ids(TXS)
    start = crypto.log_hash_start(genesis.hash)
    return {
        "seed": SEED.hex(),
        "public_key": signer.public_key.hex(),
        "genesis": {
            "network_id": NETWORK_ID,
            "validator": NODE_NAME,
            "encoding": genesis.encode().hex(),
            "hash": genesis.hash.hex(),
        },
        "transactions": [{"data": t.hex(), "id": i.hex()} for t, i in zip(TXS, ids, strict=True)],
        "vertices": [
            {
                "round": v.round,
                "timestamp_ms": v.header.timestamp_ms,
                "parents": [p.hex() for p in v.parents],
                "transactions": indexes,
                "batch_root": v.header.batch_root.hex(),
                "header": v.header_bytes.hex(),
                "id": v.id.hex(),
                "signature": v.signature.hex(),
                "encoding": v.encode().hex(),
            }
            for v, (_, _, indexes) in zip(implementation_vertices(), VERTICES, strict=True)
        ],
        "log": {
            "start": start.hex(),
            "hashes": [x.hex() for x in crypto.extend_log_hash(start, ids)],
        },
    }


@pytest.fixture(scope="module")
def vectors() -> dict[str, Any]:
    """The known answers, rewritten first when QUDAG_REGEN_VECTORS=1."""
    if os.environ.get("QUDAG_REGEN_VECTORS") == "1":
        VECTORS_PATH.write_text(json.dumps(generate(), indent=2) + "\n")
    loaded: dict[str, Any] = json.loads(VECTORS_PATH.read_text())
    return loaded


def unhex(value: str) -> bytes:
    """Bytes from a hex string of the file."""
    return bytes.fromhex(value)


def test_inputs_match_the_file(vectors: dict[str, Any]) -> None:
    assert unhex(vectors["seed"]) == SEED
    assert [unhex(t["data"]) for t in vectors["transactions"]] == TXS
    assert [(v["round"], v["timestamp_ms"], v["transactions"]) for v in vectors["vertices"]] == [
        (r, ts, idx) for r, ts, idx in VERTICES
    ]


def test_public_key(vectors: dict[str, Any]) -> None:
    expected = unhex(vectors["public_key"])
    assert Signer(SEED).public_key == expected
    assert bytes(nacl.signing.SigningKey(SEED).verify_key) == expected


def test_genesis_encoding_and_hash(vectors: dict[str, Any]) -> None:
    pk = unhex(vectors["public_key"])
    net, name = NETWORK_ID.encode(), NODE_NAME.encode()
    by_hand = (
        struct.pack(">BB", 1, len(net)) + net + struct.pack(">H", 1)
        + struct.pack(">B", len(name)) + name + pk
    )  # fmt: skip
    encoding = unhex(vectors["genesis"]["encoding"])
    assert by_hand == encoding
    genesis = Genesis.solo(NETWORK_ID, NODE_NAME, Signer(SEED).public_key)
    assert genesis.encode() == encoding
    assert genesis.hash == unhex(vectors["genesis"]["hash"]) == h(encoding, b"qudag:genesis")
    assert Genesis.decode(encoding) == genesis


def test_transaction_ids(vectors: dict[str, Any]) -> None:
    expected = [unhex(t["id"]) for t in vectors["transactions"]]
    assert [h(t, b"qudag:tx") for t in TXS] == expected
    assert crypto.tx_ids(TXS) == expected
    assert [crypto.tx_id(t) for t in TXS] == expected


def header_by_hand(vector: dict[str, Any], network: bytes, author: bytes) -> bytes:
    """A vertex header built from the layout documented in ``core/vertex.py``."""
    txs = [TXS[i] for i in vector["transactions"]]
    root = h(b"".join(h(t, b"qudag:tx") for t in txs), b"qudag:batch")
    parents = [unhex(p) for p in vector["parents"]]
    return (
        struct.pack(">BB", 1, 1)  # version, scheme (Ed25519)
        + network
        + author
        + struct.pack(">QQH", vector["round"], vector["timestamp_ms"], len(parents))
        + b"".join(sorted(parents))
        + struct.pack(">II", len(txs), sum(map(len, txs)))
        + root
    )


@pytest.mark.parametrize("index", range(len(VERTICES)))
def test_vertex(vectors: dict[str, Any], index: int) -> None:
    vector = vectors["vertices"][index]
    network = unhex(vectors["genesis"]["hash"])
    pk = unhex(vectors["public_key"])
    txs = [TXS[i] for i in vector["transactions"]]

    root = unhex(vector["batch_root"])
    assert root == h(b"".join(h(t, b"qudag:tx") for t in txs), b"qudag:batch")
    header = unhex(vector["header"])
    assert header == header_by_hand(vector, network, pk)
    vid = unhex(vector["id"])
    assert vid == h(header, b"qudag:vertex")
    signature = unhex(vector["signature"])
    assert signature == nacl.signing.SigningKey(SEED).sign(vid).signature
    assert nacl.signing.VerifyKey(pk).verify(vid, signature) == vid
    body = b"".join(struct.pack(">I", len(t)) + t for t in txs)
    encoding = unhex(vector["encoding"])
    assert encoding == header + signature + body

    made = implementation_vertices()[index]
    assert made.encode() == encoding
    assert (made.header_bytes, made.id, made.signature) == (header, vid, signature)
    assert made.header.batch_root == root
    assert made.parents == tuple(VertexId(unhex(p)) for p in vector["parents"])
    assert decode_vertex(encoding, Params()) == made
    check = crypto.SignatureCheck(
        crypto.Scheme.ED25519, crypto.Purpose.VERTEX, PublicKey(made.author), vid, signature
    )
    assert crypto.verify_check(check)


def test_round_2_references_round_1(vectors: dict[str, Any]) -> None:
    first, second = vectors["vertices"]
    assert second["parents"] == [first["id"]]
    assert first["parents"] == []


def test_log_hashes(vectors: dict[str, Any]) -> None:
    start = unhex(vectors["log"]["start"])
    assert start == h(unhex(vectors["genesis"]["hash"]), b"qudag:log")
    expected = [unhex(x) for x in vectors["log"]["hashes"]]
    by_hand, running = [], start
    for t in TXS:
        running = h(running + h(t, b"qudag:tx"), b"qudag:log")
        by_hand.append(running)
    assert by_hand == expected
    genesis = Genesis.solo(NETWORK_ID, NODE_NAME, Signer(SEED).public_key)
    assert crypto.log_hash_start(genesis.hash) == start
    assert crypto.extend_log_hash(start, crypto.tx_ids(TXS)) == expected
    assert crypto.extend_log_hash(start, []) == []


def test_a_solo_engine_reproduces_the_vectors(vectors: dict[str, Any]) -> None:
    signer = Signer(SEED)
    genesis = Genesis.solo(NETWORK_ID, NODE_NAME, signer.public_key)
    (_, ts1, first), (_, ts2, second) = VERTICES
    node = SoloNode(now=ts1 / 1000, genesis=genesis, signer=signer)
    node.fire()
    node.submit([TXS[i] for i in first])  # proposes round 1 at once
    node.now = ts2 / 1000
    node.submit([TXS[i] for i in second])  # the round interval has passed: round 2
    node.settle()
    made = [vertex_of(t).encode().hex() for t in node.own_vertices()[:2]]
    assert made == [v["encoding"] for v in vectors["vertices"]]
    entries = node.entries()
    assert [e.tx_id for e in entries] == [TxId(unhex(t["id"])) for t in vectors["transactions"]]
    assert [e.hash.hex() for e in entries] == vectors["log"]["hashes"]
