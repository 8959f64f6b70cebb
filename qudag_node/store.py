"""SQLite persistence: one file in the data dir, WAL, group commit.

Two aiosqlite connections: the *writer*, used only by the engine pump's group commit
(:meth:`Store.write` adds steps to one open transaction, :meth:`Store.commit` ends it
with one fsync, whatever the number of steps and client transactions in it), and the
*reader*, serving API queries and the pump's lookups from the last committed state
without waiting behind writes (WAL lets readers and the writer overlap).

Schema migrations are numbered by ``PRAGMA user_version``. The database remembers
the genesis hash of its network and refuses to open for another one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import itertools
import os
import sqlite3
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, assert_never

import aiosqlite

from qudag_node.config import file_kind
from qudag_node.core.backfill import Anchor, KeepCheckpoint, LandSegment, Resume, StageEntries
from qudag_node.core.certificate import Certificate, decode_certificate
from qudag_node.core.checkpoint import CertifiedCheckpoint, decode_checkpoint
from qudag_node.core.checkpoints import KEEP, RestoredCheckpoint
from qudag_node.core.crypto import log_hash_start
from qudag_node.core.engine import Snapshot, StoredVertex
from qudag_node.core.events import (
    CheckpointCertified,
    CheckpointMade,
    EquivocationDetected,
    Fact,
    LeaderCommitted,
    LogEntry,
    TransactionsAdmitted,
    VertexCertified,
    VertexStored,
)
from qudag_node.core.genesis import Genesis
from qudag_node.core.messages import encode_certified
from qudag_node.core.retention import CheckpointMark
from qudag_node.core.syncwire import ENTRY_OVERHEAD, CertifiedIds, Holdings, WireEntry
from qudag_node.core.types import HASH_SIZE, NodeId, TxId, VertexId
from qudag_node.core.vertex import (
    Vertex,
    assemble_vertex,
    decode_header_bytes,
    encode_vertex_parts,
)
from qudag_node.ports import (
    CheckpointRecord,
    DagVertexRecord,
    EvidenceRecord,
    HeldRange,
    LogRecord,
    Pruned,
    VertexRecord,
)

DB_FILENAME = "qudag.db"
#: WAL pages after which a commit also checkpoints (SQLite's default is 1,000). Under
#: load most commits rewrite the same index pages, which a checkpoint copies once: a
#: quarter as many checkpoints copy less in all and stall fewer commits.
WAL_CHECKPOINT_PAGES = 4_000
_CHUNK = 900  # ids per IN (...) query, under SQLite's variable limit
_VERTICES_PER_READ = 8  # vertices read at once to answer a fetch (each up to 4 MiB)
_LOG_PAGE = 256  # log entries read at once to answer a LOG_REQUEST
#: The vertices of the last ``?1`` rounds held, highest round first, at most ``?2``:
#: both the highest round and the range are read from the index ``vertices_round``.
DAG_WINDOW_SQL = """
    SELECT id, header, ordered, certificate IS NOT NULL FROM vertices
    WHERE round > (SELECT max(round) FROM vertices) - ?1
    ORDER BY round DESC, author LIMIT ?2"""

#: A schema step: an SQL statement, or a function of the connection and the genesis.
Migration = str | Callable[[aiosqlite.Connection, Genesis], Awaitable[None]]


async def _certify_solo_vertices(db: aiosqlite.Connection, genesis: Genesis) -> None:
    """Vertices of schema 1 carry no certificate. In a one-validator network each one's
    certificate is its author's own vote (voter 0, the signature it already carries);
    in a larger one no vertex could have been certified (schema 1 had no peer links),
    so they stay uncertified."""
    if genesis.n != 1:
        return
    rows = await _fetch(db, "SELECT rowid, header, signature FROM vertices")
    await db.executemany(
        "UPDATE vertices SET certificate = ? WHERE rowid = ?",
        [(bytes(h[1:2]) + b"\x00\x01\x00\x00" + bytes(sig), rowid) for rowid, h, sig in rows],
    )


MIGRATIONS: tuple[tuple[Migration, ...], ...] = (
    (
        """CREATE TABLE meta (
            key TEXT PRIMARY KEY,
            value BLOB NOT NULL
        ) WITHOUT ROWID""",
        # rowid = arrival order; rows are never deleted
        """CREATE TABLE vertices (
            id BLOB NOT NULL UNIQUE,
            round INTEGER NOT NULL,
            author BLOB NOT NULL,
            header BLOB NOT NULL,
            signature BLOB NOT NULL,
            tx_ids BLOB NOT NULL,
            ordered INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX vertices_round ON vertices (round)",
        # written once, when first seen; rowid = arrival order; never deleted
        """CREATE TABLE transactions (
            id BLOB NOT NULL UNIQUE,
            data BLOB NOT NULL
        )""",
        # rowids of the transactions that are not final yet
        "CREATE TABLE unfinal (tx INTEGER PRIMARY KEY)",
        """CREATE TRIGGER transactions_unfinal AFTER INSERT ON transactions
            BEGIN INSERT INTO unfinal (tx) VALUES (new.rowid); END""",
        # the finalized log; tx and vertex are rowids
        """CREATE TABLE log (
            seq INTEGER PRIMARY KEY,
            tx INTEGER NOT NULL,
            vertex INTEGER NOT NULL,
            hash BLOB NOT NULL
        )""",
        "CREATE INDEX log_tx ON log (tx)",
        """CREATE TRIGGER log_final AFTER INSERT ON log
            BEGIN DELETE FROM unfinal WHERE tx = new.tx; END""",
    ),
    (
        # NULL until the vertex is certified (a quorum of votes, see docs/protocol.md)
        "ALTER TABLE vertices ADD COLUMN certificate BLOB",
        _certify_solo_vertices,
        "CREATE INDEX vertices_author_round ON vertices (author, round)",
        # one piece of equivocation evidence per (author, round)
        """CREATE TABLE evidence (
            author BLOB NOT NULL,
            round INTEGER NOT NULL,
            data BLOB NOT NULL,
            PRIMARY KEY (author, round)
        ) WITHOUT ROWID""",
    ),
    (
        # the addresses a peer name last resolved to, used when DNS fails
        """CREATE TABLE peer_addresses (
            host TEXT PRIMARY KEY,
            addresses TEXT NOT NULL,
            resolved_at REAL NOT NULL
        ) WITHOUT ROWID""",
    ),
    (
        # checkpoints this node computed (certificate NULL until a quorum signed) or
        # received certified; window = the ids of the checkpoint's window, joined
        """CREATE TABLE checkpoints (
            number INTEGER PRIMARY KEY,
            round INTEGER NOT NULL,
            log_length INTEGER NOT NULL,
            timestamp_ms INTEGER NOT NULL,
            body BLOB NOT NULL,
            window BLOB NOT NULL,
            certificate BLOB
        )""",
    ),
    (
        # a log row whose vertex is not held here (backfilled below a joined
        # checkpoint) has vertex = 0 and names its vertex here; NULL otherwise
        "ALTER TABLE log ADD COLUMN vertex_id BLOB",
        # backfilled entries checked one by one, waiting for their segment's hash to
        # land on the log's base before they become part of the log
        """CREATE TABLE backfill_stage (
            seq INTEGER PRIMARY KEY,
            tx_id BLOB NOT NULL,
            vertex_id BLOB NOT NULL,
            hash BLOB NOT NULL,
            data BLOB NOT NULL
        )""",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


class StoreError(Exception):
    """The database cannot be used as asked; ``code`` names the reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` says the filesystem (or SQLite's size limit) has no room left."""
    if isinstance(error, sqlite3.Error):
        return getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


#: Files SQLite keeps beside the database; each must be a regular file when present.
_SIDE_SUFFIXES = ("", "-wal", "-shm", "-journal")


def _check_files(path: Path) -> None:
    """Refuse a database path, or a file SQLite keeps beside it, that is not a regular
    file (a directory, a FIFO, a dangling symlink, ...): SQLite would fail on it with
    an unclear message, or wait on a FIFO for ever."""
    for suffix in _SIDE_SUFFIXES:
        name = path.with_name(path.name + suffix)
        try:
            mode = name.stat().st_mode
        except FileNotFoundError:
            if name.is_symlink():
                raise StoreError("not_a_file", f"{name} is a dangling symlink") from None
            continue
        except OSError as e:
            raise StoreError("io", f"{name}: {e.strerror}") from None
        if not stat.S_ISREG(mode):
            raise StoreError("not_a_file", f"{name} is {file_kind(mode)}, not a database file")


def _open_error(path: Path, error: sqlite3.Error) -> StoreError:
    if is_disk_full(error) or (_is_io_error(error) and _free_bytes(path.parent) == 0):
        # SQLite reports a shared-memory file it cannot create as an I/O error
        return StoreError("disk_full", f"cannot open {path}: no space left on the device")
    return StoreError("corrupt", f"{path} is not a usable database: {error}")


def _is_io_error(error: sqlite3.Error) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == sqlite3.SQLITE_IOERR


def _free_bytes(directory: Path) -> int | None:
    try:
        st = os.statvfs(directory)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


@dataclass(frozen=True, slots=True)
class StoredTransaction:
    """What the database knows of a transaction: its size, and its log place once final."""

    id: TxId
    size: int
    seq: int | None
    vertex: VertexId | None
    #: final; with ``seq`` None, at a log position before this node's log base
    final: bool = False


@dataclass(frozen=True, slots=True)
class StoreTotals:
    """Counts kept in the database, for metrics and status at start-up."""

    vertices: int
    transactions: int
    log_length: int


@dataclass(slots=True)
class _Writes:
    """The rows one engine step's facts add or change."""

    transactions: list[tuple[bytes, bytes]] = field(default_factory=list)
    vertices: list[tuple[bytes, int, bytes, bytes, bytes, bytes]] = field(default_factory=list)
    certificates: list[tuple[bytes, bytes]] = field(default_factory=list)
    log: list[LogEntry] = field(default_factory=list)
    ordered: list[tuple[bytes]] = field(default_factory=list)
    evidence: list[tuple[bytes, int, bytes]] = field(default_factory=list)
    checkpoints: list[tuple[int, int, int, int, bytes, bytes]] = field(default_factory=list)
    checkpoint_certificates: list[tuple[bytes, int]] = field(default_factory=list)
    committed_round: int | None = None

    def add(self, fact: Fact) -> None:
        match fact:
            case TransactionsAdmitted(ids, transactions):
                self.transactions.extend(zip(ids, transactions, strict=True))
            case VertexStored(v, own):
                self.vertices.append(
                    (v.id, v.round, v.author, v.header_bytes, v.signature, b"".join(v.tx_ids))
                )
                if not own:  # our own vertices carry admitted, stored transactions
                    self.transactions.extend(zip(v.tx_ids, v.transactions, strict=True))
            case VertexCertified(vid, _, certificate):
                self.certificates.append((certificate.encode(), vid))
            case LeaderCommitted():
                self.log.extend(fact.entries)
                self.ordered.extend((vid,) for vid in fact.ordered)
                self.committed_round = fact.round
            case EquivocationDetected(e):
                self.evidence.append((e.author, e.round, e.encode()))
            case CheckpointMade(cp, window):
                self.checkpoints.append(
                    (
                        cp.number,
                        cp.round,
                        cp.log_length,
                        cp.timestamp_ms,
                        cp.encode(),
                        b"".join(window),
                    )
                )
            case CheckpointCertified(number, certificate):
                self.checkpoint_certificates.append((certificate.encode(), number))
            case _:
                assert_never(fact)

    def statements(self) -> list[tuple[str, list[Any]]]:
        """The batched statements to run, in an order that respects the rows they join."""
        batches: list[tuple[str, list[Any]]] = [
            ("INSERT OR IGNORE INTO transactions (id, data) VALUES (?, ?)", self.transactions),
            (
                "INSERT OR IGNORE INTO vertices (id, round, author, header, signature, tx_ids)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                self.vertices,
            ),
            ("UPDATE vertices SET certificate = ? WHERE id = ?", self.certificates),
            (_APPEND_LOG, [_log_params(self.log)] if self.log else []),
            ("UPDATE vertices SET ordered = 1 WHERE id = ?", self.ordered),
            (
                "INSERT OR IGNORE INTO evidence (author, round, data) VALUES (?, ?, ?)",
                self.evidence,
            ),
            (
                "INSERT OR IGNORE INTO checkpoints"
                " (number, round, log_length, timestamp_ms, body, window)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                self.checkpoints,
            ),
            (
                "UPDATE checkpoints SET certificate = ? WHERE number = ? AND certificate IS NULL",
                self.checkpoint_certificates,
            ),
        ]
        return [(sql, rows) for sql, rows in batches if rows]


#: The log entries of a step in one statement: row n takes the n-th hash, transaction
#: id and vertex id from three blobs of concatenated 32-byte values. The whole insert
#: runs inside SQLite, without the interpreter between rows: 2.6 us a row, where one
#: ``executemany`` row costs 4.6 us (see docs/benchmarks.md).
_APPEND_LOG = f"""
    WITH RECURSIVE i(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM i WHERE n + 1 < :count)
    INSERT INTO log (seq, hash, tx, vertex)
    SELECT :first + n, substr(:hashes, n * {HASH_SIZE} + 1, {HASH_SIZE}),
        (SELECT rowid FROM transactions WHERE id = substr(:txs, n * {HASH_SIZE} + 1, {HASH_SIZE})),
        (SELECT rowid FROM vertices WHERE id = substr(:vertices, n * {HASH_SIZE} + 1, {HASH_SIZE}))
    FROM i"""  # noqa: S608 (constants only)


#: Backfilled entries staged, or moved from the stage into the log, per transaction:
#: each holds the write lock (and so the pump's group commit) for a few milliseconds.
BACKFILL_BATCH = 500

#: Staged entries ``?1..?2`` into the log: their transactions first (new ones are
#: final at once: the log row's trigger takes them out of ``unfinal``), then the rows,
#: naming the vertex by rowid when it is held here and by id otherwise.
_LAND_STAGED = """
    INSERT OR IGNORE INTO transactions (id, data)
        SELECT tx_id, data FROM backfill_stage WHERE seq BETWEEN ?1 AND ?2 ORDER BY seq
"""
_LAND_LOG = """
    INSERT OR REPLACE INTO log (seq, tx, vertex, hash, vertex_id)
    SELECT s.seq, t.rowid, coalesce(v.rowid, 0), s.hash, CASE WHEN v.rowid IS NULL
        THEN s.vertex_id END
    FROM backfill_stage AS s JOIN transactions AS t ON t.id = s.tx_id
    LEFT JOIN vertices AS v ON v.id = s.vertex_id
    WHERE s.seq BETWEEN ?1 AND ?2"""


def _log_params(entries: Sequence[LogEntry]) -> dict[str, Any]:
    first = entries[0].seq
    if [e.seq for e in entries] != list(range(first, first + len(entries))):
        raise ValueError("log entries to store must have consecutive positions")
    return {
        "count": len(entries),
        "first": first,
        "hashes": b"".join(e.hash for e in entries),
        "txs": b"".join(e.tx_id for e in entries),
        "vertices": b"".join(e.vertex for e in entries),
    }


def _split_ids(blob: bytes) -> tuple[TxId, ...]:
    return tuple(TxId(blob[i : i + HASH_SIZE]) for i in range(0, len(blob), HASH_SIZE))


def _chunks(ids: Sequence[bytes]) -> Iterable[Sequence[bytes]]:
    for i in range(0, len(ids), _CHUNK):
        yield ids[i : i + _CHUNK]


@contextlib.contextmanager
def _collect(errors: list[BaseException]) -> Iterator[None]:
    """Append a database or OS error raised in the block to ``errors`` instead."""
    try:
        yield
    except (sqlite3.Error, OSError, ValueError) as e:  # ValueError: a closed connection
        errors.append(e)


async def _connect(
    opened: list[aiosqlite.Connection], database: str | Path, **options: Any
) -> aiosqlite.Connection:
    """A new connection, appended to ``opened`` (so that it is closed on a failure)."""
    conn = await aiosqlite.connect(database, **options)
    opened.append(conn)
    return conn


def accept(data_dir: Path, genesis: Genesis) -> None:
    """Refuse ``data_dir`` before anything is written into it: a database path that is
    not a regular file, a database of a newer schema or of another network, as far as
    its main file tells. Reads only; raises :class:`StoreError`."""
    path = data_dir / DB_FILENAME
    _check_files(path)
    if not path.exists() or path.stat().st_size == 0:
        return  # a new database
    wal = path.with_name(path.name + "-wal")
    # Without a WAL to read, the main file is the whole database: read it as immutable,
    # which creates no -wal or -shm file. With one (a checkpoint may have been cut short,
    # leaving the main file half updated) it must be read through the WAL.
    immutable = "&immutable=1" if not wal.exists() or wal.stat().st_size == 0 else ""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro{immutable}", uri=True)
    except sqlite3.Error as e:
        raise _open_error(path, e) from None
    try:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_schema")}
        stored = (
            dict(conn.execute("SELECT key, value FROM meta WHERE key IN ('genesis', 'network_id')"))
            if "meta" in tables
            else {}
        )
    except sqlite3.Error as e:
        raise _open_error(path, e) from None
    finally:
        conn.close()
    if version > SCHEMA_VERSION:
        raise StoreError(
            "schema_too_new",
            f"database schema {version} is newer than this node understands ({SCHEMA_VERSION})",
        )
    if "genesis" in stored and bytes(stored["genesis"]) != genesis.hash:
        raise _wrong_network(bytes(stored["genesis"]), stored.get("network_id"), genesis)


def _wrong_network(stored: bytes, name: Any, genesis: Genesis) -> StoreError:
    shown = bytes(name).decode(errors="replace") if name is not None else "?"
    return StoreError(
        "wrong_network",
        f"the database belongs to network {shown!r} (genesis {stored.hex()[:16]}),"
        f" not to {genesis.network_id!r} (genesis {genesis.hash.hex()[:16]}):"
        " use another data directory or the same key and network settings",
    )


class Store:
    """The node's database. Create with :meth:`open`; finish with :meth:`close`."""

    def __init__(
        self,
        path: Path,
        writer: aiosqlite.Connection,
        reader: aiosqlite.Connection,
        side: aiosqlite.Connection,
    ):
        self.path = path
        self._writer = writer
        self._reader = reader
        self._side = side  # small writes outside the pump's transactions (peer addresses)
        self._open = False  # the writer holds a transaction that write() began
        # held for each transaction on the writer: the group commit's, or a prune batch's
        self._turn = asyncio.Lock()

    # ------------------------------------------------------------ life cycle

    @classmethod
    async def open(cls, data_dir: Path, genesis: Genesis) -> Store:
        """Open (or create) the database in the existing ``data_dir``, migrate it, and bind
        it to ``genesis``.

        Opening reads only what it needs (the header, the schema, the metadata), so it
        takes the same time whatever the file's size; a file that is not a database is
        refused here, damage elsewhere in it by :meth:`check_integrity`.
        """
        path = data_dir / DB_FILENAME
        await asyncio.to_thread(accept, data_dir, genesis)
        opened: list[aiosqlite.Connection] = []  # closed again if opening fails
        try:
            writer = await _connect(opened, path, isolation_level=None)
            await writer.execute("PRAGMA journal_mode=WAL")
            await writer.execute("PRAGMA synchronous=FULL")
            await writer.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
            await writer.execute("PRAGMA busy_timeout=5000")
            await _migrate(writer, genesis)
            await _bind_genesis(writer, genesis)
            reader = await _connect(opened, f"file:{path}?mode=ro", uri=True)
            await reader.execute("PRAGMA busy_timeout=5000")
            side = await _connect(opened, path, isolation_level=None)
            await side.execute("PRAGMA busy_timeout=5000")
        except BaseException as e:
            for conn in opened:
                with _collect([]):
                    await conn.close()
            if isinstance(e, sqlite3.Error):
                raise _open_error(path, e) from None
            raise
        return cls(path, writer, reader, side)

    async def check_integrity(self) -> None:
        """Run SQLite's ``quick_check`` over the whole file; raises :class:`StoreError`
        (``corrupt``) naming the first problems found.

        It reads every page, so its time grows with the file: it runs on a read
        connection of its own, on one committed state, while the writer and the API
        reader go on. Cancelling it interrupts the check.
        """
        conn = await aiosqlite.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            rows = await _fetch(conn, "PRAGMA quick_check")
        except asyncio.CancelledError:
            await conn.interrupt()
            raise
        except sqlite3.DatabaseError as e:  # damage the check could not step over
            raise StoreError("corrupt", f"database integrity check failed: {e}") from None
        finally:
            await conn.close()
        # one problem a line, under a "*** in database main ***" heading
        problems = [p for r in rows for p in str(r[0]).splitlines() if not p.startswith("***")]
        if problems != ["ok"]:
            count = f" ({len(problems)} problems reported)" if len(problems) > 3 else ""
            raise StoreError(
                "corrupt", f"database integrity check failed: {'; '.join(problems[:3])}{count}"
            )

    async def close(self) -> None:
        """Roll back a transaction left open, checkpoint the WAL into the main file and
        close the connections.

        Every connection is closed whatever fails before (each has a thread that would
        keep the process alive); the first failure is then raised as a
        :class:`StoreError` (``close``). A checkpoint that fails, on a full disk for
        example, loses nothing: the committed rows stay in the WAL for the next start.
        """
        errors: list[BaseException] = []
        with _collect(errors):
            await self._rollback()
        if not errors:
            with _collect(errors):
                await self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        for conn in (self._side, self._reader, self._writer):
            with _collect(errors):
                await conn.close()
        if errors:
            first = errors[0]
            raise StoreError("close", f"closing {self.path}: {first}") from first

    # ---------------------------------------------------------------- writes

    async def persist(self, facts: Sequence[Fact]) -> None:
        """Write what ``facts`` require in one transaction (one fsync)."""
        await self.write(facts)
        await self.commit()

    async def write(self, facts: Sequence[Fact]) -> bool:
        """Add what ``facts`` require to the open transaction, opening one if none is;
        none of it is visible to other connections, or durable, before :meth:`commit`.
        Returns whether a transaction is open. On an error the transaction is rolled
        back (everything written since the last commit is gone) and the error raised.

        Each transaction's bytes are written once; becoming included costs nothing
        here (the vertex row lists its ids), becoming final appends a log row.
        """
        w = _Writes()
        for fact in facts:
            w.add(fact)
        statements = w.statements()
        if not statements:
            return self._open
        db = self._writer
        try:
            if not self._open:
                await self._turn.acquire()
                self._open = True
                await db.execute("BEGIN IMMEDIATE")
            for sql, rows in statements:
                await db.executemany(sql, rows)
            if w.committed_round is not None:
                await _set_meta(db, "committed_round", w.committed_round.to_bytes(8, "big"))
        except BaseException:
            await self._rollback()
            raise
        return True

    async def commit(self) -> None:
        """End the open transaction, if any: its rows become durable (one fsync) and
        visible. On an error it is rolled back and the error raised."""
        if not self._open:
            return
        try:
            await self._writer.execute("COMMIT")
        except BaseException:
            await self._rollback()
            raise
        self._open = False
        self._turn.release()

    async def _rollback(self) -> None:
        if self._open:
            self._open = False
            try:
                if self._writer.in_transaction:
                    await self._writer.execute("ROLLBACK")
            finally:
                self._turn.release()

    # ----------------------------------------------------- pump-side reads

    async def known_ids(self, ids: Sequence[TxId]) -> set[TxId]:
        """Which of ``ids`` are stored by a committed transaction.

        Read on the read connection, so that it never waits behind a commit: a
        transaction whose commit has not ended yet is not seen here, and the engine,
        which still holds it (pending, in flight, or ordered inside its window), is
        what knows it.
        """
        return await _matching_ids(self._reader, "", ids)

    async def load_snapshot(self, genesis: Genesis, gc_depth: int, own_key: NodeId) -> Snapshot:
        """The durable state the engine resumes from.

        Every transaction that is not final comes back; the engine keeps those that
        no held vertex carries as pending. Their number is bounded by the pending
        pool plus the DAG window, not by the size of the database.
        """
        db = self._writer
        length, head = await _log_end(db)
        last_hash = log_hash_start(genesis.hash) if head is None else head
        committed = await _get_meta_int(db, "committed_round")
        floor = max(0, committed - gc_depth)
        vertex_rows = await _fetch(
            db,
            "SELECT id, header, signature, tx_ids, ordered, certificate FROM vertices"
            " WHERE round >= ? ORDER BY round",
            (floor,),
        )
        vertices = tuple(
            StoredVertex(
                VertexId(r[0]),
                decode_header_bytes(r[1]),
                bytes(r[1]),
                bytes(r[2]),
                _split_ids(r[3]),
                bool(r[4]),
                None if r[5] is None else decode_certificate(r[5]),
            )
            for r in vertex_rows
        )
        pending_rows = await _fetch(
            db,
            "SELECT t.id, t.data FROM unfinal AS u JOIN transactions AS t ON t.rowid = u.tx"
            " ORDER BY u.tx",
        )
        pending = tuple((TxId(r[0]), bytes(r[1])) for r in pending_rows)
        slots = await _fetch(db, "SELECT round, author FROM evidence WHERE round >= ?", (floor,))
        kept = await _fetch(
            db,
            "SELECT body, certificate IS NOT NULL FROM checkpoints ORDER BY number DESC LIMIT ?",
            (KEEP,),
        )
        return Snapshot(
            length,
            bytes(last_hash),
            committed,
            vertices,
            pending,
            await self._own_proposal(own_key),
            tuple(sorted((int(r[0]), NodeId(r[1])) for r in slots)),
            tuple(RestoredCheckpoint(decode_checkpoint(r[0]), bool(r[1])) for r in reversed(kept)),
        )

    async def _own_proposal(self, own_key: NodeId) -> Vertex | None:
        """Our latest vertex, in full, if it is not certified yet."""
        found = await _full_vertex(
            self._writer, "author = ? ORDER BY round DESC LIMIT 1", (own_key,)
        )
        if found is None or found.certificate is not None:
            return None
        return assemble_vertex(found.header, found.signature, found.transactions, found.ids)

    async def certified_messages(self, ids: Sequence[VertexId]) -> AsyncIterator[bytes]:
        """CERTIFIED messages for those of ``ids`` that are stored and certified, in
        ``ids`` order, read a few vertices at a time so that a large request never holds
        more than those in memory."""
        for start in range(0, len(ids), _VERTICES_PER_READ):
            chunk = ids[start : start + _VERTICES_PER_READ]
            marks = ",".join("?" * len(chunk))
            rows = await _fetch(
                self._reader,
                f"SELECT id, {_CERTIFIED_COLUMNS} FROM vertices"  # noqa: S608
                f" WHERE certificate IS NOT NULL AND id IN ({marks})",
                chunk,
            )
            messages = await _certified(self._reader, [r[1:] for r in rows])
            found = {VertexId(bytes(r[0])): m for r, m in zip(rows, messages, strict=True)}
            for vid in chunk:
                message = found.get(vid)
                if message is not None:
                    yield message

    async def certified_ids(self, low: int, high: int) -> CertifiedIds:
        """The id and round of every stored, certified vertex of rounds ``low..high``, by
        round, packed into two buffers as the rows are read, so that fingerprints over
        them need no conversion per id."""
        rows = await _fetch(
            self._reader,
            "SELECT round, id FROM vertices WHERE round BETWEEN ? AND ?"
            " AND certificate IS NOT NULL ORDER BY round",
            (low, high),
        )
        return CertifiedIds.of([r[0] for r in rows], [r[1] for r in rows])

    async def certified_in_rounds(
        self, low: int, high: int, max_bytes: int
    ) -> tuple[list[bytes], int]:
        """CERTIFIED messages of rounds ``low..high`` in round order, whole rounds only,
        stopping after the round that passes ``max_bytes``.

        Returns the messages and the last round they cover, empty rounds included.
        """
        rows = await _fetch(
            self._reader,
            f"SELECT round, {_CERTIFIED_COLUMNS} FROM vertices WHERE round BETWEEN ? AND ?"  # noqa: S608
            " AND certificate IS NOT NULL ORDER BY round, id",
            (low, high),
        )
        out: list[bytes] = []
        size = 0
        for number, group in itertools.groupby(rows, key=lambda r: int(r[0])):
            if size >= max_bytes:
                return out, number - 1
            messages = [m for m in await _certified(self._reader, [r[1:] for r in group]) if m]
            out += messages
            size += sum(map(len, messages))
        return out, high

    async def transactions_data(self, ids: Sequence[TxId]) -> list[tuple[TxId, bytes]]:
        """Stored, not final transactions among ``ids``, with their bytes, in ``ids`` order."""
        rows = await _rows_by_id(self._writer, "id, data", f"NOT {_FINAL} AND ", ids)
        data = {TxId(r[0]): bytes(r[1]) for r in rows}
        return [(i, data[i]) for i in ids if i in data]

    async def log_head(self) -> tuple[int, bytes | None]:
        """The committed finalized log's length and running hash (None while empty)."""
        return await _log_end(self._reader)

    async def evidence(self, limit: int) -> list[EvidenceRecord]:
        """Equivocation evidence, most recent rounds first."""
        rows = await _fetch(
            self._reader,
            "SELECT author, round, data FROM evidence ORDER BY round DESC LIMIT ?",
            (limit,),
        )
        return [EvidenceRecord(NodeId(r[0]), int(r[1]), bytes(r[2])) for r in rows]

    async def totals(self) -> StoreTotals:
        """Vertex and transaction counts over the database's life, and the log's length.

        Rows get rowids in arrival order and pruning never deletes the newest row of a
        table (see :mod:`qudag_node.retention`), so the largest rowid is the number of
        rows ever stored, found in O(log n).
        """
        db = self._writer
        (v,) = (await _fetch(db, "SELECT coalesce(max(rowid), 0) FROM vertices"))[0]
        (t,) = (await _fetch(db, "SELECT coalesce(max(rowid), 0) FROM transactions"))[0]
        length, _ = await _log_end(db)  # the base, when no entry above it is held
        return StoreTotals(int(v), int(t), length)

    # ------------------------------------------------------------ checkpoints

    async def holdings(self) -> Holdings:
        """What this node can serve a peer: its oldest held round (0 when it holds
        none) and its latest certified checkpoint (0 and 0 when none)."""
        (oldest,) = (await _fetch(self._reader, "SELECT coalesce(min(round), 0) FROM vertices"))[0]
        latest = await _fetch(
            self._reader,
            "SELECT number, round FROM checkpoints WHERE certificate IS NOT NULL"
            " ORDER BY number DESC LIMIT 1",
        )
        number, round_ = (int(latest[0][0]), int(latest[0][1])) if latest else (0, 0)
        return Holdings(int(oldest), number, round_)

    async def install_checkpoint(
        self,
        certified: CertifiedCheckpoint,
        window: Sequence[VertexId],
        vertices: Sequence[tuple[Vertex, Certificate]],
    ) -> None:
        """Record a checked checkpoint a node joins from, in one transaction: the
        checkpoint (certified), its window's vertices (ordered, certified) and their
        transactions (final, at log positions this node does not hold), the committed
        round, and the log's base at the checkpoint. Rounds above it come by sync.

        Waits for the writer's turn, like a prune batch; must not be called while
        :meth:`write` holds a transaction open."""
        if self._open:
            raise RuntimeError("install_checkpoint() inside an open transaction")
        async with self._turn:  # between two group commits, as a prune batch
            cp = certified.checkpoint
            db = self._writer
            await db.execute("BEGIN IMMEDIATE")
            try:
                await _keep_certified(db, certified, window)
                await db.executemany(
                    "INSERT OR IGNORE INTO transactions (id, data) VALUES (?, ?)",
                    [
                        (i, tx)
                        for v, _ in vertices
                        for i, tx in zip(v.tx_ids, v.transactions, strict=True)
                    ],
                )
                await db.executemany(
                    "INSERT INTO vertices"
                    " (id, round, author, header, signature, tx_ids, ordered, certificate)"
                    " VALUES (?, ?, ?, ?, ?, ?, 1, ?) ON CONFLICT (id) DO UPDATE"
                    " SET ordered = 1, certificate = excluded.certificate",
                    [
                        (
                            v.id,
                            v.round,
                            v.author,
                            v.header_bytes,
                            v.signature,
                            b"".join(v.tx_ids),
                            c.encode(),
                        )
                        for v, c in vertices
                    ],
                )
                # final before the base: their log rows are not held here
                ids = [i for v, _ in vertices for i in v.tx_ids]
                for chunk in _chunks(ids):
                    marks = ",".join("?" * len(chunk))
                    await db.execute(
                        "DELETE FROM unfinal WHERE tx IN"  # noqa: S608 (constants only)
                        f" (SELECT rowid FROM transactions WHERE id IN ({marks}))",
                        chunk,
                    )
                await _set_meta(db, "committed_round", cp.round.to_bytes(8, "big"))
                await _set_meta(db, LOG_BASE, LogBase(cp.log_length, cp.log_hash).encode())
                await db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    await db.execute("ROLLBACK")
                raise

    # --------------------------------------------------------------- backfill

    async def backfill_base(self) -> Anchor | None:
        """The log's base as a backfill anchor (None when the log is held from its
        first entry): its position, hash, and the number of the lowest certified
        checkpoint held at that position."""
        rows = await _fetch(self._reader, "SELECT value FROM meta WHERE key = ?", (LOG_BASE,))
        if not rows or int.from_bytes(bytes(rows[0][0])[:8], "big") == 0:
            return None
        value = bytes(rows[0][0])
        length = int.from_bytes(value[:8], "big")
        (number,) = (
            await _fetch(
                self._reader,
                "SELECT coalesce(min(number), 0) FROM checkpoints"
                " WHERE certificate IS NOT NULL AND log_length = ?",
                (length,),
            )
        )[0]
        return Anchor(int(number), length, value[8:])

    async def stage_backfill(self, staged: StageEntries) -> None:
        """Keep checked entries of a segment, not served yet, :data:`BACKFILL_BATCH`
        per transaction beside the pump's."""
        rows = [
            (staged.first + k, e.tx_id, e.vertex_id, h, e.data)
            for k, (e, h) in enumerate(zip(staged.entries, staged.hashes, strict=True))
        ]
        for k in range(0, len(rows), BACKFILL_BATCH):
            async with self._side_transaction() as db:
                await db.executemany(
                    "INSERT OR REPLACE INTO backfill_stage (seq, tx_id, vertex_id, hash, data)"
                    " VALUES (?, ?, ?, ?, ?)",
                    rows[k : k + BACKFILL_BATCH],
                )

    async def discard_backfill(self) -> None:
        """Drop every staged entry."""
        async with self._side_transaction() as db:
            await db.execute("DELETE FROM backfill_stage")

    async def land_backfill(self, land: LandSegment) -> None:
        """Make the staged segment part of the log, :data:`BACKFILL_BATCH` entries per
        transaction, then move the base down to its anchor.
        Interrupted, it leaves entries below the base that a later landing rewrites."""
        while True:
            async with self._side_transaction() as db:
                rows = await _fetch(
                    db,
                    "SELECT min(seq), max(seq) FROM (SELECT seq FROM backfill_stage"
                    " ORDER BY seq LIMIT ?)",
                    (BACKFILL_BATCH,),
                )
                low, high = rows[0]
                if low is None:
                    break
                await db.execute(_LAND_STAGED, (low, high))
                await db.execute(_LAND_LOG, (low, high))
                await db.execute(
                    "DELETE FROM backfill_stage WHERE seq BETWEEN ? AND ?", (low, high)
                )
        anchor = land.anchor
        async with self._side_transaction() as db:
            if anchor.length:
                await _set_meta(db, LOG_BASE, LogBase(anchor.length, anchor.log_hash).encode())
            else:
                await db.execute("DELETE FROM meta WHERE key = ?", (LOG_BASE,))

    async def keep_checkpoint(self, keep: KeepCheckpoint) -> None:
        """Record a checked certified checkpoint older than the base (a backfill anchor)."""
        async with self._side_transaction() as db:
            await _keep_certified(db, keep.offer.certified, keep.offer.window)

    async def log_prefix(self, below: int) -> Anchor | None:
        """The end of the log held without a gap from position 1, below ``below``, as
        an anchor (number 0): what a node that was away holds already. None when
        position 1 is not held, or the entries below ``below`` have a gap."""
        (count, last) = (
            await _fetch(self._reader, "SELECT count(*), max(seq) FROM log WHERE seq < ?", (below,))
        )[0]
        if not count or count != last:
            return None
        (log_hash,) = (await _fetch(self._reader, "SELECT hash FROM log WHERE seq = ?", (last,)))[0]
        return Anchor(0, int(last), bytes(log_hash))

    async def backfill_resume(self, base: Anchor, start_hash: bytes) -> Resume | None:
        """The segment below ``base`` a restart can go on with: its anchor (the latest
        certified checkpoint held below the base, or the genesis start, whose running
        hash is ``start_hash``) and the entries staged after it without a gap; None
        when nothing staged follows the anchor."""
        rows = await _fetch(
            self._reader,
            "SELECT number, log_length, body FROM checkpoints WHERE certificate IS NOT NULL"
            " AND number < ? AND log_length <= ? ORDER BY number DESC LIMIT 1",
            (base.number, base.length),
        )
        anchor = Anchor(0, 0, start_hash)
        if rows:
            anchor = Anchor(
                int(rows[0][0]), int(rows[0][1]), decode_checkpoint(rows[0][2]).log_hash
            )
        (low, high, count) = (
            await _fetch(self._reader, "SELECT min(seq), max(seq), count(*) FROM backfill_stage")
        )[0]
        if low != anchor.length + 1 or count != high - low + 1 or high > base.length:
            return None
        (last,) = (
            await _fetch(self._reader, "SELECT hash FROM backfill_stage WHERE seq = ?", (high,))
        )[0]
        return Resume(anchor, int(high) + 1, bytes(last))

    @contextlib.asynccontextmanager
    async def _side_transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        db = self._side
        await db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            if db.in_transaction:
                await db.execute("ROLLBACK")
            raise
        await db.execute("COMMIT")

    async def log_entries(self, start: int, count: int, max_bytes: int) -> list[WireEntry]:
        """The consecutive log entries held from ``start`` on, at most ``count`` and
        about ``max_bytes`` as a LOG_ENTRIES message (whole entries, at least one);
        none when ``start`` is not held."""
        if start <= await self.log_base():
            return []
        entries: list[WireEntry] = []
        size = 0
        while len(entries) < count:  # a page at a time: transactions may be large
            position = start + len(entries)
            rows = await _fetch(
                self._reader,
                "SELECT l.seq, t.id, coalesce(v.id, l.vertex_id), t.data FROM log AS l"
                " JOIN transactions AS t ON t.rowid = l.tx"
                " LEFT JOIN vertices AS v ON v.rowid = l.vertex"
                " WHERE l.seq >= ? ORDER BY l.seq LIMIT ?",
                (position, min(count - len(entries), _LOG_PAGE)),
            )
            for seq, tx, vertex, data in rows:
                cost = ENTRY_OVERHEAD + len(data)
                if seq != start + len(entries) or (entries and size + cost > max_bytes):
                    return entries
                entries.append(WireEntry(TxId(bytes(tx)), VertexId(bytes(vertex)), bytes(data)))
                size += cost
            if not rows:
                break
        return entries

    async def log_base(self) -> int:
        """The log position up to which no entry is held here (0: held from the first)."""
        return (await _log_base(self._reader)).length

    # ------------------------------------------------------------- retention

    async def certified_marks(self) -> list[CheckpointMark]:
        """The certified checkpoints held, by number: what retention decides from."""
        rows = await _fetch(
            self._reader,
            "SELECT number, round, log_length, timestamp_ms FROM checkpoints"
            " WHERE certificate IS NOT NULL ORDER BY number",
        )
        return [CheckpointMark(*map(int, r)) for r in rows]

    async def checkpoint_log_hash(self, number: int) -> bytes:
        """The log's running hash at checkpoint ``number`` (held)."""
        rows = await _fetch(
            self._reader, "SELECT body FROM checkpoints WHERE number = ?", (number,)
        )
        return decode_checkpoint(bytes(rows[0][0])).log_hash

    async def prune_batch(self, plan: PrunePlan, cursor: int, limit: int) -> PruneBatch:
        """Delete up to ``limit`` rows that ``plan`` drops, in one transaction of its own
        on the writer, taken between the group commit's (see
        :mod:`qudag_node.retention`); ``cursor`` is the last log position looked at
        (0 to start). The transaction skips the fsync (``synchronous=NORMAL``): a batch
        lost to a power cut is pruned again, and the next commit's fsync covers it. Nor
        does it checkpoint the WAL (which would hold the writer while it copies up to
        ``WAL_CHECKPOINT_PAGES``): the group commit's next commit does, as it would."""
        async with self._turn:
            started = time.perf_counter()
            db = self._writer
            try:
                await db.executescript(_PRUNE_BEGIN)  # one call on the writer's thread
                batch = await _prune_some(db, plan, cursor, limit)
                await db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    await db.execute("ROLLBACK")
                raise
            finally:
                await db.executescript(_PRUNE_RESTORE)
            held = time.perf_counter() - started
        return dataclasses.replace(batch, seconds=held)

    # ------------------------------------------------------- peer addresses

    async def last_good_addresses(self, host: str) -> list[str]:
        """The addresses ``host`` last resolved to, or [] if it never did."""
        rows = await _fetch(
            self._side, "SELECT addresses FROM peer_addresses WHERE host = ?", (host,)
        )
        return [a for a in rows[0][0].split(",") if a] if rows else []

    async def save_good_addresses(self, host: str, addresses: Sequence[str], now: float) -> None:
        """Remember what ``host`` resolved to, for when DNS fails later."""
        await self._side.execute(
            "INSERT INTO peer_addresses (host, addresses, resolved_at) VALUES (?, ?, ?)"
            " ON CONFLICT (host) DO UPDATE SET addresses = excluded.addresses,"
            " resolved_at = excluded.resolved_at",
            (host, ",".join(addresses), now),
        )

    # ------------------------------------------------------------- API reads

    async def ping(self) -> None:
        """A trivial query: proves the database answers."""
        await _fetch(self._reader, "SELECT 1")

    async def transaction(self, tx_id: TxId) -> StoredTransaction | None:
        """A stored transaction: its size, and its log place once final."""
        rows = await _fetch(
            self._reader,
            "SELECT length(transactions.data), l.seq, coalesce(v.id, l.vertex_id),"  # noqa: S608
            f" {_FINAL} FROM transactions"
            " LEFT JOIN log AS l ON l.tx = transactions.rowid"
            " LEFT JOIN vertices AS v ON v.rowid = l.vertex WHERE transactions.id = ?",
            (tx_id,),
        )
        if not rows:
            return None
        size, seq, vertex, final = rows[0]
        return StoredTransaction(
            tx_id, size, seq, VertexId(vertex) if vertex else None, final=bool(final)
        )

    async def dag_window(self, rounds: int, limit: int) -> list[DagVertexRecord]:
        """The stored vertices of the last ``rounds`` rounds held (up to the highest),
        highest round first, at most ``limit`` of them."""
        rows = await _fetch(self._reader, DAG_WINDOW_SQL, (rounds, limit))
        out = []
        for vid, header, ordered, certified in rows:
            h = decode_header_bytes(header)
            out.append(
                DagVertexRecord(
                    VertexId(bytes(vid)),
                    h.round,
                    h.author,
                    h.parents,
                    bool(certified),
                    bool(ordered),
                )
            )
        return out

    async def final_among(self, ids: Sequence[TxId]) -> set[TxId]:
        """Which of ``ids`` are final."""
        return await _matching_ids(self._reader, f"{_FINAL} AND ", ids)

    async def has_vertex(self, vertex_id: VertexId) -> bool:
        """Whether ``vertex_id`` is stored (durably: readers see committed rows only)."""
        return bool(await _fetch(self._reader, "SELECT 1 FROM vertices WHERE id = ?", (vertex_id,)))

    async def vertex(self, vertex_id: VertexId) -> VertexRecord | None:
        """A stored vertex."""
        rows = await _fetch(
            self._reader,
            "SELECT header, signature, tx_ids, ordered, certificate FROM vertices WHERE id = ?",
            (vertex_id,),
        )
        if not rows:
            return None
        header_bytes, signature, ids, ordered, certificate = rows[0]
        h = decode_header_bytes(header_bytes)
        return VertexRecord(
            vertex_id,
            h.round,
            h.author,
            h.timestamp_ms,
            h.parents,
            _split_ids(ids),
            bytes(header_bytes),
            int(h.scheme),
            bytes(signature),
            bool(ordered),
            None if certificate is None else bytes(certificate),
        )

    async def checkpoint(self, number: int) -> CheckpointRecord | None:
        """Certified checkpoint ``number`` with its window, if held here; raises
        :class:`Pruned` for a number older than every one held (pruned, or before the
        checkpoint this node joined from)."""
        found = await self._certified_checkpoint("number = ?", (number,))
        if found is None:
            rows = await _fetch(
                self._reader, "SELECT min(number) FROM checkpoints WHERE certificate IS NOT NULL"
            )
            if rows[0][0] is not None and number < int(rows[0][0]):
                raise Pruned(f"checkpoint {number}", (await _log_base(self._reader)).length)
        return found

    async def latest_checkpoint(self) -> CheckpointRecord | None:
        """The latest certified checkpoint held here, with its window, if any."""
        return await self._certified_checkpoint("1 ORDER BY number DESC LIMIT 1", ())

    async def _certified_checkpoint(
        self, where: str, params: Sequence[Any]
    ) -> CheckpointRecord | None:
        rows = await _fetch(
            self._reader,
            "SELECT body, certificate, window FROM checkpoints"  # noqa: S608 (constants only)
            f" WHERE certificate IS NOT NULL AND {where}",
            params,
        )
        if not rows:
            return None
        body, certificate, window = rows[0]
        return CheckpointRecord(
            CertifiedCheckpoint(decode_checkpoint(body), decode_certificate(certificate)),
            tuple(
                VertexId(bytes(window[k : k + HASH_SIZE])) for k in range(0, len(window), HASH_SIZE)
            ),
        )

    async def log(self, start: int, limit: int) -> list[LogRecord]:
        """Finalized entries from ``start`` on, in order; raises :class:`Pruned` when
        ``start`` is at or below the log's base (this node holds no entry there). An
        entry's vertex is None once the DAG's retention pruned it."""
        base = await _log_base(self._reader)
        if start <= base.length:
            raise Pruned(f"log position {start}", base.length)
        rows = await _fetch(
            self._reader,
            "SELECT l.seq, t.id, coalesce(v.id, l.vertex_id), l.hash FROM log AS l"
            " JOIN transactions AS t ON t.rowid = l.tx"
            " LEFT JOIN vertices AS v ON v.rowid = l.vertex"
            " WHERE l.seq >= ? ORDER BY l.seq LIMIT ?",
            (start, limit),
        )
        return [
            LogRecord(r[0], TxId(r[1]), None if r[2] is None else VertexId(r[2]), bytes(r[3]))
            for r in rows
        ]

    async def held_range(self) -> HeldRange:
        """The oldest round and log position this node still holds."""
        rows = await _fetch(self._reader, "SELECT min(round) FROM vertices")
        base = await _log_base(self._reader)
        return HeldRange(0 if rows[0][0] is None else int(rows[0][0]), base.length + 1)


#: A prune batch's transaction: no fsync and no WAL checkpoint of its own (see
#: :meth:`Store.prune_batch`); then the writer's settings again.
_PRUNE_RESTORE = f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}; PRAGMA synchronous=FULL;"
_PRUNE_BEGIN = "PRAGMA synchronous=NORMAL; PRAGMA wal_autocheckpoint=0; BEGIN IMMEDIATE;"


@dataclass(frozen=True, slots=True)
class PrunePlan:
    """What retention drops: vertices and evidence of rounds below ``dag_round``,
    checkpoints numbered below ``checkpoint``, and, when ``log`` is set, the log entries
    at positions up to ``log.length`` with their transactions (the log's base becomes
    ``log``), except those of vertices of rounds at or above ``log_round`` (the kept
    checkpoint's window, whose vertices need their transactions to be served)."""

    dag_round: int
    checkpoint: int
    log: LogBase | None
    log_round: int


@dataclass(frozen=True, slots=True)
class PruneBatch:
    """What one prune batch deleted, by kind, and the last log position it looked at;
    nothing deleted and the cursor past the plan's log: the plan is done."""

    counts: dict[str, int]
    cursor: int
    seconds: float = 0.0  # how long the batch held the writer

    @property
    def deleted(self) -> int:
        """Rows deleted in all."""
        return sum(self.counts.values())


async def _prune_some(
    db: aiosqlite.Connection, plan: PrunePlan, cursor: int, limit: int
) -> PruneBatch:
    """One batch of :meth:`Store.prune_batch`: the log first, then vertices, evidence
    and checkpoints. The newest row of a table is never deleted, so that no rowid is
    used twice (log entries refer to vertices and transactions by rowid, and
    :meth:`Store.totals` counts by the largest)."""
    if plan.log is not None and cursor < plan.log.length:
        if cursor == 0 and (await _log_base(db)).length < plan.log.length:
            await _set_meta(db, LOG_BASE, plan.log.encode())
        rows = await _fetch(
            db,
            "SELECT l.seq, l.tx, (v.round IS NULL OR v.round < ?)"
            " AND l.tx < (SELECT max(rowid) FROM transactions) FROM log AS l"
            " LEFT JOIN vertices AS v ON v.rowid = l.vertex"
            " WHERE l.seq > ? AND l.seq <= ? ORDER BY l.seq LIMIT ?",
            (plan.log_round, cursor, plan.log.length, limit),
        )
        gone = [(seq, tx) for seq, tx, drop in rows if drop]
        await db.executemany("DELETE FROM log WHERE seq = ?", [(seq,) for seq, _ in gone])
        await db.executemany("DELETE FROM transactions WHERE rowid = ?", [(t,) for _, t in gone])
        next_cursor = int(rows[-1][0]) if len(rows) == limit else plan.log.length
        return PruneBatch({"log": len(gone), "transactions": len(gone)}, next_cursor)
    steps = (
        (
            "vertices",
            "DELETE FROM vertices WHERE rowid IN (SELECT rowid FROM vertices WHERE round < ?"
            " AND rowid < (SELECT max(rowid) FROM vertices) LIMIT ?)",
            plan.dag_round,
        ),
        (
            "evidence",
            "DELETE FROM evidence WHERE (author, round) IN"
            " (SELECT author, round FROM evidence WHERE round < ? LIMIT ?)",
            plan.dag_round,
        ),
        (
            "checkpoints",
            "DELETE FROM checkpoints WHERE number IN"
            " (SELECT number FROM checkpoints WHERE number < ? LIMIT ?)",
            plan.checkpoint,
        ),
    )
    for kind, sql, below in steps:
        deleted = (await db.execute(sql, (below, limit))).rowcount
        if deleted:
            return PruneBatch({kind: deleted}, cursor)
    return PruneBatch({}, cursor)


#: SQL condition: the transaction row is final (it has a place in the log, or it was
#: final before the log's base on a node that joined from a checkpoint).
_FINAL = "NOT EXISTS (SELECT 1 FROM unfinal WHERE unfinal.tx = transactions.rowid)"


async def _rows_by_id(
    db: aiosqlite.Connection, columns: str, condition: str, ids: Sequence[TxId]
) -> list[Any]:
    """``columns`` of the stored transactions among ``ids`` that satisfy ``condition`` (a
    fixed SQL prefix), in chunks under SQLite's variable limit."""
    rows: list[Any] = []
    for chunk in _chunks(ids):
        marks = ",".join("?" * len(chunk))
        sql = f"SELECT {columns} FROM transactions WHERE {condition}id IN ({marks})"  # noqa: S608
        rows += await _fetch(db, sql, chunk)
    return rows


async def _matching_ids(db: aiosqlite.Connection, condition: str, ids: Sequence[TxId]) -> set[TxId]:
    """The ``ids`` of stored transactions that satisfy ``condition`` (a fixed SQL prefix)."""
    return {TxId(r[0]) for r in await _rows_by_id(db, "id", condition, ids)}


#: The columns :func:`_certified` reads, in its order.
_CERTIFIED_COLUMNS = "header, signature, tx_ids, certificate"


async def _certified(db: aiosqlite.Connection, rows: Sequence[Any]) -> list[bytes | None]:
    """CERTIFIED messages of certified vertex rows (:data:`_CERTIFIED_COLUMNS`), their
    transactions read in one batch; None for a vertex whose transactions are not all
    held any more (one that also carried a transaction final long before, whose bytes
    the retention pruned)."""
    ids = [_split_ids(r[2]) for r in rows]
    data = {
        TxId(r[0]): bytes(r[1])
        for r in await _rows_by_id(db, "id, data", "", [i for group in ids for i in group])
    }
    return [
        encode_certified(
            encode_vertex_parts(bytes(header), bytes(signature), [data[i] for i in group]),
            bytes(certificate),
        )
        if all(i in data for i in group)
        else None
        for (header, signature, _, certificate), group in zip(rows, ids, strict=True)
    ]


@dataclass(frozen=True, slots=True)
class _FullVertex:
    header: bytes
    signature: bytes
    ids: tuple[TxId, ...]
    transactions: list[bytes]
    certificate: bytes | None


async def _full_vertex(
    db: aiosqlite.Connection, where: str, params: Sequence[Any]
) -> _FullVertex | None:
    """The first vertex matching ``where`` (a fixed SQL clause), with its transactions."""
    rows = await _fetch(
        db,
        f"SELECT header, signature, tx_ids, certificate FROM vertices WHERE {where}",  # noqa: S608
        params,
    )
    if not rows:
        return None
    header, signature, blob, certificate = rows[0]
    ids = _split_ids(blob)
    data = {TxId(r[0]): bytes(r[1]) for r in await _rows_by_id(db, "id, data", "", ids)}
    return _FullVertex(
        bytes(header),
        bytes(signature),
        ids,
        [data[i] for i in ids],
        None if certificate is None else bytes(certificate),
    )


async def _fetch(db: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()) -> list[Any]:
    return list(await db.execute_fetchall(sql, params))


async def _migrate(db: aiosqlite.Connection, genesis: Genesis) -> None:
    (version,) = (await _fetch(db, "PRAGMA user_version"))[0]
    if version > SCHEMA_VERSION:
        raise StoreError(
            "schema_too_new",
            f"database schema {version} is newer than this node understands ({SCHEMA_VERSION})",
        )
    for number in range(version, SCHEMA_VERSION):
        await db.execute("BEGIN IMMEDIATE")
        try:
            for step in MIGRATIONS[number]:
                if isinstance(step, str):
                    await db.execute(step)
                else:
                    await step(db, genesis)
            await db.execute(f"PRAGMA user_version = {number + 1}")
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise


async def _bind_genesis(db: aiosqlite.Connection, genesis: Genesis) -> None:
    rows = await _fetch(db, "SELECT value FROM meta WHERE key = 'genesis'")
    if not rows:
        await db.execute("BEGIN IMMEDIATE")
        await _set_meta(db, "genesis", genesis.hash)
        await _set_meta(db, "network_id", genesis.network_id.encode())
        await db.execute("COMMIT")
        return
    if bytes(rows[0][0]) != genesis.hash:
        stored = await _fetch(db, "SELECT value FROM meta WHERE key = 'network_id'")
        raise _wrong_network(bytes(rows[0][0]), stored[0][0] if stored else None, genesis)


async def _set_meta(db: aiosqlite.Connection, key: str, value: bytes) -> None:
    await db.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


#: The meta key of the log's base: ``length:u64 hash:32``, the position up to which no
#: entry is held (pruned, or never fetched by a node that joined from a checkpoint) and
#: the running hash there. Absent: the log is held from its first entry.
LOG_BASE = "log_base"


@dataclass(frozen=True, slots=True)
class LogBase:
    """The log's base: no entry at positions up to ``length`` is held; ``hash`` is the
    running hash there (None when the base is 0: the log is held from its start)."""

    length: int
    hash: bytes | None

    def encode(self) -> bytes:
        """The meta value: ``length:u64 hash:32``."""
        assert self.hash is not None
        return self.length.to_bytes(8, "big") + self.hash


async def _log_base(db: aiosqlite.Connection) -> LogBase:
    rows = await _fetch(db, "SELECT value FROM meta WHERE key = ?", (LOG_BASE,))
    if not rows:
        return LogBase(0, None)
    value = bytes(rows[0][0])
    return LogBase(int.from_bytes(value[:8], "big"), value[8:])


async def _keep_certified(
    db: aiosqlite.Connection, certified: CertifiedCheckpoint, window: Sequence[VertexId]
) -> None:
    """Store a checked certified checkpoint (one computed here keeps its certificate)."""
    cp = certified.checkpoint
    await db.execute(
        "INSERT INTO checkpoints"
        " (number, round, log_length, timestamp_ms, body, window, certificate)"
        " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (number) DO UPDATE"
        " SET certificate = coalesce(certificate, excluded.certificate)",
        (
            cp.number,
            cp.round,
            cp.log_length,
            cp.timestamp_ms,
            cp.encode(),
            b"".join(window),
            certified.certificate.encode(),
        ),
    )


async def _log_end(db: aiosqlite.Connection) -> tuple[int, bytes | None]:
    """The log's length and running hash (None while empty): its last entry held, or
    its base when no entry above the base is held."""
    rows = await _fetch(db, "SELECT seq, hash FROM log ORDER BY seq DESC LIMIT 1")
    length, head = (int(rows[0][0]), bytes(rows[0][1])) if rows else (0, None)
    base = await _log_base(db)
    if base.length > length:
        return base.length, base.hash
    return length, head


async def _get_meta_int(db: aiosqlite.Connection, key: str) -> int:
    rows = await _fetch(db, "SELECT value FROM meta WHERE key = ?", (key,))
    return int.from_bytes(rows[0][0], "big") if rows else 0


# ------------------------------------------------------- backup and restore


def backup_database(
    source: Path, dest: Path, progress: Callable[[int, int], None] | None = None
) -> int:
    """Copy a live database to ``dest`` (a consistent snapshot); returns pages copied.

    The source may be in use by a running node: the copy holds one read transaction
    for its whole duration, so it sees a single committed state while the node keeps
    writing to the WAL.
    """
    if dest.exists():
        raise StoreError("exists", f"{dest} already exists; a backup never overwrites")
    if not dest.parent.is_dir():
        raise StoreError("no_directory", f"{dest.parent} is not a directory; create it first")
    if not source.is_file():
        raise StoreError("no_database", f"no database at {source}")
    partial = dest.with_name(dest.name + ".partial")
    try:
        partial.unlink(missing_ok=True)
        copied = _copy_snapshot(source, partial, progress)
        _fsync(partial)
        partial.rename(dest)
        _fsync(dest.parent)
    except (sqlite3.Error, OSError) as e:
        _remove_quietly(partial)
        raise StoreError("io", f"backup to {dest} failed: {e}") from None
    return copied


def _copy_snapshot(source: Path, target: Path, progress: Callable[[int, int], None] | None) -> int:
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        src.execute("BEGIN")
        src.execute("SELECT count(*) FROM meta").fetchone()  # pin the snapshot
        dst = sqlite3.connect(target)
        copied = 0

        def step(_status: int, remaining: int, total: int) -> None:
            nonlocal copied
            copied = total - remaining
            if progress is not None:
                progress(copied, total)

        try:
            src.backup(dst, pages=256, progress=step)
            dst.execute("PRAGMA journal_mode=DELETE")
            check = dst.execute("PRAGMA quick_check").fetchone()
        finally:
            dst.close()
        src.rollback()
    finally:
        src.close()
    if check is None or check[0] != "ok":
        raise sqlite3.DatabaseError("the copy failed its integrity check")
    return copied


def restore_database(backup: Path, data_dir: Path) -> None:
    """Put a backup in place as the database of an empty data dir."""
    if not backup.is_file():
        raise StoreError("no_backup", f"no backup file at {backup}")
    target = data_dir / DB_FILENAME
    if target.exists() or target.with_name(DB_FILENAME + "-wal").exists():
        raise StoreError(
            "not_empty", f"{data_dir} already holds a database; restore into an empty data dir"
        )
    conn = sqlite3.connect(f"file:{backup}?mode=ro", uri=True)
    try:
        check = conn.execute("PRAGMA quick_check").fetchone()
        (version,) = conn.execute("PRAGMA user_version").fetchone()
    except sqlite3.DatabaseError as e:
        raise StoreError("corrupt", f"{backup} is not a usable database: {e}") from None
    finally:
        conn.close()
    if check is None or check[0] != "ok":
        raise StoreError("corrupt", f"{backup} failed its integrity check")
    if not 1 <= version <= SCHEMA_VERSION:
        raise StoreError("not_qudag", f"{backup} is not a qudag-node database (schema {version})")
    partial = data_dir / (DB_FILENAME + ".partial")
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        with backup.open("rb") as src, partial.open("wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
        partial.rename(target)
        _fsync(data_dir)
    except OSError as e:
        _remove_quietly(partial)
        raise StoreError("io", f"restore into {data_dir} failed: {e.strerror}") from None


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
