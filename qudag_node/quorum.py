"""The quorum watch: whether a validator is linked to enough validators to finalize
(itself included), and since when; with the per-peer last-message ages, kept current
every second for the metrics, and read by the status."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass

from qudag_node.gossip import PeerNetwork
from qudag_node.logs import get_logger
from qudag_node.metrics import Metrics

log = get_logger("qudag.node")


@dataclass(frozen=True, slots=True)
class QuorumState:
    """Whether a validator is linked to a quorum (``linked`` validators, itself
    included) and since when (Unix time of the last change)."""

    able: bool
    linked: int
    since: float


class QuorumWatch:
    """The quorum view of a node whose links are ``network`` (None: it has none), for a
    ``quorum`` of validators; an observer (``validator`` false) has no quorum view."""

    def __init__(
        self, network: PeerNetwork | None, metrics: Metrics, *, quorum: int, validator: bool
    ) -> None:
        self._network = network
        self._metrics = metrics
        self._quorum = quorum
        self._validator = validator
        self._state: QuorumState | None = None

    async def run(self) -> None:
        """Keep the per-peer last-message ages and the quorum view current (started for
        a node with peer links only)."""
        network = self._network
        assert network is not None
        while True:
            self._metrics.on_peer_ages({str(p): age for p, age in network.last_seen().items()})
            self.observe()
            await asyncio.sleep(1.0)

    def observe(self) -> QuorumState | None:
        """Whether this validator is linked to enough validators to finalize (itself
        included, a quorum), and since when; None for an observer. A change is logged."""
        if not self._validator:
            return None
        live = self._network.live_validators() if self._network is not None else 0
        linked = 1 + live
        able = linked >= self._quorum
        old = self._state
        if old is None or old.able != able:
            self._state = QuorumState(able, linked, time.time())
            if old is not None:
                (log.info if able else log.warning)(
                    "quorum_linked" if able else "quorum_lost",
                    validators_linked=linked,
                    quorum=self._quorum,
                )
        elif old.linked != linked:
            self._state = dataclasses.replace(old, linked=linked)
        assert self._state is not None
        self._metrics.on_quorum(self._state.able, linked, self._state.since)
        return self._state
