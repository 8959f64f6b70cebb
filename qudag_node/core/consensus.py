"""Bullshark commit rule over the certified DAG.

Theory of operation
-------------------
Validators build the DAG in rounds (Narwhal). A validator's round-``r`` vertex
names as parents at least ``q = n - f`` certified vertices of round ``r - 1`` from
distinct validators (none for ``r = 1``). Before a vertex may enter anyone's DAG it
needs a *certificate*: votes from ``q`` validators, each of whom votes at most once
per (round, author) and only for a vertex whose parents it holds
(:mod:`~qudag_node.core.certificate`). Two quorums share an honest validator, so an
equivocating author gets at most one of its vertices certified: every honest node
holds the same vertex for a (round, author), and a vertex's causal history is the
same everywhere. DAGs of honest nodes differ only in what has arrived.

Even rounds have a leader, fixed by a round-robin schedule over the genesis order
(:meth:`Genesis.leader`). A round ``r + 1`` vertex that names the leader vertex of
round ``r`` as a parent is a *vote* for it. Once ``f + 1`` votes are held, the
leader is *committed* (partially synchronous Bullshark, Spiegelman et al., CCS
2022): any ``q`` vertices of round ``r + 1`` include at least one vote, so every
leader of a later round that reaches ``q`` vertices of round ``r + 1`` reaches this
leader too, and no honest node can commit a later leader that skips it.

Committing leader ``L`` first commits, oldest first, every earlier uncommitted
leader that ``L`` reaches, walking back two rounds at a time to the last committed
leader; leader rounds it passes over are *skipped* on every node alike. The engine
then orders each committed leader's causal history (see
:meth:`qudag_node.core.dag.Dag.take_history` and ``docs/protocol.md``). Every
honest node commits the same leaders in the same order and so appends the same log.

With n = 1 the quorum and the vote threshold are 1: every round's vertex names the
previous one, and leader ``r`` commits as soon as round ``r + 1`` exists.
"""

from __future__ import annotations

from dataclasses import dataclass

from qudag_node.core.dag import Dag, DagVertex
from qudag_node.core.genesis import Genesis


@dataclass(frozen=True, slots=True)
class Commit:
    """One leader to commit, and the leader rounds skipped just before it."""

    leader: DagVertex
    skipped: tuple[int, ...]


class Consensus:
    """Decides which leaders commit; owns the last committed leader round."""

    def __init__(self, genesis: Genesis, committed_round: int = 0) -> None:
        self._genesis = genesis
        self.committed_round = committed_round

    def leader_vertex(self, dag: Dag, round_: int) -> DagVertex | None:
        """The leader vertex of an even round, if held."""
        return dag.at(round_, self._genesis.leader(round_))

    def votes(self, dag: Dag, leader: DagVertex) -> int:
        """How many next-round vertices name ``leader`` as a parent."""
        return sum(leader.id in v.parents for v in dag.round(leader.round + 1).values())

    def on_vertex_added(self, dag: Dag, vertex: DagVertex) -> list[Commit]:
        """The leaders that ``vertex`` (a possible vote) makes committable, oldest first."""
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
        commits: list[Commit] = []
        previous = self.committed_round
        for lead in reversed(chain):
            skipped = tuple(range(max(previous + 2, 2), lead.round, 2))
            commits.append(Commit(lead, skipped))
            previous = lead.round
        self.committed_round = round_
        return commits


def committed_leaders(genesis: Genesis, dag: Dag, low: int) -> list[DagVertex]:
    """The committed leaders among rounds ``low`` and above, highest round first, read
    back from a DAG whose vertices carry their ordered flag (as stored).

    The highest ordered leader vertex is the last committed leader: every ordered vertex
    lies in the causal history of a committed leader, so none is above it. Walking down
    from it, a leader is committed exactly when the nearest committed leader above it
    reaches it (the chain rule of :meth:`Consensus.on_vertex_added`); a leader that is
    ordered but not reached was skipped, and was ordered later as an ordinary vertex of
    some leader's history.
    """
    found: list[DagVertex] = []
    top = dag.highest_round()
    for round_ in range(top - top % 2, max(low, 2) - 1, -2):
        leader = dag.at(round_, genesis.leader(round_))
        if leader is None or not dag.is_ordered(leader.id):
            continue
        if not found or dag.reaches(found[-1], leader):
            found.append(leader)
    return found
