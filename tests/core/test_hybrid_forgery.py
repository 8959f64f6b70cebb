"""No change to a composite signature gets past the node's own checks.

A composite signature is an ML-DSA-65 signature (3,309 bytes) followed by an Ed25519
one (64 bytes), both over the same message representative. Flipping any byte of either
half, or putting together halves of signatures of two different messages (or of two
purposes of one message), must be refused where the node checks what peers sign:
:func:`~qudag_node.core.rules.check_vertex` for a vertex, the engine's vote path and
:func:`~qudag_node.core.certificate.check_certificate` for votes, and
:func:`~qudag_node.core.handshake.check_auth` for a link's AUTH.
"""

from __future__ import annotations

import dataclasses
import functools

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from qudag_node.core.certificate import Certificate, check_certificate
from qudag_node.core.crypto import Purpose, SequentialVerifier, tx_ids
from qudag_node.core.engine import Engine
from qudag_node.core.errors import InputRejected, Reason
from qudag_node.core.events import MessageRejected, VertexStored
from qudag_node.core.handshake import (
    MAC_SIZE,
    Side,
    check_auth,
    decode_hello,
    make_auth,
    make_hello,
    transcript,
)
from qudag_node.core.messages import VoteMessage, encode_message
from qudag_node.core.rules import check_vertex
from qudag_node.core.vertex import Vertex
from tests.core.support import CC, NOW, PARAMS, PEER, drain, moment

#: Where the ML-DSA-65 half of a composite signature ends and the Ed25519 half begins.
CUT = 3309
SIZE = CUT + 64
PROPERTIES = settings(derandomize=True, database=None, deadline=None, max_examples=200)
#: A byte of either half (each half is drawn about as often as the other).
POSITION = st.one_of(st.integers(0, CUT - 1), st.integers(CUT, SIZE - 1))
FLIP = st.integers(1, 255)
PAYLOAD = st.binary(min_size=1, max_size=16)


def flipped(signature: bytes, position: int, flip: int) -> bytes:
    """``signature`` with the byte at ``position`` xor-ed with ``flip``."""
    damaged = bytearray(signature)
    damaged[position] ^= flip
    return bytes(damaged)


def swapped(first: bytes, second: bytes) -> list[bytes]:
    """The two signatures made of one's ML-DSA half and the other's Ed25519 half."""
    return [first[:CUT] + second[CUT:], second[:CUT] + first[CUT:]]


# ------------------------------------------------------------------ vertices

VERTEX = CC.vertex(1, 1, txs=[b"signed once"])


def vertex_refusal(vertex: Vertex) -> Reason:
    """The reason :func:`check_vertex` refuses ``vertex`` with on :data:`CC`."""
    with pytest.raises(InputRejected) as info:
        check_vertex(vertex, CC.genesis, PARAMS, NOW, SequentialVerifier())
    return info.value.reason


def test_the_untouched_vertex_passes() -> None:
    assert len(VERTEX.signature) == SIZE
    check_vertex(VERTEX, CC.genesis, PARAMS, NOW, SequentialVerifier())


@PROPERTIES
@given(POSITION, FLIP)
def test_a_flipped_byte_of_a_vertex_signature_is_refused(position: int, flip: int) -> None:
    damaged = dataclasses.replace(VERTEX, signature=flipped(VERTEX.signature, position, flip))
    assert vertex_refusal(damaged) is Reason.BAD_SIGNATURE


@settings(derandomize=True, database=None, deadline=None, max_examples=25)
@given(PAYLOAD, PAYLOAD)
def test_halves_swapped_between_two_vertices_are_refused(first: bytes, second: bytes) -> None:
    assume(first != second)
    a, b = (CC.vertex(1, 1, txs=[payload]) for payload in (first, second))
    for signature in swapped(a.signature, b.signature):
        assert vertex_refusal(dataclasses.replace(a, signature=signature)) is Reason.BAD_SIGNATURE
        assert vertex_refusal(dataclasses.replace(b, signature=signature)) is Reason.BAD_SIGNATURE


def test_a_vote_signature_or_its_halves_do_not_sign_the_vertex() -> None:
    # the same signer and message for another purpose: another context, another M'
    vote = CC.signers[1].sign(Purpose.VOTE, VERTEX.id)
    for signature in [vote, *swapped(VERTEX.signature, vote)]:
        assert vertex_refusal(dataclasses.replace(VERTEX, signature=signature)) is (
            Reason.BAD_SIGNATURE
        )


# --------------------------------------------------------------------- votes


@functools.cache
def author() -> tuple[Engine, Vertex]:
    """Validator 0 of :data:`CC`, waiting for votes on its round-1 proposal. Refused
    votes leave it as it was, so the examples share it."""
    engine = Engine(CC.genesis, PARAMS, CC.signers[0])
    engine.submit_transactions(tx_ids([b"mine"]), [b"mine"], moment(NOW))
    [own] = [e.vertex for e in drain(engine) if isinstance(e, VertexStored)]
    return engine, own


def vote_refusal(signature: bytes) -> Reason:
    """The reason the author refuses validator 1's vote carrying ``signature``."""
    engine, own = author()
    vote = VoteMessage(own.id, 1, CC.scheme, signature)
    engine.receive_message(PEER, encode_message(vote), moment(NOW))
    [event] = drain(engine)
    assert isinstance(event, MessageRejected), event
    return event.reason


def certificate_refusal(vertex: Vertex, signatures: tuple[bytes, ...]) -> Reason:
    """The reason :func:`check_certificate` refuses votes 0, 1, 2 with ``signatures``."""
    certificate = Certificate(CC.scheme, (0, 1, 2), signatures)
    with pytest.raises(InputRejected) as info:
        check_certificate(certificate, vertex.id, CC.genesis, SequentialVerifier())
    assert "validator 1" in info.value.message
    return info.value.reason


@PROPERTIES
@given(POSITION, FLIP)
def test_a_flipped_byte_of_a_vote_signature_is_refused(position: int, flip: int) -> None:
    _, own = author()
    good = CC.certificate(own)
    damaged = flipped(good.signatures[1], position, flip)
    assert vote_refusal(damaged) is Reason.BAD_SIGNATURE
    signatures = (good.signatures[0], damaged, good.signatures[2])
    assert certificate_refusal(own, signatures) is Reason.BAD_CERTIFICATE


@settings(derandomize=True, database=None, deadline=None, max_examples=25)
@given(PAYLOAD)
def test_vote_halves_swapped_between_two_vertices_are_refused(payload: bytes) -> None:
    _, own = author()
    other = CC.vertex(0, 1, txs=[payload])
    assume(other.id != own.id)
    voter = CC.signers[1]
    ours, theirs = (voter.sign(Purpose.VOTE, v.id) for v in (own, other))
    for signature in swapped(ours, theirs):
        assert vote_refusal(signature) is Reason.BAD_SIGNATURE
        signatures = (CC.signers[0].sign(Purpose.VOTE, own.id), signature, ours)
        assert certificate_refusal(own, signatures) is Reason.BAD_CERTIFICATE


def test_a_vertex_signature_is_no_vote() -> None:
    # validator 1's signature of its own vertex, offered as its vote for that vertex
    vertex = CC.vertex(1, 1, txs=[b"as vote"])
    signatures = (
        CC.signers[0].sign(Purpose.VOTE, vertex.id),
        vertex.signature,
        CC.signers[2].sign(Purpose.VOTE, vertex.id),
    )
    assert certificate_refusal(vertex, signatures) is Reason.BAD_CERTIFICATE


# ------------------------------------------------------------------ handshake

TOKEN = b"\x5a" * 32
DIALER = CC.signers[0]
HELLOS = [
    make_hello(CC.genesis, CC.signers[i], bytes([n]) * 32).encode()
    for i, n in ((0, 1), (1, 2), (1, 3))
]
#: Two connections of the same dialer (to the same listener, with other nonces).
TRANSCRIPT = transcript(HELLOS[0], HELLOS[1], None)
OTHER_TRANSCRIPT = transcript(HELLOS[0], HELLOS[2], None)
AUTH = make_auth(TOKEN, DIALER, Side.DIALER, TRANSCRIPT)
OTHER_AUTH = make_auth(TOKEN, DIALER, Side.DIALER, OTHER_TRANSCRIPT)


def auth_refusal(data: bytes) -> Reason:
    """The reason the listener of :data:`TRANSCRIPT` refuses the dialer's AUTH ``data``."""
    with pytest.raises(InputRejected) as info:
        check_auth(data, TOKEN, decode_hello(HELLOS[0]), Side.DIALER, TRANSCRIPT)
    return info.value.reason


def test_the_untouched_auth_passes() -> None:
    assert len(AUTH) == MAC_SIZE + SIZE
    check_auth(AUTH, TOKEN, decode_hello(HELLOS[0]), Side.DIALER, TRANSCRIPT)


@PROPERTIES
@given(POSITION, FLIP)
def test_a_flipped_byte_of_a_handshake_signature_is_refused(position: int, flip: int) -> None:
    signature = flipped(AUTH[MAC_SIZE:], position, flip)
    assert auth_refusal(AUTH[:MAC_SIZE] + signature) is Reason.BAD_SIGNATURE


def test_handshake_halves_swapped_between_two_connections_are_refused() -> None:
    # the MAC of this connection, a signature put together from both connections'
    for signature in swapped(AUTH[MAC_SIZE:], OTHER_AUTH[MAC_SIZE:]):
        assert auth_refusal(AUTH[:MAC_SIZE] + signature) is Reason.BAD_SIGNATURE
    # the other connection's whole signature
    assert auth_refusal(AUTH[:MAC_SIZE] + OTHER_AUTH[MAC_SIZE:]) is Reason.BAD_SIGNATURE


def test_a_signature_for_another_purpose_is_no_handshake_signature() -> None:
    signed = b"qudag:link-auth" + Side.DIALER.value + TRANSCRIPT  # as docs/protocol.md says
    for purpose in (Purpose.VERTEX, Purpose.VOTE):
        signature = DIALER.sign(purpose, signed)
        assert auth_refusal(AUTH[:MAC_SIZE] + signature) is Reason.BAD_SIGNATURE
    resigned = AUTH[:MAC_SIZE] + DIALER.sign(Purpose.LINK, signed)  # hedged: other bytes
    assert resigned != AUTH
    check_auth(resigned, TOKEN, decode_hello(HELLOS[0]), Side.DIALER, TRANSCRIPT)
