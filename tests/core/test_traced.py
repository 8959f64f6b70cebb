"""The TRACED wrapper: a trace context around another message, outside its signatures."""

from __future__ import annotations

import pytest

from qudag_node.core.errors import InputRejected, Reason
from qudag_node.core.events import MessageRejected
from qudag_node.core.messages import (
    CertificateMessage,
    FetchMessage,
    ProposalMessage,
    encode_message,
)
from qudag_node.core.wire import (
    CODECS,
    TRACED,
    Owner,
    Traced,
    decode_traced,
    encode_traced,
    message_kind,
    owner_of,
    vertex_of,
)
from tests.core.support import (
    NOW,
    PARAMS,
    PEER,
    ROUND1,
    C,
    drain,
    message,
    moment,
    proposal,
    vote,
)

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
VERTEX = ROUND1[0]


def test_a_wrapper_is_read_back_with_its_inner_message() -> None:
    inner = proposal(VERTEX)
    data = encode_traced(TRACEPARENT, inner)
    assert data[:2] == bytes((TRACED, 55))
    assert decode_traced(data) == Traced(TRACEPARENT, inner)
    assert CODECS[TRACED].decode(data, PARAMS) == ProposalMessage(VERTEX)
    assert message_kind(data) == "traced"
    assert owner_of(data) is Owner.ENGINE


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (bytes((TRACED,)), Reason.TRUNCATED),  # no length
        (bytes((TRACED, 55)) + TRACEPARENT.encode()[:20], Reason.TRUNCATED),
        (bytes((TRACED, 55)) + TRACEPARENT.encode(), Reason.TRUNCATED),  # no inner message
        (bytes((TRACED, 54)) + TRACEPARENT.encode()[:54] + b"\x05", Reason.NON_CANONICAL),
        (bytes((TRACED, 55)) + TRACEPARENT.upper().encode() + b"\x05", Reason.NON_CANONICAL),
        (bytes((TRACED, 55)) + b"01" + TRACEPARENT.encode()[2:] + b"\x05", Reason.NON_CANONICAL),
        (
            bytes((TRACED, 55)) + f"00-{'0' * 32}-00f067aa0ba902b7-01".encode() + b"\x05",
            Reason.NON_CANONICAL,
        ),
        (
            bytes((TRACED, 55)) + f"00-{'a' * 32}-{'0' * 16}-01".encode() + b"\x05",
            Reason.NON_CANONICAL,
        ),
        (
            bytes((TRACED, 55)) + TRACEPARENT.replace("-", "_").encode() + b"\x05",
            Reason.NON_CANONICAL,
        ),
        (
            bytes((TRACED, 55)) + TRACEPARENT.encode() + encode_traced(TRACEPARENT, b"\x05"),
            Reason.NON_CANONICAL,  # a wrapper inside a wrapper
        ),
    ],
    ids=[
        "no-length",
        "short-traceparent",
        "no-inner",
        "short-form",
        "upper-case",
        "version-01",
        "zero-trace",
        "zero-span",
        "no-dashes",
        "nested",
    ],
)
def test_malformed_wrappers_are_refused(data: bytes, reason: Reason) -> None:
    with pytest.raises(InputRejected) as refused:
        decode_traced(data)
    assert refused.value.reason is reason
    with pytest.raises(InputRejected):
        CODECS[TRACED].decode(data, PARAMS)


def test_wrapping_what_cannot_be_wrapped_is_our_misuse() -> None:
    for traceparent, inner in [
        ("00-xyz", b"\x05"),
        (TRACEPARENT, b""),
        (TRACEPARENT, encode_traced(TRACEPARENT, b"\x05")),
    ]:
        with pytest.raises(ValueError, match="cannot wrap"):
            encode_traced(traceparent, inner)


def test_the_vertex_a_message_is_about() -> None:
    certificate = CertificateMessage(VERTEX.id, C.certificate(VERTEX))
    assert vertex_of(proposal(VERTEX)) == VERTEX.id
    assert vertex_of(message(VERTEX)) == VERTEX.id
    assert vertex_of(vote(VERTEX, 1)) == VERTEX.id
    assert vertex_of(encode_message(certificate)) == VERTEX.id
    assert vertex_of(encode_message(FetchMessage((VERTEX.id,)))) is None
    assert vertex_of(proposal(VERTEX)[:20]) is None
    assert vertex_of(b"") is None


def test_the_engine_takes_a_wrapped_message_as_the_bare_one() -> None:
    bare, wrapped = C.observer(), C.observer()
    bare.receive_message(PEER, message(VERTEX), moment(NOW))
    wrapped.receive_message(PEER, encode_traced(TRACEPARENT, message(VERTEX)), moment(NOW))
    assert drain(wrapped) == drain(bare) != []


def test_the_engine_refuses_a_malformed_wrapper_as_traced() -> None:
    engine = C.observer()
    data = bytes((TRACED, 55)) + TRACEPARENT.upper().encode() + message(VERTEX)
    engine.receive_message(PEER, data, moment(NOW))
    [rejected] = drain(engine)
    assert isinstance(rejected, MessageRejected)
    assert (rejected.reason, rejected.kind) == (Reason.NON_CANONICAL, "traced")
