"""A finished simulated network and its latest certified checkpoint, for the tests of
state sync (the core's and the store's)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from qudag_node.core.certificate import Certificate, make_certificate
from qudag_node.core.checkpoint import CertifiedCheckpoint, Checkpoint
from qudag_node.core.crypto import Purpose
from qudag_node.core.genesis import Genesis
from qudag_node.core.retention import Retention
from qudag_node.core.types import PeerId, VertexId
from qudag_node.core.vertex import Vertex
from tests.core.sim import Faults, Simulation
from tests.core.simjoin import certified_latest
from tests.core.simstore import MemoryStore


@dataclass(frozen=True)
class Network:
    """A finished simulated run, its latest certified checkpoint and a peer's store."""

    sim: Simulation
    certified: CertifiedCheckpoint
    window: tuple[VertexId, ...]
    store: MemoryStore

    @property
    def genesis(self) -> Genesis:
        return self.sim.genesis

    def vertices(self) -> dict[VertexId, tuple[Vertex, Certificate]]:
        """The window's vertices, with their certificates, from the peer's store."""
        out = {}
        for vid in self.window:
            row = self.store.vertices[vid]
            assert row.certificate is not None
            out[vid] = (row.vertex, row.certificate)
        return out

    def signed(self, checkpoint: Checkpoint, voters: range) -> CertifiedCheckpoint:
        """``checkpoint`` signed by ``voters`` (validator indices)."""
        votes = {v: self.sim.signers[v].sign(Purpose.CHECKPOINT, checkpoint.digest) for v in voters}
        return CertifiedCheckpoint(checkpoint, make_certificate(self.genesis.scheme, votes))


@functools.cache
def network() -> Network:
    """A finished fault-free run of four validators (computed once)."""
    sim = Simulation(
        3, 4, Faults(observer=False), retention=Retention()
    )  # keeps everything: the whole log is compared
    result = sim.run()
    assert result.safe
    assert result.live
    trackers = {i: sim.trackers[PeerId(f"v{i}")] for i in sim.signers}
    served = certified_latest(sim.genesis, sim.signers, trackers)
    assert served is not None
    return Network(sim, served[0], served[1], sim.nodes[PeerId("v0")].store)
