"""Bullshark commit rule over the DAG window.

Theory of operation
-------------------
Validators build the DAG in rounds (Narwhal). Each vertex of round ``r > 1``
references at least ``q = n - f`` vertices of round ``r - 1`` from distinct
validators; reliable, signed, one-per-round vertices make every honest node hold the
same vertex for a given (round, author), so DAGs differ only in what has arrived.

Even rounds have a leader, fixed by a round-robin schedule over the genesis order
(:meth:`Genesis.leader`). A round ``r + 1`` vertex that references the leader vertex
of round ``r`` is a *vote* for it. Once ``f + 1`` votes are held, the leader is
*committed* (partially synchronous Bullshark, Spiegelman et al., CCS 2022): among any
``n - f`` vertices of round ``r + 1`` at least one holds a vote, so every later leader
that is committed reaches this one through its causal history.

Committing leader ``L`` first commits, oldest first, every earlier uncommitted
leader that ``L`` reaches, walking back two rounds at a time to the last committed
leader. Each committed leader's causal history that is not yet ordered is then
appended to the finalized log, sorted by (round, author key), each vertex's
transactions in batch order, skipping ids already appended by the same commit.
Every honest node commits the same leaders in the same order and so appends the
same log; the running log hash makes that checkable.

With n = 1 the quorum and the vote threshold are 1: every round's vertex references
the previous one, and leader ``r`` commits as soon as round ``r + 1`` exists.
"""

from __future__ import annotations

from dataclasses import dataclass

from qudag_node.core.dag import Dag, DagVertex
from qudag_node.core.genesis import Genesis
from qudag_node.core.types import TxId


@dataclass(frozen=True, slots=True)
class CommittedLeader:
    """One committed leader and the vertices its commit ordered, in log order."""

    leader: DagVertex
    ordered: tuple[tuple[DagVertex, tuple[TxId, ...]], ...]


class Consensus:
    """Decides which leaders commit; owns the last committed leader round."""

    def __init__(self, genesis: Genesis, committed_round: int = 0) -> None:
        self._genesis = genesis
        self.committed_round = committed_round

    def leader_vertex(self, dag: Dag, round_: int) -> DagVertex | None:
        """The leader vertex of an even round, if held."""
        return dag.at(round_, self._genesis.leader(round_))

    def votes(self, dag: Dag, leader: DagVertex) -> int:
        """How many next-round vertices reference ``leader``."""
        return sum(leader.id in v.parents for v in dag.round(leader.round + 1).values())

    def on_vertex_added(self, dag: Dag, vertex: DagVertex) -> list[CommittedLeader]:
        """Commit what ``vertex`` (a possible vote) makes committable, oldest first."""
        round_ = vertex.round - 1
        if round_ < 2 or round_ % 2 or round_ <= self.committed_round:
            return []
        leader = self.leader_vertex(dag, round_)
        if leader is None or self.votes(dag, leader) < self._genesis.f + 1:
            return []
        chain = [leader]
        for earlier in range(round_ - 2, self.committed_round, -2):
            candidate = self.leader_vertex(dag, earlier)
            if candidate is not None and dag.reaches(chain[-1], candidate):
                chain.append(candidate)
        self.committed_round = round_
        return [CommittedLeader(lead, tuple(dag.take_history(lead))) for lead in reversed(chain)]
