"""The genesis: fault tolerance arithmetic, leader schedule, validation and decoding."""

from __future__ import annotations

import hashlib

import pytest

from qudag_node.core.crypto import Purpose, Scheme, SignatureCheck
from qudag_node.core.errors import InputRejected, Reason
from qudag_node.core.genesis import Genesis, Validator
from qudag_node.core.types import NodeId, PublicKey, VertexId


def key(i: int) -> PublicKey:
    """A distinct 32-byte key (validation does not need a real curve point)."""
    return PublicKey(bytes([i]) * 32)


def committee(n: int, network_id: str = "qudag-test") -> Genesis:
    """A genesis of ``n`` validators named v0..v(n-1)."""
    return Genesis(network_id, tuple(Validator(f"v{i}", key(i + 1)) for i in range(n)))


@pytest.mark.parametrize(
    ("n", "f", "quorum"),
    [(1, 0, 1), (2, 0, 2), (3, 0, 3), (4, 1, 3), (5, 1, 4),
     (6, 1, 5), (7, 2, 5), (8, 2, 6), (9, 2, 7), (10, 3, 7)],
)  # fmt: skip
def test_fault_tolerance_and_quorum(n: int, f: int, quorum: int) -> None:
    g = committee(n)
    assert (g.n, g.f, g.quorum) == (n, f, quorum)
    assert n >= 3 * g.f + 1 > n - 3  # the largest f with n >= 3f + 1
    assert 2 * g.quorum - n > g.f  # two quorums share an honest validator


def test_leaders_rotate_over_even_rounds_in_genesis_order() -> None:
    g = committee(4)
    ids = [NodeId(v.public_key) for v in g.validators]
    assert [g.leader(r) for r in (2, 4, 6, 8, 10)] == [ids[1], ids[2], ids[3], ids[0], ids[1]]
    for n in range(1, 11):
        g = committee(n)
        leaders = [g.leader(r) for r in range(2, 2 + 4 * n, 2)]
        assert leaders == [*leaders[:n], *leaders[:n]]
        assert sorted(leaders[:n]) == sorted(g.ids)


def test_index_of() -> None:
    g = committee(3)
    assert [g.index_of(NodeId(key(i))) for i in (1, 2, 3)] == [0, 1, 2]
    assert g.index_of(NodeId(key(9))) is None


def test_solo_is_a_one_validator_network() -> None:
    g = Genesis.solo("qudag-solo", "me", key(1))
    assert g.validators == (Validator("me", key(1)),)
    assert g.scheme is Scheme.ED25519
    assert (g.n, g.f, g.quorum, g.leader(2)) == (1, 0, 1, NodeId(key(1)))


def test_the_hash_covers_network_and_validators() -> None:
    g = committee(4)
    assert g.hash == committee(4).hash
    assert g.hash != committee(4, "qudag-other").hash
    assert g.hash != committee(3).hash
    reordered = Genesis(g.network_id, tuple(reversed(g.validators)))
    assert reordered.hash != g.hash


LONGEST = "a" * 63


@pytest.mark.parametrize(
    "network_id",
    ["", "-net", ".net", "_net", "net work", "net/1", "n\u00e9t", "a" * 64, "net\x00"],
)
def test_bad_network_ids_are_refused(network_id: str) -> None:
    with pytest.raises(ValueError, match="network id"):
        Genesis(network_id, (Validator("v", key(1)),))


@pytest.mark.parametrize("name", ["", "-v", "v 1", "v:1", "\u00fc", "a" * 64])
def test_bad_validator_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="validator name"):
        Genesis("net", (Validator(name, key(1)),))


def test_names_at_the_limits_are_accepted() -> None:
    g = Genesis(LONGEST, (Validator(LONGEST, key(1)), Validator("A.b_c-9", key(2))))
    assert Genesis.decode(g.encode()) == g


@pytest.mark.parametrize(("network_id", "name"), [("net\n", "v"), ("net", "v\n")])
def test_a_trailing_newline_is_refused(network_id: str, name: str) -> None:
    with pytest.raises(ValueError, match="use 1-63"):
        Genesis(network_id, (Validator(name, key(1)),))


@pytest.mark.parametrize(
    ("validators", "match"),
    [
        ((), "at least one validator"),
        ((Validator("a", key(1)), Validator("b", key(1))), "unique"),
        ((Validator("a", key(1)), Validator("a", key(2))), "unique"),
        ((Validator("a", PublicKey(b"\x01" * 31)),), "32 bytes"),
        ((Validator("a", PublicKey(b"\x01" * 33)),), "32 bytes"),
    ],
)
def test_bad_validator_sets_are_refused(validators: tuple[Validator, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Genesis("net", validators)


# ------------------------------------------------------------------- decoding


def test_decode_round_trips() -> None:
    g = committee(5)
    data = g.encode()
    decoded = Genesis.decode(data)
    assert decoded == g
    assert decoded.hash == g.hash
    assert decoded.encode() == data


def reason(data: bytes) -> Reason:
    """The reason Genesis.decode refuses ``data`` with."""
    with pytest.raises(InputRejected) as info:
        Genesis.decode(data)
    return info.value.reason


def encoded(network_id: bytes, validators: list[tuple[bytes, bytes]], version: int = 1) -> bytes:
    """Genesis bytes written by hand, valid or not."""
    out = bytes([version, len(network_id)]) + network_id + len(validators).to_bytes(2, "big")
    for name, public_key in validators:
        out += bytes([len(name)]) + name + public_key
    return out


def test_decode_refuses_every_truncation_and_trailing_bytes() -> None:
    data = committee(2).encode()
    for cut in range(len(data)):
        assert reason(data[:cut]) is Reason.TRUNCATED
    assert reason(data + b"\x00") is Reason.TRAILING_BYTES


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (encoded(b"net", [(b"v", key(1))], version=3), Reason.BAD_VERSION),
        (encoded(b"net", [(b"v", key(1))], version=0), Reason.BAD_VERSION),
        (encoded(b"n\xffet", [(b"v", key(1))]), Reason.NON_CANONICAL),  # not UTF-8
        (encoded(b"net", [(b"\xc3", key(1))]), Reason.NON_CANONICAL),  # not UTF-8
        (encoded(b"net", []), Reason.NON_CANONICAL),
        (encoded(b"net", [(b"a", key(1)), (b"b", key(1))]), Reason.NON_CANONICAL),
        (encoded(b"bad id", [(b"v", key(1))]), Reason.NON_CANONICAL),
        (encoded(b"net", [(b"", key(1))]), Reason.NON_CANONICAL),
    ],
)
def test_decode_refuses_malformed_genesis(data: bytes, expected: Reason) -> None:
    assert reason(data) is expected


def test_hand_written_bytes_match_the_encoder() -> None:
    g = committee(2, "net")
    assert g.encode() == encoded(b"net", [(b"v0", key(1)), (b"v1", key(2))])


# ------------------------------------------------------------- signature schemes

#: The hash of ``committee(4)`` as every node computed it before genesis files named a
#: scheme: an Ed25519 genesis must keep its version 1 bytes, and so its hash.
ED25519_COMMITTEE_4_HASH = "9aa0781e5b013f0f49a366250ca11cb8d6ce13c4e5fc7faa1ce6610e95256584"
COMPOSITE_KEY_SIZE = 1984


def composite_key(i: int) -> PublicKey:
    """A distinct composite-sized key (validation does not need a real one)."""
    return PublicKey(bytes([i]) * COMPOSITE_KEY_SIZE)


def composite_committee(n: int, network_id: str = "qudag-test") -> Genesis:
    """A composite genesis of ``n`` validators named v0..v(n-1)."""
    validators = tuple(Validator(f"v{i}", composite_key(i + 1)) for i in range(n))
    return Genesis(network_id, validators, Scheme.MLDSA65_ED25519)


def test_an_ed25519_genesis_keeps_its_version_1_bytes_and_hash() -> None:
    g = committee(4)
    assert g.scheme is Scheme.ED25519
    assert g.hash.hex() == ED25519_COMMITTEE_4_HASH
    assert g.encode() == encoded(b"qudag-test", [(f"v{i}".encode(), key(i + 1)) for i in range(4)])


def test_a_composite_genesis_round_trips_in_version_2() -> None:
    g = composite_committee(4)
    data = g.encode()
    assert data[:2] == bytes([2, Scheme.MLDSA65_ED25519])
    assert (
        data[2:]
        == encoded(b"qudag-test", [(f"v{i}".encode(), composite_key(i + 1)) for i in range(4)])[1:]
    )
    assert len(data) < 8_100  # four validators still make one small file
    decoded = Genesis.decode(data)
    assert decoded == g
    assert decoded.scheme is Scheme.MLDSA65_ED25519
    assert (decoded.hash, decoded.ids, decoded.encode()) == (g.hash, g.ids, data)


def test_the_hash_covers_the_scheme() -> None:
    g = composite_committee(4)
    assert g.hash != composite_committee(4, "qudag-other").hash
    assert g.hash != composite_committee(3).hash
    assert g.hash != committee(4).hash


def test_node_ids_are_the_ed25519_key_or_the_hash_of_the_composite_key() -> None:
    ed = committee(3)
    assert ed.ids == tuple(NodeId(key(i)) for i in (1, 2, 3))
    g = composite_committee(3)
    expected = tuple(
        NodeId(hashlib.blake2b(composite_key(i), digest_size=32, person=b"qudag:node-id").digest())
        for i in (1, 2, 3)
    )
    assert g.ids == expected
    assert [v.id(g.scheme) for v in g.validators] == list(expected)
    assert [g.index_of(node) for node in expected] == [0, 1, 2]
    assert [g.key_of(node) for node in expected] == [composite_key(i) for i in (1, 2, 3)]
    # a composite key's first 32 bytes name nobody
    assert g.index_of(NodeId(composite_key(1)[:32])) is None
    assert g.key_of(NodeId(composite_key(1)[:32])) is None
    assert [g.leader(r) for r in (2, 4, 6)] == [expected[1], expected[2], expected[0]]


def test_signature_checks_name_the_scheme_purpose_and_full_key() -> None:
    g = composite_committee(4)
    check = g.signature_check(g.ids[1], Purpose.VERTEX, b"message", b"signature")
    assert check == SignatureCheck(
        Scheme.MLDSA65_ED25519, Purpose.VERTEX, composite_key(2), b"message", b"signature"
    )
    assert g.signature_check(NodeId(key(2)), Purpose.VERTEX, b"m", b"s") is None
    vertex = VertexId(b"\x07" * 32)
    assert g.vote_check(3, vertex, b"vote") == SignatureCheck(
        Scheme.MLDSA65_ED25519, Purpose.VOTE, composite_key(4), vertex, b"vote"
    )
    assert g.vote_check(4, vertex, b"vote") is None


def test_solo_takes_its_scheme_from_the_key_size() -> None:
    g = Genesis.solo("qudag-solo", "me", composite_key(1))
    assert g.scheme is Scheme.MLDSA65_ED25519
    assert g.leader(2) == g.ids[0] != composite_key(1)[:32]
    with pytest.raises(ValueError, match="public key is 32 bytes"):
        Genesis.solo("qudag-solo", "me", PublicKey(b"\x01" * 33))


@pytest.mark.parametrize(
    ("scheme", "validators", "match"),
    [
        # a key of the other scheme, alone or among keys of the network's own (mixed)
        (Scheme.MLDSA65_ED25519, (Validator("a", key(1)),), "1984 bytes"),
        (
            Scheme.MLDSA65_ED25519,
            (Validator("a", composite_key(1)), Validator("b", key(2))),
            "validator b: a mldsa65-ed25519 public key is 1984 bytes",
        ),
        (Scheme.ED25519, (Validator("a", composite_key(1)),), "ed25519 public key is 32 bytes"),
        (
            Scheme.ED25519,
            (Validator("a", key(1)), Validator("b", composite_key(2))),
            "validator b: a ed25519 public key is 32 bytes",
        ),
        (Scheme.MLDSA65_ED25519, (Validator("a", PublicKey(b"\x01" * 1983)),), "1984 bytes"),
        (Scheme.MLDSA65_ED25519, (Validator("a", PublicKey(b"\x01" * 1985)),), "1984 bytes"),
        (
            Scheme.MLDSA65_ED25519,
            (Validator("a", composite_key(1)), Validator("b", composite_key(1))),
            "unique",
        ),
    ],
)
def test_keys_of_the_wrong_size_or_scheme_are_refused(
    scheme: Scheme, validators: tuple[Validator, ...], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        Genesis("net", validators, scheme)


def schemed(scheme: int, network_id: bytes, validators: list[tuple[bytes, bytes]]) -> bytes:
    """Version 2 genesis bytes written by hand, valid or not."""
    return bytes([2, scheme]) + encoded(network_id, validators)[1:]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        # an Ed25519 genesis has one encoding, version 1
        (schemed(Scheme.ED25519, b"net", [(b"v", key(1))]), Reason.UNKNOWN_SCHEME),
        (schemed(0, b"net", [(b"v", composite_key(1))]), Reason.UNKNOWN_SCHEME),
        (schemed(3, b"net", [(b"v", composite_key(1))]), Reason.UNKNOWN_SCHEME),
        # Ed25519-sized keys under the composite's scheme byte
        (schemed(Scheme.MLDSA65_ED25519, b"net", [(b"v", key(1))]), Reason.TRUNCATED),
        # a composite key in a version 1 (Ed25519) genesis: a short key and trailing bytes
        (encoded(b"net", [(b"v", composite_key(1))]), Reason.TRAILING_BYTES),
        (
            schemed(Scheme.MLDSA65_ED25519, b"net", [(b"a", composite_key(1))] * 2),
            Reason.NON_CANONICAL,
        ),
    ],
)
def test_decode_refuses_malformed_schemed_genesis(data: bytes, expected: Reason) -> None:
    assert reason(data) is expected


def test_decode_refuses_every_truncation_of_a_composite_genesis() -> None:
    data = composite_committee(2).encode()
    for cut in range(0, len(data), 7):
        assert reason(data[:cut]) is Reason.TRUNCATED
    assert reason(data + b"\x00") is Reason.TRAILING_BYTES
