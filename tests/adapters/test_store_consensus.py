"""The SQLite store under the multi-validator consensus, over real database files.

The reference for what the store must keep is the simulation's in-memory store
(:class:`tests.core.simstore.MemoryStore`): one honest node of a faulty simulated
network records every batch of events it persisted, and the same batches, in order,
go to a real :class:`~qudag_node.store.Store`. The other tests cover the schema-2
migration, re-proposal reads, and equivocation evidence.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from qudag_node.core.certificate import check_certificate, decode_certificate
from qudag_node.core.crypto import SequentialVerifier, Signer, log_hash_start, tx_ids
from qudag_node.core.engine import Engine, Snapshot, StoredVertex
from qudag_node.core.events import (
    EquivocationDetected,
    Fact,
    LeaderCommitted,
    TransactionsAdmitted,
    VertexStored,
)
from qudag_node.core.evidence import decode_equivocation
from qudag_node.core.genesis import Genesis
from qudag_node.core.messages import CertifiedMessage, decode_message
from qudag_node.core.params import Params
from qudag_node.core.retention import Retention
from qudag_node.core.types import NodeId, PeerId, TxId, VertexId
from qudag_node.core.vertex import Vertex
from qudag_node.store import DB_FILENAME, MIGRATIONS, SCHEMA_VERSION, Store
from tests.core.sim import Faults, Simulation
from tests.core.simstore import MemoryStore
from tests.core.support import NOW, PARAMS, PEER, C, drain, facts, feed, moment, proposal

SOLO = Signer(bytes(range(32)))
SOLO_GENESIS = Genesis.solo("qudag-test", "node1", SOLO.public_key)
#: The simulated run: the equivocator (also crashed for a while) sends its second
#: vertex of each round to validator v1 alone, whose store is recorded.
SIM_SEED = 4
SIM_FAULTS = Faults(loss=0.02, crash=(1.0, 5.0), equivocator=True, twin_to="one")
RECORDED = PeerId("v1")
#: A window shorter than the simulation's, so that snapshots leave old rounds out.
SHORT_DEPTH = 4
UNKNOWN = VertexId(b"\xee" * 32)


# ----------------------------------------------------------- the recorded run


async def _certified(store: MemoryStore, vid: VertexId) -> bytes | None:
    """The memory store's CERTIFIED message for ``vid``, if it holds it certified."""
    found = [m async for m in store.certified_messages([vid])]
    return found[0] if found else None


class RecordingStore(MemoryStore):
    """A simulated node's store that also keeps each batch of facts it persisted."""

    def __init__(self, log_start: bytes) -> None:
        super().__init__(log_start)
        self.batches: list[list[Fact]] = []

    def persist(self, events: Iterable[Fact]) -> None:
        """Record the batch, then apply it."""
        batch = list(events)
        self.batches.append(batch)
        super().persist(batch)


@dataclass(frozen=True)
class Recorded:
    """A finished simulation and what its recorded node persisted."""

    sim: Simulation
    store: RecordingStore

    @property
    def signer(self) -> Signer:
        """The recorded node's key."""
        return self.sim.nodes[RECORDED].signer

    @property
    def own_key(self) -> NodeId:
        """The recorded node's node id."""
        return self.signer.node_id

    @property
    def genesis(self) -> Genesis:
        """The simulated network's genesis."""
        return self.sim.genesis


@pytest.fixture(scope="module")
def recorded() -> Recorded:
    """One simulated run with an equivocator and a crash, recorded at an honest node."""
    sim = Simulation(
        SIM_SEED, 4, SIM_FAULTS, retention=Retention()
    )  # keeps everything: the whole log is compared
    store = RecordingStore(log_hash_start(sim.genesis.hash))
    sim.nodes[RECORDED].store = store
    result = sim.run()
    assert result.safe, result.detail
    assert result.live, result.detail
    return Recorded(sim, store)


async def replay(
    recorded: Recorded, data_dir: Path
) -> AsyncGenerator[tuple[int, Store, MemoryStore], None]:
    """Feed the recorded batches, in order, to a real store and to a fresh memory store;
    yields both after each batch. Iterate it within ``contextlib.aclosing``."""
    model = MemoryStore(log_hash_start(recorded.genesis.hash))
    store = await Store.open(data_dir, recorded.genesis)
    try:
        for number, batch in enumerate(recorded.store.batches, start=1):
            model.persist(batch)
            await store.persist(batch)
            yield number, store, model
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def replayed(recorded: Recorded, data_dir: Path) -> AsyncIterator[tuple[Store, MemoryStore]]:
    """A real store and a fresh memory store, each fed every recorded batch in order."""
    model = MemoryStore(log_hash_start(recorded.genesis.hash))
    store = await Store.open(data_dir, recorded.genesis)
    try:
        for batch in recorded.store.batches:
            model.persist(batch)
            await store.persist(batch)
        yield store, model
    finally:
        await store.close()


def _slot(v: StoredVertex) -> tuple[int, bytes]:
    return v.header.round, v.id


def assert_same_snapshot(db: Snapshot, mem: Snapshot, where: str) -> None:
    """The store's snapshot holds what the memory store's does, field by field."""
    assert db.log_length == mem.log_length, where
    assert db.log_hash == mem.log_hash, where
    assert db.committed_round == mem.committed_round, where
    rounds = [v.header.round for v in db.vertices]
    assert rounds == sorted(rounds), f"{where}: vertices not in round order"
    # within a round the order is the store's; the content must be the same
    assert sorted(db.vertices, key=_slot) == sorted(mem.vertices, key=_slot), where
    assert db.pending == mem.pending, where
    assert db.own_proposal == mem.own_proposal, where


def _entries(store: MemoryStore) -> list[tuple[int, bytes, bytes, bytes]]:
    return [(e.seq, e.tx_id, e.vertex, e.hash) for e in store.log]


# ----------------------------------------------------------- store vs memory


async def test_store_and_memory_store_agree_after_every_batch(
    recorded: Recorded, tmp_path: Path
) -> None:
    key = recorded.own_key
    depth = recorded.sim.params.gc_depth
    seen: Counter[str] = Counter()
    async with contextlib.aclosing(replay(recorded, tmp_path)) as steps:
        async for number, store, model in steps:
            for gc_depth in (depth, SHORT_DEPTH):
                mem = model.snapshot(key, gc_depth)
                db = await store.load_snapshot(recorded.genesis, gc_depth, key)
                assert_same_snapshot(db, mem, f"batch {number}, gc_depth {gc_depth}")
                seen["left out old rounds"] += len(mem.vertices) < len(model.vertices)
            seen["own proposal"] += mem.own_proposal is not None
            seen["uncertified"] += any(v.certificate is None for v in mem.vertices)
            seen["ordered"] += any(v.ordered for v in mem.vertices)
            seen["pending"] += bool(mem.pending)
    # the run went through every kind of state a snapshot can hold
    for kind in ("left out old rounds", "own proposal", "uncertified", "ordered", "pending"):
        assert seen[kind] > 0, kind


async def test_store_keeps_the_log_evidence_and_vertices_of_the_memory_store(
    recorded: Recorded, tmp_path: Path
) -> None:
    async with replayed(recorded, tmp_path) as (store, model):
        assert model.log, "the recorded node finalized nothing"
        assert _entries(model) == _entries(recorded.store)
        records = await store.log(1, len(model.log) + 10)
        assert [(r.seq, r.tx_id, r.vertex, r.hash) for r in records] == _entries(model)
        await _assert_same_evidence(store, model, recorded)
        await _assert_same_vertices(store, model)


async def _assert_same_evidence(store: Store, model: MemoryStore, recorded: Recorded) -> None:
    assert model.evidence, "the recorded node caught no equivocation"
    first: dict[tuple[bytes, int], bytes] = {}
    for e in model.evidence:
        first.setdefault((e.author, e.round), e.encode())
    expected = sorted(((a, r, d) for (a, r), d in first.items()), key=lambda x: -x[1])
    rows = await store.evidence(len(first) + 10)
    assert [(r.author, r.round, r.data) for r in rows] == expected
    faulty = recorded.sim.nodes[recorded.sim.faulty].signer.node_id
    for row in rows:
        proof = decode_equivocation(row.data, recorded.genesis)
        assert (proof.author, proof.round) == (row.author, row.round) == (faulty, row.round)


async def _assert_same_vertices(store: Store, model: MemoryStore) -> None:
    for vid, row in model.vertices.items():
        record = await store.vertex(vid)
        assert record is not None
        assert record.ordered == row.ordered
        expected = None if row.certificate is None else row.certificate.encode()
        assert record.certificate == expected


async def test_certified_messages_match_the_memory_store(
    recorded: Recorded, tmp_path: Path
) -> None:
    params = recorded.sim.params
    async with replayed(recorded, tmp_path) as (store, model):
        ids = [*model.vertices, UNKNOWN]
        certified = [vid for vid in ids if await _certified(model, vid) is not None]
        uncertified = [vid for vid in model.vertices if vid not in certified]
        assert certified
        assert uncertified, "the recorded node voted for no vertex that stayed uncertified"
        answers = [m async for m in store.certified_messages(ids)]
        assert len(answers) == len(certified)
        for vid, answer in zip(certified, answers, strict=True):
            expected = await _certified(model, vid)
            assert expected is not None
            got, want = decode_message(answer, params), decode_message(expected, params)
            assert isinstance(got, CertifiedMessage)
            assert isinstance(want, CertifiedMessage)
            assert got.vertex.id == vid
            assert (got.vertex, got.certificate) == (want.vertex, want.certificate)
            assert answer == expected
        assert [m async for m in store.certified_messages([*uncertified, UNKNOWN])] == []


# ------------------------------------------------------------------ restart


def _restart(recorded: Recorded, snapshot: Snapshot) -> Engine:
    """The recorded node's engine restored from ``snapshot``, linked to the other nodes."""
    engine = Engine(recorded.genesis, recorded.sim.params, recorded.signer, snapshot)
    for other in recorded.sim.nodes.values():
        if other.name != RECORDED:
            engine.peer_connected(other.name, other.signer.node_id)
    return engine


def _go_on(engine: Engine, now: float, steps: int = 3) -> list[object]:
    """What the engine does on its next ``steps`` timers from ``now``: its outputs."""
    out: list[object] = []
    for _ in range(steps):
        engine.handle_timer(moment(now))
        out.append(engine.take_output())
        timer = engine.get_timer()
        if timer is None:
            break
        now = max(now, timer)
    return out


async def test_engines_restored_from_either_store_are_the_same(
    recorded: Recorded, tmp_path: Path
) -> None:
    depth = recorded.sim.params.gc_depth
    key = recorded.own_key
    later = recorded.sim.now + 60.0
    restored_with_own_proposal = 0
    async with contextlib.aclosing(replay(recorded, tmp_path)) as steps:
        async for number, store, model in steps:
            db = await store.load_snapshot(recorded.genesis, depth, key)
            from_db = _restart(recorded, db)
            from_mem = _restart(recorded, model.snapshot(key, depth))
            a, b = from_db.statistics(), from_mem.statistics()
            where = f"batch {number}"
            assert (a.round, a.committed_round, a.log_length, a.log_hash) == (
                b.round,
                b.committed_round,
                b.log_length,
                b.log_hash,
            ), where
            assert (a.in_flight, a.pending) == (b.in_flight, b.pending), where
            assert a == b, where
            # and they go on alike: the same events and messages on the next timers
            went_on = _go_on(from_db, later)
            assert went_on == _go_on(from_mem, later), where
            assert any(went_on), where
            restored_with_own_proposal += db.own_proposal is not None
    assert restored_with_own_proposal > 0


# --------------------------------------------------------------- migration


def _write_schema_1(path: Path, genesis: Genesis, events: Sequence[Fact]) -> None:
    """A database as a schema-1 node wrote it: no certificates, no evidence table."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("BEGIN")
        for step in MIGRATIONS[0]:
            assert isinstance(step, str)
            db.execute(step)
        db.execute("PRAGMA user_version = 1")
        meta = [("genesis", genesis.hash), ("network_id", genesis.network_id.encode())]
        for ev in events:
            if isinstance(ev, TransactionsAdmitted):
                db.executemany(
                    "INSERT INTO transactions (id, data) VALUES (?, ?)",
                    zip(ev.ids, ev.transactions, strict=True),
                )
            elif isinstance(ev, VertexStored):
                v = ev.vertex
                db.execute(
                    "INSERT INTO vertices (id, round, author, header, signature, tx_ids)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (v.id, v.round, v.author, v.header_bytes, v.signature, b"".join(v.tx_ids)),
                )
            elif isinstance(ev, LeaderCommitted):
                db.executemany(
                    "INSERT INTO log (seq, hash, tx, vertex) SELECT ?, ?, t.rowid, v.rowid"
                    " FROM transactions AS t, vertices AS v WHERE t.id = ? AND v.id = ?",
                    [(e.seq, e.hash, e.tx_id, e.vertex) for e in ev.entries],
                )
                db.executemany(
                    "UPDATE vertices SET ordered = 1 WHERE id = ?", [(i,) for i in ev.ordered]
                )
                meta.append(("committed_round", ev.round.to_bytes(8, "big")))
        db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", meta)
        db.execute("COMMIT")


def _solo_run(engine: Engine, txs: Sequence[bytes], now: float) -> tuple[list[Fact], float]:
    """Submit ``txs`` to a solo engine and step it until they are final."""
    target = engine.statistics().log_length + len(txs)
    engine.submit_transactions(tx_ids(txs), txs, moment(now))
    events = facts(engine)
    while engine.statistics().log_length < target:
        timer = engine.get_timer()
        assert timer is not None
        now = max(now, timer)
        engine.handle_timer(moment(now))
        events += facts(engine)
    return events, now


async def test_a_schema_1_database_is_migrated_with_solo_certificates(tmp_path: Path) -> None:
    params = Params()
    old = Engine(SOLO_GENESIS, params, SOLO)
    old.handle_timer(moment(0.0))
    events = facts(old)
    more, now = _solo_run(old, [b"from", b"schema", b"one"], 0.5)
    events += more
    vertex_ids = [e.vertex.id for e in events if isinstance(e, VertexStored)]
    assert len(vertex_ids) >= 2
    _write_schema_1(tmp_path / DB_FILENAME, SOLO_GENESIS, events)

    store = await Store.open(tmp_path, SOLO_GENESIS)
    try:
        for vid in vertex_ids:
            record = await store.vertex(vid)
            assert record is not None
            assert record.certificate is not None
            cert = decode_certificate(record.certificate)
            assert cert.voters == (0,)
            assert cert.signatures == (record.signature,)
            check_certificate(
                cert, vid, SOLO_GENESIS, SequentialVerifier()
            )  # raises if it does not verify
        assert await store.evidence(10) == []
        snapshot = await store.load_snapshot(SOLO_GENESIS, params.gc_depth, SOLO.node_id)
        assert snapshot.own_proposal is None
        assert all(v.certificate is not None for v in snapshot.vertices)
        # the migrated node resumes where the old one was and keeps finalizing
        engine = Engine(SOLO_GENESIS, params, SOLO, snapshot)
        before = old.statistics()
        assert engine.statistics().log_length == before.log_length == 3
        assert engine.statistics().log_hash == before.log_hash
        later, _ = _solo_run(engine, [b"after", b"migration"], now + 1.0)
        await store.persist(later)
        entries = await store.log(1, 10)
        assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
        assert entries[-1].hash == engine.statistics().log_hash
    finally:
        await store.close()

    with contextlib.closing(sqlite3.connect(tmp_path / DB_FILENAME)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        missing = db.execute("SELECT count(*) FROM vertices WHERE certificate IS NULL").fetchone()
    assert "evidence" in tables
    assert missing == (0,)


# ------------------------------------------------------------ transactions


async def test_transactions_data_gives_stored_unfinal_ones_in_the_order_asked(
    tmp_path: Path,
) -> None:
    store = await Store.open(tmp_path, SOLO_GENESIS)
    try:
        engine = Engine(SOLO_GENESIS, Params(), SOLO)
        engine.handle_timer(moment(0.0))
        await store.persist(facts(engine))
        final = [b"final one", b"final two"]
        events, now = _solo_run(engine, final, 0.5)
        await store.persist(events)
        waiting = [b"waiting a", b"waiting b", b"waiting c"]
        engine.submit_transactions(tx_ids(waiting), waiting, moment(now))
        await store.persist(facts(engine))
        a, b, c = tx_ids(waiting)
        f1, f2 = tx_ids(final)
        unknown = TxId(b"\x00" * 32)
        assert await store.final_among([f1, f2, a]) == {f1, f2}
        asked = [c, f1, unknown, a, f2, b]
        assert await store.transactions_data(asked) == [
            (c, b"waiting c"),
            (a, b"waiting a"),
            (b, b"waiting b"),
        ]
        assert await store.transactions_data([f1, unknown]) == []
        assert await store.transactions_data([]) == []
    finally:
        await store.close()


# ----------------------------------------------------------------- evidence


def _equivocation(
    author: int, round_: int, parents: Sequence[VertexId] = ()
) -> EquivocationDetected:
    """The evidence event an observer emits when ``author`` proposes two vertices for
    ``round_``."""
    first = C.vertex(author, round_, parents, txs=[b"first"])
    second = C.vertex(author, round_, parents, txs=[b"second"])
    return _caught(first, second)


def _caught(first: Vertex, second: Vertex) -> EquivocationDetected:
    observer = C.observer()
    observer.receive_message(PEER, proposal(first), moment(NOW))
    observer.receive_message(PEER, proposal(second), moment(NOW))
    [event] = [e for e in drain(observer) if isinstance(e, EquivocationDetected)]
    return event


async def test_evidence_is_kept_once_per_author_and_round(tmp_path: Path) -> None:
    one = _equivocation(1, 1)
    # the same slot again, caught with another pair of vertices: the first proof stays
    again = _caught(C.vertex(1, 1, txs=[b"first"]), C.vertex(1, 1, txs=[b"third"]))
    assert again.evidence.encode() != one.evidence.encode()
    later = _equivocation(2, 3, parents=[C.vertex(i, 2).id for i in range(3)])
    store = await Store.open(tmp_path, C.genesis)
    try:
        await store.persist([one])
        await store.persist([one, again])
        await store.persist([later])
        rows = await store.evidence(10)
        assert [(r.author, r.round) for r in rows] == [
            (C.signers[2].node_id, 3),
            (C.signers[1].node_id, 1),
        ]
        assert rows[1].data == one.evidence.encode()
        for row in rows:
            proof = decode_equivocation(row.data, C.genesis)
            assert (proof.author, proof.round) == (row.author, row.round)
            assert proof.first.id != proof.second.id
        assert await store.evidence(1) == rows[:1]
    finally:
        await store.close()
    store = await Store.open(tmp_path, C.genesis)
    try:
        assert await store.evidence(10) == rows
    finally:
        await store.close()


async def test_a_restart_from_the_store_remembers_the_equivocations_it_reported(
    tmp_path: Path,
) -> None:
    first = C.vertex(1, 1, txs=[b"first"])
    second = C.vertex(1, 1, txs=[b"second"])
    observer = C.observer()
    batches = []
    for vertex in (first, second):
        observer.receive_message(PEER, proposal(vertex), moment(NOW))
        batches.append(facts(observer))
    assert any(isinstance(e, EquivocationDetected) for e in batches[1])
    model = MemoryStore(log_hash_start(C.genesis.hash))
    store = await Store.open(tmp_path, C.genesis)
    try:
        for batch in batches:
            model.persist(batch)
            await store.persist(batch)
        key = C.outsider.node_id
        db = await store.load_snapshot(C.genesis, PARAMS.gc_depth, key)
        mem = model.snapshot(key, PARAMS.gc_depth)
    finally:
        await store.close()
    assert mem.equivocations == ((1, C.signers[1].node_id),)
    assert db.equivocations == mem.equivocations
    # the restarted observer sees the second vertex again: nothing new to report
    restarted = C.observer(snapshot=db)
    restarted.receive_message(PEER, proposal(second), moment(NOW))
    assert not any(isinstance(e, EquivocationDetected) for e in drain(restarted))


async def test_our_own_certified_vertex_from_a_peer_keeps_its_transactions(
    tmp_path: Path,
) -> None:
    ours = C.vertex(0, 1, txs=[b"ours, from before"])
    round1 = [ours, *(C.vertex(i, 1) for i in (1, 2, 3))]
    round2 = [C.vertex(i, 2, [v.id for v in round1], txs=[f"r2-{i}".encode()]) for i in (1, 2, 3)]
    round3 = [C.vertex(i, 3, [v.id for v in round2]) for i in (1, 2, 3)]
    engine = Engine(C.genesis, PARAMS, C.signers[0])  # validator 0, with an empty store
    # round 1 without payload until our vertex arrives, so no proposal of ours competes
    events = feed(engine, *round3, *round2, *round1[1:], ours)
    assert VertexStored(ours, own=False) in events  # arrived certified: store it all
    [commit] = [e for e in events if isinstance(e, LeaderCommitted)]
    assert commit.entries[0].tx_id == ours.tx_ids[0]
    model = MemoryStore(log_hash_start(C.genesis.hash))
    stored = [e for e in events if isinstance(e, Fact)]
    model.persist(stored)
    store = await Store.open(tmp_path, C.genesis)
    try:
        await store.persist(stored)
        records = await store.log(1, 10)
        assert [(r.seq, r.tx_id) for r in records] == [(e.seq, e.tx_id) for e in model.log]
        record = await store.transaction(ours.tx_ids[0])
        assert record is not None
        assert record.seq == 1
        assert [m async for m in store.certified_messages([ours.id])] == [
            await _certified(model, ours.id)
        ]
    finally:
        await store.close()


async def test_migration_certifies_only_what_a_quorum_certified(tmp_path: Path) -> None:
    signer = C.signers[2]  # validator 2 of four: its round-1 vertex needs three votes
    old = Engine(C.genesis, Params(), signer)
    old.submit_transactions(tx_ids([b"early"]), [b"early"], moment(NOW))
    events = facts(old)
    [proposed] = [e.vertex for e in events if isinstance(e, VertexStored)]
    _write_schema_1(tmp_path / DB_FILENAME, C.genesis, events)
    store = await Store.open(tmp_path, C.genesis)
    try:
        record = await store.vertex(proposed.id)
        assert record is not None
        if record.certificate is not None:
            check_certificate(
                decode_certificate(record.certificate), proposed.id, C.genesis, SequentialVerifier()
            )
        snapshot = await store.load_snapshot(C.genesis, PARAMS.gc_depth, signer.node_id)
        assert snapshot.own_proposal == proposed
    finally:
        await store.close()
