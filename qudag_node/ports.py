"""Interfaces between the adapters, and the plain records that cross them.

The HTTP API sees the node only through :class:`NodeApi`; the store returns the
records defined here. Both sides import this module, never each other.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from qudag_node.core.types import PublicKey, TxId, VertexId


class TxState(enum.Enum):
    """Where a transaction stands."""

    PENDING = "pending"  # stored, waiting for a vertex
    INCLUDED = "included"  # carried by a vertex that is not ordered yet
    FINAL = "final"  # has a position in the finalized log


class StorageFull(Exception):
    """A write refused for lack of disk space (HTTP 507 ``insufficient_storage``):
    nothing of it was stored or acknowledged. The node's fault, not the client's;
    writes resume once space is freed."""


@dataclass(frozen=True, slots=True)
class TxRecord:
    """A stored transaction's status."""

    id: TxId
    state: TxState
    vertex: VertexId | None
    seq: int | None
    size: int


@dataclass(frozen=True, slots=True)
class VertexRecord:
    """A stored vertex, without its transaction bytes."""

    id: VertexId
    round: int
    author: PublicKey
    timestamp_ms: int
    parents: tuple[VertexId, ...]
    tx_ids: tuple[TxId, ...]
    scheme: int
    signature: bytes
    ordered: bool
    certificate: bytes | None  # None until a quorum of validators voted for it


@dataclass(frozen=True, slots=True)
class EvidenceRecord:
    """Proof that a validator signed two vertices for one round."""

    author: PublicKey
    round: int
    data: bytes  # two signed headers; format in docs/protocol.md


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One finalized log entry."""

    seq: int
    tx_id: TxId
    vertex: VertexId
    hash: bytes


@dataclass(frozen=True, slots=True)
class SubmitReceipt:
    """What a submit stored: every id, and which were already known."""

    ids: tuple[TxId, ...]
    duplicates: int


@dataclass(frozen=True, slots=True)
class Check:
    """One readiness or liveness condition."""

    name: str
    ok: bool
    detail: str


class NodeApi(Protocol):
    """What the HTTP API may ask of the node."""

    async def submit(self, transactions: Sequence[bytes]) -> SubmitReceipt:
        """Store a batch durably, then return; raises ``InputRejected`` on bad input."""
        ...

    async def wait_final(self, ids: Sequence[TxId], timeout: float) -> bool:
        """True once every id is final; False when ``timeout`` passes first."""
        ...

    async def transaction(self, tx_id: TxId) -> TxRecord | None:
        """A transaction's status, or None when unknown."""
        ...

    async def vertex(self, vertex_id: VertexId) -> VertexRecord | None:
        """A stored vertex, or None when unknown."""
        ...

    async def log(self, start: int, limit: int) -> list[LogRecord]:
        """Finalized entries with ``seq >= start``, in order, at most ``limit``."""
        ...

    async def evidence(self, limit: int) -> list[EvidenceRecord]:
        """Equivocation evidence held, most recent rounds first, at most ``limit``."""
        ...

    def status(self) -> dict[str, Any]:
        """The node's status document (JSON-ready)."""
        ...

    def peers(self) -> list[dict[str, Any]]:
        """Each linked peer and each candidate peer address (JSON-ready)."""
        ...

    async def liveness(self) -> list[Check]:
        """Checks that the event loop and the database answer."""
        ...

    def readiness(self) -> list[Check]:
        """Checks that decide whether the node should get traffic."""
        ...
