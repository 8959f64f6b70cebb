"""State sync: starting the engine from a certified checkpoint instead of the history.

A node that joins late (or whose peers no longer hold the rounds it lacks) takes a
peer's latest certified checkpoint, the ids of its window and the window's vertices
with their certificates. :class:`WindowFetch` gathers what arrives and
:func:`check_window` checks all of it against the genesis alone;
:func:`~qudag_node.core.resume.snapshot_from_checkpoint` then gives the engine the
snapshot to resume from.

Nothing a peer says is taken on its word: the checkpoint must carry a quorum of the
genesis validators' signatures, the window must hash to the checkpoint's root, and
every vertex must be signed by its author, certified by a quorum, and listed in the
window. A Byzantine peer can only withhold or delay.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from qudag_node.core.certificate import Certificate, check_certificate
from qudag_node.core.checkpoint import CertifiedCheckpoint, check_certified
from qudag_node.core.crypto import Verifier
from qudag_node.core.errors import InputRejected, Reason
from qudag_node.core.genesis import Genesis
from qudag_node.core.params import Params
from qudag_node.core.rules import check_vertex
from qudag_node.core.types import VertexId
from qudag_node.core.vertex import Vertex


def check_offer(
    certified: CertifiedCheckpoint,
    window: Sequence[VertexId],
    genesis: Genesis,
    verifier: Verifier,
    committed_round: int,
) -> None:
    """Require a peer's offered checkpoint to be certified for this network, ``window``
    to be exactly its window, and its round to lie above ``committed_round`` (ours);
    raises :class:`InputRejected` (``bad_checkpoint``, ``wrong_network``,
    ``wrong_scheme``, ``stale_round``) otherwise."""
    check_certified(certified, genesis, verifier)
    checkpoint = certified.checkpoint
    if len(set(window)) != len(window) or not checkpoint.holds_window(window):
        raise InputRejected(Reason.BAD_CHECKPOINT, "window ids do not match the checkpoint")
    if checkpoint.round <= committed_round:
        raise InputRejected(
            Reason.STALE_ROUND,
            f"checkpoint round {checkpoint.round} is not above our round {committed_round}",
        )


def check_window_vertex(
    certified: CertifiedCheckpoint,
    window: frozenset[VertexId],
    vertex: Vertex,
    certificate: Certificate,
    genesis: Genesis,
    params: Params,
    wall: float,
    verifier: Verifier,
) -> None:
    """Require ``vertex`` to be one of the window's, signed by its author and certified
    by a quorum, as any received vertex is; raises :class:`InputRejected`."""
    checkpoint = certified.checkpoint
    if vertex.id not in window:
        raise InputRejected(Reason.BAD_CHECKPOINT, "vertex is not in the checkpoint's window")
    if not checkpoint.round - params.gc_depth <= vertex.round <= checkpoint.round:
        raise InputRejected(Reason.BAD_ROUND, f"window vertex of round {vertex.round}")
    check_vertex(vertex, genesis, params, wall, verifier)
    check_certificate(certificate, vertex.id, genesis, verifier)


def check_window(
    certified: CertifiedCheckpoint,
    window: Sequence[VertexId],
    vertices: Mapping[VertexId, tuple[Vertex, Certificate]],
    genesis: Genesis,
    params: Params,
    wall: float,
    verifier: Verifier,
) -> None:
    """Check a checkpoint, its window and every window vertex (see :func:`check_offer`
    and :func:`check_window_vertex`); raises :class:`InputRejected` (``bad_checkpoint``
    also for a window vertex missing, or a leader that is not the window's vertex of
    the checkpoint's round)."""
    check_offer(certified, window, genesis, verifier, committed_round=0)
    checkpoint = certified.checkpoint
    listed = frozenset(window)
    missing = listed.difference(vertices)
    if missing:
        raise InputRejected(Reason.BAD_CHECKPOINT, f"{len(missing)} window vertices missing")
    for vertex, certificate in vertices.values():
        check_window_vertex(certified, listed, vertex, certificate, genesis, params, wall, verifier)
    leader = vertices.get(checkpoint.leader)
    if leader is None or leader[0].round != checkpoint.round:
        raise InputRejected(Reason.BAD_CHECKPOINT, "the leader is not in the window at its round")


class WindowFetch:
    """The window vertices of one offered checkpoint, gathered as they arrive."""

    def __init__(self, certified: CertifiedCheckpoint, window: Sequence[VertexId]) -> None:
        self.certified = certified
        self.window = tuple(window)
        self._listed = frozenset(window)
        self._arrived: dict[VertexId, tuple[Vertex, Certificate]] = {}

    def wants(self, vid: VertexId) -> bool:
        """Whether ``vid`` is a window vertex that has not arrived yet."""
        return vid in self._listed and vid not in self._arrived

    def add(self, vertex: Vertex, certificate: Certificate) -> None:
        """Keep an arrived window vertex (checked by the caller)."""
        self._arrived[vertex.id] = (vertex, certificate)

    def missing(self) -> list[VertexId]:
        """The window ids that have not arrived, in window order."""
        return [vid for vid in self.window if vid not in self._arrived]

    @property
    def vertices(self) -> Mapping[VertexId, tuple[Vertex, Certificate]]:
        """What arrived, by id."""
        return self._arrived
