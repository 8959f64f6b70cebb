"""Peer messages: a one-byte type followed by the type's payload."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from qudag_node.core.errors import InputRejected, Reason
from qudag_node.core.params import Params
from qudag_node.core.vertex import Vertex, decode_vertex


class MessageType(enum.IntEnum):
    """Message type bytes."""

    VERTEX = 1


@dataclass(frozen=True, slots=True)
class VertexMessage:
    """A vertex pushed to a peer."""

    vertex: Vertex


Message = VertexMessage


def encode_message(message: Message) -> bytes:
    """Canonical bytes of a message."""
    return bytes((MessageType.VERTEX,)) + message.vertex.encode()


def decode_message(data: bytes, params: Params) -> Message:
    """Parse a message; any malformed input raises :class:`InputRejected`."""
    if not data:
        raise InputRejected(Reason.TRUNCATED, "empty message")
    if data[0] == MessageType.VERTEX:
        return VertexMessage(decode_vertex(data[1:], params))
    raise InputRejected(Reason.UNKNOWN_MESSAGE, f"message type {data[0]}")
