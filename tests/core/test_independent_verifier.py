"""The independent verifier (tests/independent: dilithium-py and PyNaCl, no code of the
node) against the draft's test vectors and against the node's own composite signatures,
and its refusals of every way a genesis file, a vertex or a certificate can be wrong.

This file imports the node's composite module to make signatures, and its genesis to
compare encodings; the verifier that checks them shares no code with the node.
"""

from __future__ import annotations

import ast
import base64
import copy
import dataclasses
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qudag_node.core import composite
from qudag_node.core.crypto import Scheme
from qudag_node.core.genesis import Genesis, Validator
from qudag_node.core.types import PublicKey
from qudag_node.genesis_file import genesis_to_json
from tests.independent import documents, verifier
from tests.independent.verifier import COMPOSITE, ED25519, Refused

ROOT = Path(__file__).resolve().parents[2]
VECTORS = json.loads(
    (Path(__file__).parent / "vectors" / "composite_mldsa65_ed25519.json").read_text()
)
CUT = verifier.MLDSA_SIGNATURE_SIZE


def vector(name: str) -> bytes:
    return base64.b64decode(VECTORS[name])


def flipped(data: bytes, index: int) -> bytes:
    damaged = bytearray(data)
    damaged[index] ^= 0x01
    return bytes(damaged)


# --------------------------------------------------------------- the vectors


def test_the_drafts_vectors_verify_with_and_without_context() -> None:
    pk, m, ctx = vector("pk"), vector("m"), vector("ctx")
    assert verifier.verify_composite(pk, m, b"", vector("s"))
    assert verifier.verify_composite(pk, m, ctx, vector("sWithContext"))
    assert not verifier.verify_composite(pk, m, ctx, vector("s"))
    assert not verifier.verify_composite(pk, m, b"", vector("sWithContext"))


def test_the_drafts_key_seed_gives_its_public_key_with_dilithium_py() -> None:
    public_key, sign = documents.deterministic_signer(vector("sk"))
    assert public_key == vector("pk")
    signature = sign(vector("m"), vector("ctx"))
    assert verifier.verify_composite(public_key, vector("m"), vector("ctx"), signature)
    assert composite.verify(public_key, vector("m"), vector("ctx"), signature)


# ----------------------------------------------------- the node's signatures

NODE_KEY = composite.CompositeKey(bytes(range(64)))
OTHER_KEY = composite.CompositeKey(bytes(range(64, 128)))
SIGNED = NODE_KEY.sign(b"vertex id", b"qudag/vertex")


def test_a_signature_of_the_node_verifies() -> None:
    assert verifier.verify_composite(NODE_KEY.public_key, b"vertex id", b"qudag/vertex", SIGNED)


@pytest.mark.parametrize("index", [0, 1000, CUT - 1, CUT, CUT + 31, CUT + 63])
def test_a_flipped_byte_in_either_half_is_refused(index: int) -> None:
    damaged = flipped(SIGNED, index)
    assert not verifier.verify_composite(
        NODE_KEY.public_key, b"vertex id", b"qudag/vertex", damaged
    )


def test_another_context_message_or_key_is_refused() -> None:
    key = NODE_KEY.public_key
    assert not verifier.verify_composite(key, b"vertex id", b"qudag/vote", SIGNED)
    assert not verifier.verify_composite(key, b"vertex id", b"", SIGNED)
    assert not verifier.verify_composite(key, b"vertex iD", b"qudag/vertex", SIGNED)
    assert not verifier.verify_composite(
        OTHER_KEY.public_key, b"vertex id", b"qudag/vertex", SIGNED
    )
    # each half checks against its own half of the key
    mixed = key[: verifier.MLDSA_PUBLIC_KEY_SIZE] + OTHER_KEY.public_key[-32:]
    assert not verifier.verify_composite(mixed, b"vertex id", b"qudag/vertex", SIGNED)


def test_halves_swapped_between_messages_are_refused() -> None:
    other = NODE_KEY.sign(b"another id", b"qudag/vertex")
    for swapped in (SIGNED[:CUT] + other[CUT:], other[:CUT] + SIGNED[CUT:]):
        for message in (b"vertex id", b"another id"):
            assert not verifier.verify_composite(
                NODE_KEY.public_key, message, b"qudag/vertex", swapped
            )


def test_wrong_sizes_are_refused() -> None:
    key = NODE_KEY.public_key
    assert not verifier.verify_composite(key[:-1], b"vertex id", b"qudag/vertex", SIGNED)
    assert not verifier.verify_composite(key, b"vertex id", b"qudag/vertex", SIGNED + b"\x00")
    assert not verifier.verify_composite(key, b"vertex id", b"qudag/vertex", SIGNED[:-1])
    assert not verifier.verify_composite(key, b"vertex id", b"c" * 256, SIGNED)


# -------------------------------------------------------------------- genesis


def ed25519_key(number: int) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(bytes([number]) * 32)


def test_an_ed25519_genesis_has_the_nodes_version_1_hash() -> None:
    text = json.dumps(
        {
            "network_id": "qudag-testnet",
            "validators": [
                {"name": f"node{i}", "public_key": bytes(ed25519_key(i).verify_key).hex()}
                for i in range(1, 5)
            ],
        }
    )
    network = verifier.read_genesis_file(text)
    assert network.scheme == ED25519
    assert network.encoding[:1] == b"\x01"
    # pinned from the node's Genesis.encode() of the same four validators
    assert network.hash.hex() == "a3ee814f7edf6157ea9260dc68a73842f138a9b92bff9f5e109705d3f281c5f4"
    assert [m.node_id for m in network.members] == [m.public_key for m in network.members]
    assert network.quorum == 3


def test_a_composite_genesis_is_encoded_as_version_2_and_names_nodes_by_hash() -> None:
    keys = [("v1", NODE_KEY.public_key), ("v2", OTHER_KEY.public_key)]
    network = verifier.read_genesis_file(documents.genesis_file(COMPOSITE, "qudag-pq", keys))
    expected = b"".join(
        [
            b"\x02\x02\x08qudag-pq\x00\x02",
            b"\x02v1" + NODE_KEY.public_key,
            b"\x02v2" + OTHER_KEY.public_key,
        ]
    )
    assert network.encoding == expected
    assert network.hash == verifier.blake2b_256(expected, b"qudag:genesis")
    assert len(network.members[0].node_id) == 32
    assert network.members[0].node_id != network.members[1].node_id
    assert network.quorum == 2


@pytest.mark.parametrize("scheme", [Scheme.ED25519, Scheme.MLDSA65_ED25519])
def test_the_nodes_genesis_files_read_the_same(scheme: Scheme) -> None:
    """The node's genesis of either scheme, read from its file by the verifier, has the
    node's encoding, hash and node ids."""
    keys = (
        [bytes(ed25519_key(i).verify_key) for i in range(1, 5)]
        if scheme is Scheme.ED25519
        else [NODE_KEY.public_key, OTHER_KEY.public_key]
    )
    validators = tuple(Validator(f"v{i}", PublicKey(k)) for i, k in enumerate(keys))
    genesis = Genesis("qudag-pq", validators, scheme)
    network = verifier.read_genesis_file(genesis_to_json(genesis))
    assert network.scheme == scheme.label
    assert network.encoding == genesis.encode()
    assert network.hash == genesis.hash
    assert [m.node_id for m in network.members] == list(genesis.ids)


def edited(text: str, change: Callable[[dict[str, Any]], None]) -> str:
    document = json.loads(text)
    change(document)
    return json.dumps(document)


GOOD_FILE = documents.genesis_file(
    COMPOSITE, "qudag-pq", [("v1", NODE_KEY.public_key), ("v2", OTHER_KEY.public_key)]
)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda d: d.update(hash="00" * 32), "bad_genesis"),
        (lambda d: d.update(scheme="mldsa87"), "unknown_scheme"),
        (lambda d: d.update(scheme="ed25519"), "bad_genesis"),  # keys of the wrong size
        (lambda d: d["validators"][1].update(name="v1"), "bad_genesis"),
        (
            lambda d: d["validators"][1].update(public_key=d["validators"][0]["public_key"]),
            "bad_genesis",
        ),
        (lambda d: d.update(network_id="-bad"), "bad_genesis"),
        (lambda d: d.update(validators=[]), "bad_genesis"),
        (lambda d: d.pop("network_id"), "malformed"),
        (lambda d: d["validators"][0].update(public_key="zz"), "malformed"),
        (lambda d: d.update(scheme=["mldsa65-ed25519"]), "malformed"),
    ],
)
def test_a_wrong_genesis_file_is_refused(
    change: Callable[[dict[str, Any]], None], reason: str
) -> None:
    with pytest.raises(Refused) as refused:
        verifier.read_genesis_file(edited(GOOD_FILE, change))
    assert refused.value.reason == reason


# ------------------------------------------------------------------ vertices

FOUR = [composite.CompositeKey(bytes([i]) * 64) for i in range(1, 5)]
NETWORK = verifier.read_genesis_file(
    documents.genesis_file(
        COMPOSITE, "qudag-pq", [(f"v{i + 1}", k.public_key) for i, k in enumerate(FOUR)]
    )
)


def certified(author: int = 1, voters: tuple[int, ...] = (0, 1, 3)) -> dict[str, Any]:
    return documents.vertex_document(
        NETWORK, author, FOUR[author].sign, [(i, FOUR[i].sign) for i in voters]
    )


CERTIFIED = certified()


def test_a_certified_vertex_of_node_signatures_verifies() -> None:
    result = verifier.verify_vertex(NETWORK, CERTIFIED)
    assert result.id.hex() == CERTIFIED["id"]
    assert result.author.name == "v2"
    assert [v.name for v in result.voters] == ["v1", "v2", "v4"]
    assert result.certified


def test_an_uncertified_vertex_verifies_without_votes() -> None:
    document = documents.vertex_document(NETWORK, 2, FOUR[2].sign, [])
    result = verifier.verify_vertex(NETWORK, document)
    assert not result.certified
    assert result.author.name == "v3"


def test_a_vertex_with_parents_verifies() -> None:
    parents = [bytes.fromhex(CERTIFIED["id"]), bytes(range(32))]
    document = documents.vertex_document(
        NETWORK, 0, FOUR[0].sign, [(i, FOUR[i].sign) for i in (0, 2, 3)], round_=2, parents=parents
    )
    assert verifier.verify_vertex(NETWORK, document).round == 2


def test_a_vertex_of_an_ed25519_network_verifies() -> None:
    keys = [ed25519_key(i) for i in range(1, 5)]
    text = documents.genesis_file(
        ED25519, "qudag-old", [(f"v{i}", bytes(k.verify_key)) for i, k in enumerate(keys)]
    )
    network = verifier.read_genesis_file(text)
    signers = [lambda m, _ctx, k=k: k.sign(m).signature for k in keys]
    document = documents.vertex_document(
        network, 3, signers[3], [(i, signers[i]) for i in range(3)]
    )
    assert verifier.verify_vertex(network, document).author.public_key == bytes(keys[3].verify_key)
    with pytest.raises(Refused, match="wrong_scheme"):
        verifier.verify_vertex(NETWORK, document)


def changed(document: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {**document, **fields}


def vote_of(document: dict[str, Any], signer: composite.CompositeKey, ctx: bytes) -> str:
    return signer.sign(bytes.fromhex(document["id"]), ctx).hex()


def with_votes(document: dict[str, Any], votes: list[tuple[int, str]]) -> dict[str, Any]:
    pairs = [(i, bytes.fromhex(s)) for i, s in votes]
    return changed(
        document,
        certificate=documents.encode_certificate(COMPOSITE, pairs).hex(),
        votes=[{"validator": i, "signature": s} for i, s in votes],
    )


def listed_votes(document: dict[str, Any]) -> list[tuple[int, str]]:
    return [(v["validator"], v["signature"]) for v in document["votes"]]


OUTSIDER = composite.CompositeKey(bytes([9]) * 64)
OTHER_GENESIS = verifier.read_genesis_file(
    documents.genesis_file(
        COMPOSITE, "qudag-other", [(f"v{i + 1}", k.public_key) for i, k in enumerate(FOUR)]
    )
)


def refusals() -> list[tuple[str, dict[str, Any], str]]:
    """(what, document, reason) for every way a vertex document must fail."""
    doc = CERTIFIED
    votes = listed_votes(doc)
    signature = bytes.fromhex(doc["signature"])
    outsider_id = verifier.node_id(COMPOSITE, OUTSIDER.public_key)
    foreign = documents.vertex_document(OTHER_GENESIS, 1, FOUR[1].sign, [])
    # a vertex of our network, well signed, by a key that is not a validator's
    impostor = verifier.Member(1, "v2", OUTSIDER.public_key, outsider_id)
    pretended = dataclasses.replace(NETWORK, members=(NETWORK.members[0], impostor))
    by_outsider = documents.vertex_document(pretended, 1, OUTSIDER.sign, [])
    return [
        ("the id is not the header's", changed(doc, id=bytes(32).hex()), "wrong_id"),
        ("a header of another network", foreign, "wrong_network"),
        ("an author outside the genesis", by_outsider, "unknown_author"),
        ("the document names another author", changed(doc, author=outsider_id.hex()), "mismatch"),
        ("another round", changed(doc, round=7), "mismatch"),
        ("a transaction left out", changed(doc, transactions=[]), "mismatch"),
        ("another transaction", changed(doc, transactions=[bytes(32).hex()]), "bad_batch_root"),
        (
            "another signing message",
            changed(doc, signing={**doc["signing"], "message": "00" * 32}),
            "mismatch",
        ),
        (
            "another signing context",
            changed(doc, signing={**doc["signing"], "context": "qudag/vote"}),
            "mismatch",
        ),
        (
            "another vote context",
            changed(doc, vote_signing={**doc["vote_signing"], "context": "qudag/vertex"}),
            "mismatch",
        ),
        ("the scheme byte of Ed25519", changed(doc, scheme=1), "wrong_scheme"),
        (
            "ML-DSA half flipped",
            changed(doc, signature=flipped(signature, 5).hex()),
            "bad_signature",
        ),
        (
            "Ed25519 half flipped",
            changed(doc, signature=flipped(signature, CUT + 5).hex()),
            "bad_signature",
        ),
        (
            "signed as a vote",
            changed(doc, signature=vote_of(doc, FOUR[1], b"qudag/vote")),
            "bad_signature",
        ),
        (
            "signed by another validator",
            changed(doc, signature=vote_of(doc, FOUR[0], b"qudag/vertex")),
            "bad_signature",
        ),
        ("two votes", with_votes(doc, votes[:2]), "bad_certificate"),
        (
            "a vote signed as a vertex",
            with_votes(doc, [*votes[:2], (3, vote_of(doc, FOUR[3], b"qudag/vertex"))]),
            "bad_certificate",
        ),
        (
            "a vote by another key",
            with_votes(doc, [*votes[:2], (3, vote_of(doc, FOUR[2], b"qudag/vote"))]),
            "bad_certificate",
        ),
        (
            "a vote half flipped",
            with_votes(doc, [*votes[:2], (3, flipped(bytes.fromhex(votes[2][1]), CUT).hex())]),
            "bad_certificate",
        ),
        (
            "a voter outside the genesis",
            with_votes(doc, [*votes, (4, votes[2][1])]),
            "bad_certificate",
        ),
        ("one voter twice", with_votes(doc, [votes[0], votes[1], votes[1]]), "non_canonical"),
        ("voters out of order", with_votes(doc, [votes[1], votes[0], votes[2]]), "non_canonical"),
        ("the votes are not the certificate's", changed(doc, votes=doc["votes"][:2]), "mismatch"),
        ("votes without a certificate", changed(doc, certificate=None), "mismatch"),
        ("no header", {k: v for k, v in doc.items() if k != "header"}, "malformed"),
        ("a signature that is not hex", changed(doc, signature="xyz"), "malformed"),
        ("a truncated certificate", changed(doc, certificate=doc["certificate"][:-2]), "truncated"),
    ]


@pytest.mark.parametrize(("what", "document", "reason"), refusals(), ids=[r[0] for r in refusals()])
def test_a_wrong_vertex_document_is_refused(
    what: str, document: dict[str, Any], reason: str
) -> None:
    with pytest.raises(Refused) as refused:
        verifier.verify_vertex(NETWORK, document)
    assert refused.value.reason == reason, what


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(["signature", 0, 1, 2]),
    st.integers(0, verifier.SIGNATURE_SIZES[COMPOSITE] - 1),
    st.integers(1, 255),
)
def test_any_byte_of_the_signature_or_of_a_vote_changed_is_refused(
    which: str | int, index: int, flip: int
) -> None:
    document = copy.deepcopy(CERTIFIED)
    if which == "signature":
        damaged = bytearray.fromhex(document["signature"])
        damaged[index] ^= flip
        document["signature"] = damaged.hex()
        expected = "bad_signature"
    else:
        votes = listed_votes(document)
        damaged = bytearray.fromhex(votes[int(which)][1])
        damaged[index] ^= flip
        votes[int(which)] = (votes[int(which)][0], damaged.hex())
        document = with_votes(document, votes)
        expected = "bad_certificate"
    with pytest.raises(Refused) as refused:
        verifier.verify_vertex(NETWORK, document)
    assert refused.value.reason == expected


# ------------------------------------------------------- the protocol's example

EXAMPLE_FILE = ROOT / "docs" / "verify-example.json"


def test_the_worked_example_is_reproduced_from_its_seeds() -> None:
    assert json.loads(EXAMPLE_FILE.read_text()) == documents.worked_example()


def test_the_worked_example_verifies_with_both_implementations() -> None:
    example = json.loads(EXAMPLE_FILE.read_text())
    network = verifier.read_genesis_file(json.dumps(example["genesis_file"]))
    vertex = example["vertex"]
    assert verifier.verify_vertex(network, vertex).voters == network.members
    key = composite.CompositeKey(documents.EXAMPLE_SEED)
    assert network.members[0].public_key == key.public_key
    vid = bytes.fromhex(vertex["id"])
    assert composite.verify(
        key.public_key, vid, b"qudag/vertex", bytes.fromhex(vertex["signature"])
    )
    assert composite.verify(
        key.public_key, vid, b"qudag/vote", bytes.fromhex(vertex["votes"][0]["signature"])
    )


def test_the_protocol_text_shows_the_examples_values() -> None:
    """Every long hex string of the example section is (part of) one the example computes."""
    example = json.loads(EXAMPLE_FILE.read_text())
    network = verifier.read_genesis_file(json.dumps(example["genesis_file"]))
    vertex = example["vertex"]
    vid = bytes.fromhex(vertex["id"])
    signature = bytes.fromhex(vertex["signature"])
    values = {
        network.hash.hex(),
        network.members[0].node_id.hex(),
        network.members[0].public_key[-32:].hex(),
        vertex["header"],
        vertex["id"],
        verifier.message_representative(vid, verifier.VERTEX_CONTEXT).hex(),
        verifier.message_representative(vid, verifier.VOTE_CONTEXT).hex(),
        signature[CUT:].hex(),
        bytes.fromhex(vertex["votes"][0]["signature"])[CUT:].hex(),
        network.encoding[:16].hex(),
    }
    text = (ROOT / "docs" / "protocol.md").read_text()
    section = text[text.index("## Verifying a vertex and a certificate") :]
    section = section[: section.index("\n## ", 4)]
    shown = {"".join(m.split()) for m in re.findall(r"(?:[0-9a-f]{16,}\s*)+", section)}
    assert values <= shown, "the example section shows every value"
    for value in shown:
        assert any(value in computed for computed in values), value


def test_the_verifier_imports_nothing_of_the_node() -> None:
    allowed = {"nacl", "dilithium_py", "tests"}
    for path in (ROOT / "tests" / "independent").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or top in allowed, (path.name, name)
                assert top != "tests" or name.startswith("tests.independent"), (path.name, name)
