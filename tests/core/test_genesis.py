"""The genesis: fault tolerance arithmetic, leader schedule, validation and decoding."""

from __future__ import annotations

import pytest

from qudag_node.core.errors import InputRejected, Reason
from qudag_node.core.genesis import Genesis, Validator
from qudag_node.core.types import PublicKey


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
    keys = [v.public_key for v in g.validators]
    assert [g.leader(r) for r in (2, 4, 6, 8, 10)] == [keys[1], keys[2], keys[3], keys[0], keys[1]]
    for n in range(1, 11):
        g = committee(n)
        leaders = [g.leader(r) for r in range(2, 2 + 4 * n, 2)]
        assert leaders == [*leaders[:n], *leaders[:n]]
        assert sorted(leaders[:n]) == sorted(v.public_key for v in g.validators)


def test_index_of() -> None:
    g = committee(3)
    assert [g.index_of(key(i)) for i in (1, 2, 3)] == [0, 1, 2]
    assert g.index_of(key(9)) is None


def test_solo_is_a_one_validator_network() -> None:
    g = Genesis.solo("qudag-solo", "me", key(1))
    assert g.validators == (Validator("me", key(1)),)
    assert (g.n, g.f, g.quorum, g.leader(2)) == (1, 0, 1, key(1))


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
        (encoded(b"net", [(b"v", key(1))], version=2), Reason.BAD_VERSION),
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
