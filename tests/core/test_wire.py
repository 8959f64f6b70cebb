"""The codec table: every message type has one owner, one name and a decoder that reads it."""

from __future__ import annotations

import pytest

from qudag_node.core.errors import InputRejected, Reason
from qudag_node.core.messages import (
    CheckpointSignatureMessage,
    FetchMessage,
    Message,
    MessageType,
    ProposalMessage,
    TransactionsMessage,
    encode_message,
)
from qudag_node.core.syncwire import (
    CheckpointRequest,
    Holdings,
    Ids,
    RoundsDone,
    RoundsRequest,
    Status,
    Summary,
    SyncMessage,
    SyncType,
    encode_sync,
)
from qudag_node.core.types import VertexId
from qudag_node.core.wire import CODECS, TRACED, Owner, message_kind, owner_of
from tests.core.support import PARAMS, C

ID = VertexId(b"\x07" * 32)


def test_every_type_has_one_codec() -> None:
    assert sorted(CODECS) == sorted({*MessageType, *SyncType, TRACED})
    assert set(CODECS) == set(range(1, 19))
    assert {k for k, c in CODECS.items() if c.owner is Owner.ENGINE} == {*MessageType, TRACED}
    assert {k for k, c in CODECS.items() if c.owner is Owner.SYNC} == set(SyncType)
    names = [c.name for c in CODECS.values()]
    assert len(set(names)) == len(names)
    assert CODECS[SyncType.ROUNDS_DONE].name == "rounds_done"


ENGINE_MESSAGES: list[Message] = [
    ProposalMessage(C.vertex(0, 1)),
    FetchMessage((ID,)),
    TransactionsMessage((b"tx",)),
    CheckpointSignatureMessage(7, b"\x02" * 32, 3, b"\x09" * 64),
]
SYNC_MESSAGES: list[SyncMessage] = [
    Status(9, 8, 1, 3, b"\x01" * 32),
    Summary(1, 4, 2, (1, 0), (5, 0)),
    Ids(3, 3, (ID,)),
    RoundsRequest(1, 8),
    RoundsDone(1, 8),
    CheckpointRequest(0),
    Holdings(1, 2, 200),
]
#: (bytes, message, owner) of one message of most types.
CASES = [(encode_message(m), m, Owner.ENGINE) for m in ENGINE_MESSAGES] + [
    (encode_sync(m), m, Owner.SYNC) for m in SYNC_MESSAGES
]


@pytest.mark.parametrize(
    ("data", "message", "owner"), CASES, ids=[type(m).__name__ for _, m, _ in CASES]
)
def test_each_type_is_read_back_by_its_codec(
    data: bytes, message: Message | SyncMessage, owner: Owner
) -> None:
    codec = CODECS[data[0]]
    assert codec.decode(data, PARAMS) == message
    assert codec.owner is owner
    assert owner_of(data) is owner
    assert message_kind(data) == codec.name


def test_unknown_and_empty_messages_go_to_the_engine_which_refuses_them() -> None:
    for data in (b"", b"\x00", b"\x20", b"\xff"):
        assert owner_of(data) is Owner.ENGINE
        assert message_kind(data) == "unknown"
    with pytest.raises(InputRejected) as refused:
        CODECS[MessageType.VOTE].decode(encode_sync(RoundsDone(1, 2)), PARAMS)
    assert refused.value.reason is Reason.UNKNOWN_MESSAGE
