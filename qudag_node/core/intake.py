"""Vertices that wait for missing parents, and the ids being fetched for them.

A vertex whose parents are not all certified and held cannot be voted for nor enter
the DAG. It waits here, bounded in count and in payload bytes (the oldest is
dropped and counted when a bound is hit), while its missing parents are fetched by
id. A fetch that gets no answer is asked again of the next peer after the retry
interval.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from qudag_node.core.certificate import Certificate
from qudag_node.core.params import Params
from qudag_node.core.types import PeerId, VertexId
from qudag_node.core.vertex import Vertex


@dataclass(slots=True)
class Waiting:
    """A vertex held until its parents arrive; ``certificate`` once known."""

    vertex: Vertex
    certificate: Certificate | None
    missing: set[VertexId]
    peer: PeerId  # who sent it: blamed if it breaks a rule once its parents are known


@dataclass(slots=True)
class _Want:
    round_hint: int
    asked_at: float
    attempts: int = 0
    asked: list[PeerId] = field(default_factory=list)


class Intake:
    """The waiting buffer and the fetch schedule."""

    def __init__(self, params: Params) -> None:
        self._params = params
        self._waiting: OrderedDict[VertexId, Waiting] = OrderedDict()
        # missing parent -> waiting ids (a dict, so that release order is deterministic)
        self._blocked: dict[VertexId, dict[VertexId, None]] = {}
        self._wanted: OrderedDict[VertexId, _Want] = OrderedDict()
        self._bytes = 0
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._waiting)

    def __contains__(self, vid: object) -> bool:
        return vid in self._waiting

    @property
    def wanted(self) -> int:
        """How many vertex ids are being fetched."""
        return len(self._wanted)

    def get(self, vid: VertexId) -> Waiting | None:
        """A waiting vertex by id."""
        return self._waiting.get(vid)

    def hold(
        self,
        vertex: Vertex,
        certificate: Certificate | None,
        missing: set[VertexId],
        peer: PeerId,
    ) -> None:
        """Keep ``vertex`` until ``missing`` are all present; drop the oldest beyond bounds."""
        entry = self._waiting.get(vertex.id)
        if entry is not None:
            entry.certificate = entry.certificate or certificate
            return
        self._waiting[vertex.id] = Waiting(vertex, certificate, set(missing), peer)
        self._bytes += vertex.header.payload_bytes
        for pid in sorted(missing):
            self._blocked.setdefault(pid, {})[vertex.id] = None
        while len(self._waiting) > self._params.max_buffered or (
            self._bytes > self._params.max_buffered_bytes and len(self._waiting) > 1
        ):
            self._remove(next(iter(self._waiting)))
            self.dropped += 1

    def arrived(self, vid: VertexId) -> list[Waiting]:
        """``vid`` is now present: the waiting vertices it was the last missing parent of."""
        self._wanted.pop(vid, None)
        ready: list[Waiting] = []
        for wid in self._blocked.pop(vid, ()):
            entry = self._waiting.get(wid)
            if entry is None:
                continue
            entry.missing.discard(vid)
            if not entry.missing:
                self._remove(wid)
                ready.append(entry)
        return ready

    def want(
        self, ids: Iterable[VertexId], round_hint: int, peer: PeerId | None, now: float
    ) -> list[VertexId]:
        """Start fetching ``ids`` (from ``peer`` first); returns those not already asked."""
        new: list[VertexId] = []
        for vid in ids:
            if vid in self._wanted:
                continue
            want = _Want(round_hint, now)
            if peer is not None:
                want.asked.append(peer)
            self._wanted[vid] = want
            new.append(vid)
        limit = 4 * self._params.max_buffered
        while len(self._wanted) > limit:
            self._wanted.popitem(last=False)
        return new

    def due(self, now: float, peers: Sequence[PeerId]) -> dict[PeerId, list[VertexId]]:
        """Fetches to ask again now, by the peer to ask, rotating through ``peers``."""
        out: dict[PeerId, list[VertexId]] = {}
        if not peers:
            return out
        for vid, want in self._wanted.items():
            if want.asked_at + self._params.retry_interval > now:
                continue
            want.attempts += 1
            want.asked_at = now
            untried = [p for p in peers if p not in want.asked]
            peer = untried[0] if untried else peers[want.attempts % len(peers)]
            want.asked.append(peer)
            del want.asked[: -len(peers)]
            out.setdefault(peer, []).append(vid)
        return out

    def next_due(self) -> float | None:
        """When the earliest fetch should be asked again, or None."""
        if not self._wanted:
            return None
        return min(w.asked_at for w in self._wanted.values()) + self._params.retry_interval

    def prune_below(self, round_: int) -> None:
        """Forget waiting vertices and fetches of rounds below ``round_``."""
        for vid in [vid for vid, e in self._waiting.items() if e.vertex.round < round_]:
            self._remove(vid)
        for vid in [vid for vid, w in self._wanted.items() if w.round_hint < round_]:
            del self._wanted[vid]

    def _remove(self, vid: VertexId) -> None:
        entry = self._waiting.pop(vid)
        self._bytes -= entry.vertex.header.payload_bytes
        for pid in entry.missing:
            dependents = self._blocked.get(pid)
            if dependents is not None:
                dependents.pop(vid, None)
                if not dependents:
                    del self._blocked[pid]
