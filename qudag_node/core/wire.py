"""The codec table: every peer message type, its name, its owner and its decoder.

A peer message is a type byte and the type's payload. Types 1 to 6 and 12 are the
consensus messages of :mod:`~qudag_node.core.messages`, owned by the engine; types 7 to
11 and 13 to 17 the
sync messages of :mod:`~qudag_node.core.syncwire`, owned by the syncer. The links
route each frame by :func:`owner_of`, and metrics name it by :func:`message_kind`;
both read :data:`CODECS`, so a new message type is declared in its module's enum and
nowhere else.

Type 18, ``TRACED``, is a wrapper, not a message of its own: a W3C ``traceparent``
and another message, so that a trace can follow a vertex from node to node. It is
outside every signature; a node that does not trace never sends it, and every node
takes the inner message as if it had come alone (:func:`decode_traced`).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from qudag_node.core import codec
from qudag_node.core.crypto import vertex_id
from qudag_node.core.errors import InputRejected, Reason
from qudag_node.core.messages import Message, MessageType, decode_message
from qudag_node.core.params import Params
from qudag_node.core.syncwire import SyncMessage, SyncType, decode_sync
from qudag_node.core.types import HASH_SIZE, VertexId
from qudag_node.core.vertex import decode_header

#: The type byte of the trace wrapper.
TRACED = 18
#: The one ``traceparent`` form a wrapper may carry: version 00, lower-case hex.
TRACEPARENT_SIZE = 55
_HEX = frozenset(b"0123456789abcdef")


class Owner(enum.Enum):
    """Who takes a message in."""

    ENGINE = "engine"
    SYNC = "sync"


@dataclass(frozen=True, slots=True)
class Codec:
    """How to handle one message type: its lower-case name, its owner, its decoder
    (which raises :class:`~qudag_node.core.errors.InputRejected` on malformed input)."""

    name: str
    owner: Owner
    decode: Callable[[bytes, Params], Message | SyncMessage]


def _decode_sync(data: bytes, _params: Params) -> SyncMessage:
    return decode_sync(data)


def _decode_traced_inner(data: bytes, params: Params) -> Message | SyncMessage:
    inner = decode_traced(data).inner
    return CODECS[inner[0]].decode(inner, params)


#: Every message type byte, mapped to its codec.
CODECS: dict[int, Codec] = {
    **{t.value: Codec(t.name.lower(), Owner.ENGINE, decode_message) for t in MessageType},
    **{t.value: Codec(t.name.lower(), Owner.SYNC, _decode_sync) for t in SyncType},
    TRACED: Codec("traced", Owner.ENGINE, _decode_traced_inner),
}


@dataclass(frozen=True, slots=True)
class Traced:
    """A message sent with the trace context of the span that sent it."""

    traceparent: str
    inner: bytes


def encode_traced(traceparent: str, inner: bytes) -> bytes:
    """``TRACED | len:u8 | traceparent | inner``; a malformed ``traceparent`` or an inner
    message that is empty or itself a wrapper is our misuse (``ValueError``)."""
    raw = traceparent.encode("ascii")
    if not _is_traceparent(raw) or not inner or inner[0] == TRACED:
        raise ValueError(f"cannot wrap {len(inner)} bytes with traceparent {traceparent!r}")
    return b"".join((codec.u8(TRACED), codec.u8(len(raw)), raw, inner))


def decode_traced(data: bytes) -> Traced:
    """Parse a ``TRACED`` wrapper; raises :class:`InputRejected` (``truncated``,
    ``non_canonical``) when it is short, its ``traceparent`` is not the version-00 form,
    or its inner message is missing or a wrapper again."""
    r = codec.Reader(data)
    if r.u8("message type") != TRACED:
        raise InputRejected(Reason.UNKNOWN_MESSAGE, "not a TRACED wrapper")
    raw = r.fixed(r.u8("traceparent length"), "traceparent")
    if not _is_traceparent(raw):
        raise InputRejected(Reason.NON_CANONICAL, "traceparent is not 00-<trace>-<span>-<flags>")
    inner = r.remaining()
    if not inner:
        raise InputRejected(Reason.TRUNCATED, "TRACED without an inner message")
    if inner[0] == TRACED:
        raise InputRejected(Reason.NON_CANONICAL, "TRACED inside TRACED")
    return Traced(raw.decode("ascii"), inner)


def _is_traceparent(raw: bytes) -> bool:
    """``00-<32 hex>-<16 hex>-<2 hex>``, lower case, neither id all zeros."""
    if len(raw) != TRACEPARENT_SIZE or raw[:3] != b"00-" or raw[35:36] != b"-":
        return False
    if raw[52:53] != b"-":
        return False
    trace, span, flags = raw[3:35], raw[36:52], raw[53:]
    if not all(c in _HEX for c in trace + span + flags):
        return False
    return trace != b"0" * 32 and span != b"0" * 16


def vertex_of(data: bytes) -> VertexId | None:
    """The vertex a consensus message is about (``PROPOSAL``, ``VOTE``, ``CERTIFICATE``,
    ``CERTIFIED``), read without checking the rest; None for any other or a malformed
    one. A trace follows a vertex by this id."""
    kind = data[0] if data else None
    try:
        if kind in (MessageType.VOTE, MessageType.CERTIFICATE):
            return VertexId(codec.Reader(data[1:]).fixed(HASH_SIZE, "vertex id"))
        if kind == MessageType.PROPOSAL:
            start = 1
        elif kind == MessageType.CERTIFIED:
            start = 5
        else:
            return None
        r = codec.Reader(data[start:])
        decode_header(r)
        return vertex_id(data[start : start + r.position])
    except InputRejected:
        return None


def owner_of(data: bytes) -> Owner:
    """Who takes ``data`` in: its type's owner, or the engine for an unknown type (the
    engine refuses it as ``unknown_message`` and counts it)."""
    codec = CODECS.get(data[0]) if data else None
    return Owner.ENGINE if codec is None else codec.owner


def message_kind(data: bytes) -> str:
    """The lower-case name of a message's type, or ``unknown``."""
    codec = CODECS.get(data[0]) if data else None
    return "unknown" if codec is None else codec.name
