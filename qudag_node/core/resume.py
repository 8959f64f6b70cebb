"""The engine's starting state at a certified checkpoint (state sync's end).

The snapshot holds the log's length and running hash at the checkpoint, its round as
the committed round, and the window's vertices, ordered and certified, whose
transaction ids fill the deduplication window exactly as on a node that committed the
checkpoint's leader itself: from there every later commit appends the same entries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from qudag_node.core.certificate import Certificate
from qudag_node.core.checkpoint import CertifiedCheckpoint
from qudag_node.core.crypto import Verifier
from qudag_node.core.engine import Snapshot, StoredVertex
from qudag_node.core.genesis import Genesis
from qudag_node.core.params import Params
from qudag_node.core.statesync import check_window
from qudag_node.core.types import VertexId
from qudag_node.core.vertex import Vertex


def snapshot_from_checkpoint(
    certified: CertifiedCheckpoint,
    window: Sequence[VertexId],
    vertices: Mapping[VertexId, tuple[Vertex, Certificate]],
    genesis: Genesis,
    params: Params,
    wall: float,
    verifier: Verifier,
) -> Snapshot:
    """Check everything (:func:`~qudag_node.core.statesync.check_window`) and return the
    engine :class:`Snapshot` that continues from the checkpoint; raises
    :class:`~qudag_node.core.errors.InputRejected` if anything does not hold."""
    check_window(certified, window, vertices, genesis, params, wall, verifier)
    checkpoint = certified.checkpoint
    ordered = sorted(window, key=lambda vid: (vertices[vid][0].round, vid))
    return Snapshot(
        checkpoint.log_length,
        checkpoint.log_hash,
        checkpoint.round,
        tuple(_stored(*vertices[vid]) for vid in ordered),
        (),
    )


def _stored(vertex: Vertex, certificate: Certificate) -> StoredVertex:
    return StoredVertex(
        vertex.id,
        vertex.header,
        vertex.header_bytes,
        vertex.signature,
        vertex.tx_ids,
        True,
        certificate,
    )
