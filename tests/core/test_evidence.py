"""Equivocation evidence: it proves itself to anyone holding the genesis, or is refused."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from qudag_node.core.errors import InputRejected, Reason
from qudag_node.core.evidence import Equivocation, SignedHeader, decode_equivocation
from qudag_node.core.genesis import Genesis
from qudag_node.core.vertex import Vertex
from tests.core.support import R1, C


def signed(v: Vertex) -> SignedHeader:
    """The signed header of a vertex."""
    return SignedHeader(v.header_bytes, v.signature)


FIRST = C.vertex(2, 2, R1[:3], txs=[b"one"])
SECOND = C.vertex(2, 2, R1[:3], txs=[b"two"])
AUTHOR = C.signers[2].node_id
OTHER_NETWORK = Genesis("qudag-other", C.genesis.validators).hash


def evidence(first: Vertex, second: Vertex) -> bytes:
    """Evidence bytes naming ``first`` and ``second``, whatever they are."""
    return Equivocation(first.author, first.round, signed(first), signed(second)).encode()


def test_evidence_round_trips_and_proves_the_equivocation() -> None:
    proof = decode_equivocation(evidence(FIRST, SECOND), C.genesis)
    assert (proof.author, proof.round) == (AUTHOR, 2)
    assert (proof.first.id, proof.second.id) == (FIRST.id, SECOND.id)
    assert proof.encode() == evidence(FIRST, SECOND)


def forged_signature() -> bytes:
    data = bytearray(evidence(FIRST, SECOND))
    data[-1] ^= 1
    return bytes(data)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (lambda: evidence(FIRST, FIRST), Reason.NON_CANONICAL),
        (lambda: evidence(FIRST, C.vertex(2, 3, R1[:3])), Reason.NON_CANONICAL),
        (lambda: evidence(FIRST, C.vertex(1, 2, R1[:3])), Reason.NON_CANONICAL),
        (
            lambda: evidence(FIRST, C.vertex(2, 2, R1[:3], network=OTHER_NETWORK)),
            Reason.WRONG_NETWORK,
        ),
        (
            lambda: evidence(C.vertex(C.outsider, 2), C.vertex(C.outsider, 2, txs=[b"x"])),
            Reason.UNKNOWN_AUTHOR,
        ),
        (forged_signature, Reason.BAD_SIGNATURE),
        (lambda: evidence(FIRST, SECOND)[:-1], Reason.TRUNCATED),
        (lambda: evidence(FIRST, SECOND) + b"\x00", Reason.TRAILING_BYTES),
    ],
    ids=[
        "same vertex",
        "other round",
        "other author",
        "second from another network",
        "not a validator",
        "bad signature",
        "truncated",
        "trailing bytes",
    ],
)
def test_evidence_that_proves_nothing_is_refused(data: Callable[[], bytes], reason: Reason) -> None:
    with pytest.raises(InputRejected) as info:
        decode_equivocation(data(), C.genesis)
    assert info.value.reason is reason
