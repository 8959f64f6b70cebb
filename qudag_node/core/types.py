"""Identifier types and the time of an input, shared by the core and its adapters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NewType

#: 32-byte hash of a transaction's bytes.
TxId = NewType("TxId", bytes)
#: 32-byte hash of a vertex's canonical header.
VertexId = NewType("VertexId", bytes)
#: A node's public key in its network's signature scheme (32 B for Ed25519, 1,984 B for
#: the ML-DSA-65 + Ed25519 composite).
PublicKey = NewType("PublicKey", bytes)
#: 32 bytes naming a node: its Ed25519 public key on an ``ed25519`` network, the hash of
#: its composite public key on a ``mldsa65-ed25519`` one (see ``crypto.node_id``).
NodeId = NewType("NodeId", bytes)
#: 32-byte hash of a network's genesis.
GenesisHash = NewType("GenesisHash", bytes)
#: Adapter-chosen name of a peer link (opaque to the core).
PeerId = NewType("PeerId", str)
#: Position of a transaction in the finalized log, starting at 1.
Seq = NewType("Seq", int)

HASH_SIZE = 32


@dataclass(frozen=True, slots=True)
class Instant:
    """When an input reaches the engine, read from two clocks by its caller.

    ``monotonic`` (seconds, any origin, never going back) runs every timer; ``wall``
    (seconds since the Unix epoch) is what a vertex's signed timestamp is made from and
    checked against. A simulation's one clock may give both.
    """

    monotonic: float
    wall: float
