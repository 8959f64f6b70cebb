"""Admission rules for transactions and vertices, each failure with a reason code."""

from __future__ import annotations

from collections.abc import Sequence

from qudag_node.core.crypto import Purpose, Verifier
from qudag_node.core.errors import InputRejected, Reason
from qudag_node.core.genesis import Genesis
from qudag_node.core.params import Params
from qudag_node.core.vertex import Vertex


def check_transaction(tx: bytes, params: Params) -> None:
    """Reject an empty or oversize transaction."""
    if not tx:
        raise InputRejected(Reason.EMPTY_TRANSACTION, "a transaction needs at least one byte")
    if len(tx) > params.max_tx_bytes:
        raise InputRejected(
            Reason.OVERSIZE_TRANSACTION,
            f"{len(tx)} bytes is over the limit of {params.max_tx_bytes}",
        )


def check_batch(txs: Sequence[bytes], params: Params) -> None:
    """Check every transaction of a client batch; the error names the first bad index."""
    for i, tx in enumerate(txs):
        try:
            check_transaction(tx, params)
        except InputRejected as e:
            raise InputRejected(e.reason, f"transaction {i}: {e.message}") from None


def check_vertex(
    vertex: Vertex, genesis: Genesis, params: Params, wall: float, verifier: Verifier
) -> None:
    """Checks that need no other vertex: network, author, signature, clock, round shape.
    ``wall`` is the wall-clock time (seconds since the epoch) the timestamp is held to."""
    h = vertex.header
    if h.network != genesis.hash:
        raise InputRejected(Reason.WRONG_NETWORK, "vertex belongs to another genesis")
    if h.scheme is not genesis.scheme:
        raise InputRejected(
            Reason.WRONG_SCHEME, f"vertex signed with {h.scheme.label}, not {genesis.scheme.label}"
        )
    check = genesis.signature_check(h.author, Purpose.VERTEX, vertex.id, vertex.signature)
    if check is None:
        raise InputRejected(Reason.UNKNOWN_AUTHOR, f"author {h.author.hex()[:16]} is no validator")
    if h.round < 1:
        raise InputRejected(Reason.BAD_ROUND, "rounds start at 1")
    if h.timestamp_ms > (wall + params.max_clock_skew) * 1000:
        raise InputRejected(Reason.FUTURE_TIMESTAMP, "vertex timestamp is in the future")
    if h.round == 1 and h.parents:
        raise InputRejected(Reason.BAD_PARENT, "a round-1 vertex has no parents")
    if h.round > 1 and len(h.parents) < genesis.quorum:
        raise InputRejected(
            Reason.TOO_FEW_PARENTS, f"{len(h.parents)} parents, quorum is {genesis.quorum}"
        )
    if not verifier.verify(check):
        raise InputRejected(Reason.BAD_SIGNATURE, "signature does not verify")
