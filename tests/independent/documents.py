"""Make genesis files and vertex documents as a node of the protocol would, for tests and
for the worked example of docs/protocol.md (``python -m tests.independent.documents``
prints it; ``docs/verify-example.json`` is its output).

Signatures come from a :data:`Sign` function, so the same documents can carry the
node's signatures or the deterministic ones of :func:`deterministic_signer` (ML-DSA-65
with FIPS 204's deterministic variant, rnd = 32 zero bytes, from ``dilithium-py``; the
node signs hedged, which verifies the same).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Sequence
from typing import Any

import nacl.signing
from dilithium_py.ml_dsa import ML_DSA_65

from tests.independent import verifier

#: Signs ``message`` in context ``ctx`` (Ed25519 signers ignore the context).
Sign = Callable[[bytes, bytes], bytes]

#: The worked example's network: one validator whose 64-byte seed is bytes 0x00..0x3f.
EXAMPLE_SEED = bytes(range(64))
EXAMPLE_NETWORK = "qudag-example"
EXAMPLE_TIMESTAMP_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
EXAMPLE_TRANSACTIONS = (b"hello, qudag",)


def deterministic_signer(seed: bytes) -> tuple[bytes, Sign]:
    """The composite public key of a 64-byte seed and a function signing with it."""
    mldsa_public, mldsa_private = ML_DSA_65.key_derive(seed[:32])
    ed_key = nacl.signing.SigningKey(seed[32:])

    def sign(message: bytes, ctx: bytes) -> bytes:
        represented = verifier.message_representative(message, ctx)
        mldsa_sig: bytes = ML_DSA_65.sign(
            mldsa_private, represented, ctx=verifier.LABEL, deterministic=True
        )
        return mldsa_sig + ed_key.sign(represented).signature

    return bytes(mldsa_public) + bytes(ed_key.verify_key), sign


def genesis_file(scheme: str, network_id: str, validators: Sequence[tuple[str, bytes]]) -> str:
    """The text of a genesis file, its hash included."""
    encoding = verifier.encode_genesis(scheme, network_id, list(validators))
    document = {
        "network_id": network_id,
        "scheme": scheme,
        "validators": [{"name": n, "public_key": k.hex()} for n, k in validators],
        "hash": verifier.blake2b_256(encoding, b"qudag:genesis").hex(),
    }
    return json.dumps(document, indent=2) + "\n"


def encode_header(
    scheme: str,
    network: bytes,
    author: bytes,
    round_: int,
    timestamp_ms: int,
    parents: Sequence[bytes],
    transactions: Sequence[bytes],
) -> bytes:
    """The canonical header of a vertex carrying ``transactions``."""
    tx_ids = b"".join(verifier.blake2b_256(t, b"qudag:tx") for t in transactions)
    return b"".join(
        [
            struct.pack(">BB", 1, verifier.SCHEME_BYTES[scheme]),
            network,
            author,
            struct.pack(">QQH", round_, timestamp_ms, len(parents)),
            *sorted(parents),
            struct.pack(">II", len(transactions), sum(len(t) for t in transactions)),
            verifier.blake2b_256(tx_ids, b"qudag:batch"),
        ]
    )


def encode_certificate(scheme: str, votes: Sequence[tuple[int, bytes]]) -> bytes:
    """``scheme:u8 count:u16 (voter:u16 signature) * count``, in the given order."""
    parts = [struct.pack(">BH", verifier.SCHEME_BYTES[scheme], len(votes))]
    parts += [struct.pack(">H", voter) + signature for voter, signature in votes]
    return b"".join(parts)


def vertex_document(
    network: verifier.Network,
    author: int,
    sign: Sign,
    voters: Sequence[tuple[int, Sign]],
    round_: int = 1,
    parents: Sequence[bytes] = (),
    transactions: Sequence[bytes] = EXAMPLE_TRANSACTIONS,
    timestamp_ms: int = EXAMPLE_TIMESTAMP_MS,
) -> dict[str, Any]:
    """The API's document of a vertex by validator ``author``, signed by ``sign``, with a
    certificate of ``voters`` (index, signer) when there are any."""
    scheme = network.scheme
    header = encode_header(
        scheme,
        network.hash,
        network.members[author].node_id,
        round_,
        timestamp_ms,
        parents,
        transactions,
    )
    vid = verifier.vertex_id(header)
    votes = [(index, vote(vid, verifier.VOTE_CONTEXT)) for index, vote in voters]
    return {
        "id": vid.hex(),
        "round": round_,
        "author": network.members[author].node_id.hex(),
        "timestamp_ms": timestamp_ms,
        "parents": [p.hex() for p in sorted(parents)],
        "transactions": [verifier.blake2b_256(t, b"qudag:tx").hex() for t in transactions],
        "scheme": verifier.SCHEME_BYTES[scheme],
        "signature": sign(vid, verifier.VERTEX_CONTEXT).hex(),
        "certificate": encode_certificate(scheme, votes).hex() if votes else None,
        "ordered": False,
        "header": header.hex(),
        "signing": signing(scheme, verifier.VERTEX_CONTEXT, vid),
        "votes": [{"validator": i, "signature": s.hex()} for i, s in votes],
        "vote_signing": signing(scheme, verifier.VOTE_CONTEXT, vid),
    }


def signing(scheme: str, ctx: bytes, message: bytes) -> dict[str, Any]:
    """What a signature signs, as the API shows it (no context on Ed25519 networks)."""
    context = ctx.decode() if scheme == verifier.COMPOSITE else None
    return {"scheme": scheme, "context": context, "message": message.hex()}


def worked_example() -> dict[str, Any]:
    """The genesis file and the certified round-1 vertex of the protocol's example."""
    public_key, sign = deterministic_signer(EXAMPLE_SEED)
    genesis = genesis_file(verifier.COMPOSITE, EXAMPLE_NETWORK, [("v1", public_key)])
    network = verifier.read_genesis_file(genesis)
    vertex = vertex_document(network, 0, sign, [(0, sign)])
    return {"genesis_file": json.loads(genesis), "vertex": vertex}


if __name__ == "__main__":
    print(json.dumps(worked_example(), indent=1))
