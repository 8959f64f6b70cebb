"""The in-memory window of the DAG: recent rounds only.

Older rounds live in the store. The window holds, per vertex, only what ordering
and checkpoints need: id, round, author, parents, signed timestamp, and the
transaction ids until the vertex is ordered.
"""

from __future__ import annotations

from dataclasses import dataclass

from qudag_node.core.types import NodeId, TxId, VertexId


@dataclass(frozen=True, slots=True)
class DagVertex:
    """What the DAG window keeps of one vertex."""

    id: VertexId
    round: int
    author: NodeId
    parents: tuple[VertexId, ...]
    payload_count: int
    timestamp_ms: int


class Dag:
    """Vertices by id and by (round, author), with the ordered set and pruning."""

    def __init__(self) -> None:
        self._by_id: dict[VertexId, DagVertex] = {}
        self._rounds: dict[int, dict[NodeId, DagVertex]] = {}
        self._unordered_ids: dict[VertexId, tuple[TxId, ...]] = {}
        self._floor = 0  # rounds below this were pruned

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, vid: object) -> bool:
        return vid in self._by_id

    @property
    def floor(self) -> int:
        """Lowest round still held (lower rounds were pruned)."""
        return self._floor

    def get(self, vid: VertexId) -> DagVertex | None:
        """A vertex by id."""
        return self._by_id.get(vid)

    def at(self, round_: int, author: NodeId) -> DagVertex | None:
        """The vertex of ``author`` in ``round_``, if held."""
        return self._rounds.get(round_, {}).get(author)

    def round(self, round_: int) -> dict[NodeId, DagVertex]:
        """All held vertices of a round, by author."""
        return self._rounds.get(round_, {})

    def highest_round(self) -> int:
        """The highest round holding any vertex (0 when empty)."""
        return max(self._rounds, default=0)

    def add(self, v: DagVertex, tx_ids: tuple[TxId, ...], ordered: bool) -> None:
        """Insert a vertex whose parents are held (or pruned)."""
        self._by_id[v.id] = v
        self._rounds.setdefault(v.round, {})[v.author] = v
        if not ordered:
            self._unordered_ids[v.id] = tx_ids

    def is_ordered(self, vid: VertexId) -> bool:
        """True once the vertex's transactions are in the finalized log."""
        return vid in self._by_id and vid not in self._unordered_ids

    def unordered_ids(self, vid: VertexId) -> tuple[TxId, ...]:
        """The transaction ids of a held vertex not ordered yet (empty otherwise)."""
        return self._unordered_ids.get(vid, ())

    def ordered_ids(self, low: int) -> list[VertexId]:
        """The ids of the held, ordered vertices of rounds at or above ``low``."""
        return [
            vid
            for vid, v in self._by_id.items()
            if v.round >= low and vid not in self._unordered_ids
        ]

    def has_unordered_payload(self) -> bool:
        """True while some held vertex carries transactions not yet final."""
        return any(self._unordered_ids.values())

    def reaches(self, start: DagVertex, target: DagVertex) -> bool:
        """True when ``target`` is in the causal history of ``start``."""
        frontier = {start.id}
        for _ in range(start.round - target.round):
            nxt: set[VertexId] = set()
            for vid in frontier:
                v = self._by_id.get(vid)
                if v is not None:
                    nxt.update(v.parents)
            frontier = nxt
            if not frontier:
                return False
        return target.id in frontier

    def take_history(self, leader: DagVertex) -> list[tuple[DagVertex, tuple[TxId, ...]]]:
        """Mark ``leader``'s unordered causal history ordered and return it, with ids.

        The order is deterministic: by round, then by author key.
        """
        seen: set[VertexId] = set()
        stack = [leader.id]
        found: list[DagVertex] = []
        while stack:
            vid = stack.pop()
            if vid in seen or vid not in self._unordered_ids:
                continue
            seen.add(vid)
            v = self._by_id[vid]
            found.append(v)
            stack.extend(v.parents)
        found.sort(key=lambda v: (v.round, v.author))
        return [(v, self._unordered_ids.pop(v.id)) for v in found]

    def prune_below(self, round_: int) -> list[tuple[DagVertex, tuple[TxId, ...]]]:
        """Forget rounds below ``round_``.

        Returns the dropped vertices that were never ordered, with their transaction
        ids: they can no longer be ordered (they are *orphaned*).
        """
        orphaned: list[tuple[DagVertex, tuple[TxId, ...]]] = []
        for r in sorted(r for r in self._rounds if r < round_):
            for v in self._rounds.pop(r).values():
                del self._by_id[v.id]
                if v.id in self._unordered_ids:
                    orphaned.append((v, self._unordered_ids.pop(v.id)))
        self._floor = max(self._floor, round_)
        return orphaned
