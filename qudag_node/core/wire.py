"""The codec table: every peer message type, its name, its owner and its decoder.

A peer message is a type byte and the type's payload. Types 1 to 6 and 12 are the
consensus messages of :mod:`~qudag_node.core.messages`, owned by the engine; types 7 to
11 and 13 to 17 the
sync messages of :mod:`~qudag_node.core.syncwire`, owned by the syncer. The links
route each frame by :func:`owner_of`, and metrics name it by :func:`message_kind`;
both read :data:`CODECS`, so a new message type is declared in its module's enum and
nowhere else.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from qudag_node.core.messages import Message, MessageType, decode_message
from qudag_node.core.params import Params
from qudag_node.core.syncwire import SyncMessage, SyncType, decode_sync


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


#: Every message type byte, mapped to its codec.
CODECS: dict[int, Codec] = {
    **{t.value: Codec(t.name.lower(), Owner.ENGINE, decode_message) for t in MessageType},
    **{t.value: Codec(t.name.lower(), Owner.SYNC, _decode_sync) for t in SyncType},
}


def owner_of(data: bytes) -> Owner:
    """Who takes ``data`` in: its type's owner, or the engine for an unknown type (the
    engine refuses it as ``unknown_message`` and counts it)."""
    codec = CODECS.get(data[0]) if data else None
    return Owner.ENGINE if codec is None else codec.owner


def message_kind(data: bytes) -> str:
    """The lower-case name of a message's type, or ``unknown``."""
    codec = CODECS.get(data[0]) if data else None
    return "unknown" if codec is None else codec.name
