"""Protocol and engine limits, chosen by the operator and passed to the core."""

from __future__ import annotations

from dataclasses import dataclass

from qudag_node.core.errors import UsageError


@dataclass(frozen=True, slots=True)
class Params:
    """Tunable limits and intervals of the engine (times in seconds)."""

    #: Largest accepted transaction, in bytes.
    max_tx_bytes: int = 64 * 1024
    #: Most transactions one vertex may carry.
    max_vertex_txs: int = 10_000
    #: Most transaction bytes one vertex may carry.
    max_vertex_bytes: int = 4 * 1024 * 1024
    #: Most transactions waiting to be put into a vertex; more are refused (back-pressure).
    max_pending: int = 100_000
    #: Shortest time between two of our rounds.
    min_round_interval: float = 0.05
    #: Longest idle time without a new round (the slow heartbeat).
    heartbeat_interval: float = 10.0
    #: How long to wait for a round's leader vertex before moving on without it.
    leader_timeout: float = 2.0
    #: How far in the future a vertex timestamp may lie.
    max_clock_skew: float = 30.0
    #: Rounds kept in memory below the last committed leader. Part of the ordering
    #: rule: every node of one network must use the same value.
    gc_depth: int = 50
    #: Rounds between two checkpoints (see ``core/checkpoint.py``). Part of the
    #: checkpoint rule: every node of one network must use the same value.
    checkpoint_interval: int = 100
    #: How long to wait for an answer (votes, a fetched vertex) before asking again.
    retry_interval: float = 1.0
    #: Most vertices held while their parents are fetched; the oldest are dropped.
    max_buffered: int = 1_000
    #: Most transaction bytes held by those vertices.
    max_buffered_bytes: int = 32 * 1024 * 1024
    #: Most vertex ids one fetch request may name.
    max_fetch_ids: int = 256

    def __post_init__(self) -> None:
        checks = {
            "max_tx_bytes": self.max_tx_bytes >= 1,
            "max_vertex_txs": self.max_vertex_txs >= 1,
            "max_vertex_bytes": self.max_vertex_bytes >= self.max_tx_bytes,
            "max_pending": self.max_pending >= 1,
            "min_round_interval": self.min_round_interval >= 0,
            "heartbeat_interval": self.heartbeat_interval > 0,
            "leader_timeout": self.leader_timeout > 0,
            "max_clock_skew": self.max_clock_skew >= 0,
            "gc_depth": self.gc_depth >= 2,
            "checkpoint_interval": self.checkpoint_interval >= 2,
            "retry_interval": self.retry_interval > 0,
            "max_buffered": self.max_buffered >= 1,
            "max_buffered_bytes": self.max_buffered_bytes >= self.max_vertex_bytes,
            "max_fetch_ids": self.max_fetch_ids >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise UsageError(f"invalid engine parameters: {', '.join(bad)}")
