"""Sync messages and the fingerprints that find differences between two DAGs.

Layouts (integers big-endian); the type bytes continue those of
:mod:`~qudag_node.core.messages`, and :mod:`~qudag_node.core.wire` routes them here::

    7  STATUS       highest:u64  committed:u64  floor:u64  log_length:u64  log_hash:32
    8  SUMMARY      low:u64  high:u64  span:u32  count:u16  (vertices:u32  fingerprint:u64) * count
    9  IDS          low:u64  high:u64  count:u32  vertex_id:32 * count
    10 ROUNDS       low:u64  high:u64       please send the certified vertices of these rounds
    11 ROUNDS_DONE  low:u64  last:u64       rounds low..last were sent (CERTIFIED before it)
    13 CHECKPOINT_REQUEST  number:u64      your certified checkpoint ``number`` (0: latest)
    14 CHECKPOINT   certified_checkpoint  count:u32  vertex_id:32 * count   (its window)
    15 HOLDINGS     oldest_round:u64  latest_checkpoint:u64  latest_checkpoint_round:u64
    16 LOG_REQUEST  from:u64  count:u32                your log entries ``from`` on
    17 LOG_ENTRIES  first:u64  count:u32  (tx_id:32  vertex_id:32  length:u32  data) * count

(Type 12, CHECKPOINT_SIGNATURE, is the engine's.) HOLDINGS says what a peer can
serve: the oldest round it holds and its latest certified checkpoint (0 when none).
It is unsigned: it may make a node ask, never accept. LOG_ENTRIES answers a
LOG_REQUEST with the consecutive entries the sender holds from ``first`` on (whole
entries, about :data:`LOG_ANSWER_BYTES` in all; none when it holds none there).

A SUMMARY covers rounds ``low..high`` in ``count = ceil((high - low + 1) / span)``
buckets of ``span`` rounds (the last one may be shorter). Round numbers are at most
:data:`MAX_ROUND`. A bucket's
fingerprint is the XOR of the first 8 bytes of its certified vertex ids (ids are
hashes, so their prefixes are uniform), and it travels with the bucket's vertex count.
Both are computed for every bucket in one vectorised pass over :class:`CertifiedIds`,
the ids and their rounds packed into two buffers that numpy reads without a copy.
"""

from __future__ import annotations

import enum
from array import array
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from qudag_node.core import codec
from qudag_node.core.checkpoint import CertifiedCheckpoint, read_certified
from qudag_node.core.errors import InputRejected, Reason
from qudag_node.core.types import HASH_SIZE, TxId, VertexId


class SyncType(enum.IntEnum):
    """Type bytes of the sync messages."""

    STATUS = 7
    SUMMARY = 8
    IDS = 9
    ROUNDS = 10
    ROUNDS_DONE = 11
    CHECKPOINT_REQUEST = 13
    CHECKPOINT = 14
    HOLDINGS = 15
    LOG_REQUEST = 16
    LOG_ENTRIES = 17


#: Most buckets in one SUMMARY.
MAX_BUCKETS = 64
#: A bucket of at most this many rounds is settled by listing its ids.
LEAF_SPAN = 4
#: Most ids in one IDS message.
MAX_IDS = 4096
#: Most rounds one ROUNDS request may ask for.
MAX_ROUNDS = 1024
#: Largest round number a sync message may name (SQLite integers are signed 64-bit).
MAX_ROUND = 2**62
#: Most log entries one LOG_REQUEST may ask for.
MAX_LOG_ENTRIES = 65_536
#: Bytes one LOG_ENTRIES answer aims at (whole entries are sent, so it may pass this by
#: one entry; well under a link's largest frame).
LOG_ANSWER_BYTES = 4 << 20
#: Bytes of a LOG_ENTRIES entry besides its transaction data.
ENTRY_OVERHEAD = 2 * HASH_SIZE + 4


@dataclass(frozen=True, slots=True)
class Status:
    """Where a node stands: its highest and committed rounds, window floor, and log."""

    highest: int
    committed: int
    floor: int
    log_length: int
    log_hash: bytes


@dataclass(frozen=True, slots=True)
class Summary:
    """Vertex counts and fingerprints of rounds ``low..high`` in buckets of ``span``."""

    low: int
    high: int
    span: int
    counts: tuple[int, ...]
    fingerprints: tuple[int, ...]

    def bucket(self, k: int) -> tuple[int, int]:
        """The first and last round of bucket ``k``."""
        start = self.low + k * self.span
        return start, min(start + self.span - 1, self.high)


@dataclass(frozen=True, slots=True)
class Ids:
    """Every certified vertex id the sender holds in rounds ``low..high``."""

    low: int
    high: int
    ids: tuple[VertexId, ...]


@dataclass(frozen=True, slots=True)
class RoundsRequest:
    """Please send every certified vertex of rounds ``low..high``."""

    low: int
    high: int


@dataclass(frozen=True, slots=True)
class RoundsDone:
    """The answer to a ROUNDS request is complete up to round ``last``."""

    low: int
    last: int


@dataclass(frozen=True, slots=True)
class CheckpointRequest:
    """Please send your certified checkpoint ``number`` (0: your latest) and its window."""

    number: int


@dataclass(frozen=True, slots=True)
class CheckpointOffer:
    """A certified checkpoint and the ids of its window (the answer to a request)."""

    certified: CertifiedCheckpoint
    window: tuple[VertexId, ...]


@dataclass(frozen=True, slots=True)
class Holdings:
    """What a node can serve: its oldest held round and latest certified checkpoint."""

    oldest_round: int
    latest_checkpoint: int
    latest_checkpoint_round: int


@dataclass(frozen=True, slots=True)
class LogRequest:
    """Please send your log entries from position ``start`` on, at most ``count``."""

    start: int
    count: int


@dataclass(frozen=True, slots=True)
class WireEntry:
    """One log entry as a peer serves it: the transaction, its bytes, and the vertex
    that ordered it."""

    tx_id: TxId
    vertex_id: VertexId
    data: bytes


@dataclass(frozen=True, slots=True)
class LogEntries:
    """Log entries at positions ``first``, ``first + 1``, ... (the answer to a request)."""

    first: int
    entries: tuple[WireEntry, ...]


SyncMessage = (
    Status
    | Summary
    | Ids
    | RoundsRequest
    | RoundsDone
    | CheckpointRequest
    | CheckpointOffer
    | Holdings
    | LogRequest
    | LogEntries
)
#: Most ids in a checkpoint's window (validators * (gc_depth + 1) for any sane network).
MAX_WINDOW = 1 << 20


def encode_sync(message: SyncMessage) -> bytes:
    """Canonical bytes of a sync message."""
    match message:
        case Status(highest, committed, floor, length, log_hash):
            return b"".join(
                (
                    bytes((SyncType.STATUS,)),
                    codec.u64(highest),
                    codec.u64(committed),
                    codec.u64(floor),
                    codec.u64(length),
                    log_hash,
                )
            )
        case Summary(low, high, span, counts, fps):
            body = np.empty(len(counts), dtype=[("n", ">u4"), ("fp", ">u8")])
            body["n"] = counts
            body["fp"] = fps
            head = bytes((SyncType.SUMMARY,)) + codec.u64(low) + codec.u64(high)
            return head + codec.u32(span) + codec.u16(len(counts)) + body.tobytes()
        case Ids(low, high, ids):
            head = bytes((SyncType.IDS,)) + codec.u64(low) + codec.u64(high)
            return head + codec.u32(len(ids)) + b"".join(ids)
        case RoundsRequest(low, high):
            return bytes((SyncType.ROUNDS,)) + codec.u64(low) + codec.u64(high)
        case RoundsDone(low, last):
            return bytes((SyncType.ROUNDS_DONE,)) + codec.u64(low) + codec.u64(last)
        case CheckpointRequest(number):
            return bytes((SyncType.CHECKPOINT_REQUEST,)) + codec.u64(number)
        case CheckpointOffer(certified, window):
            head = bytes((SyncType.CHECKPOINT,)) + certified.encode()
            return head + codec.u32(len(window)) + b"".join(window)
        case Holdings(oldest, latest, latest_round):
            return b"".join(
                (
                    bytes((SyncType.HOLDINGS,)),
                    codec.u64(oldest),
                    codec.u64(latest),
                    codec.u64(latest_round),
                )
            )
        case LogRequest(start, count):
            return bytes((SyncType.LOG_REQUEST,)) + codec.u64(start) + codec.u32(count)
        case LogEntries(first, entries):
            head = bytes((SyncType.LOG_ENTRIES,)) + codec.u64(first) + codec.u32(len(entries))
            return head + b"".join(
                e.tx_id + e.vertex_id + codec.u32(len(e.data)) + e.data for e in entries
            )


def decode_sync(data: bytes) -> SyncMessage:
    """Parse a sync message; any malformed input raises :class:`InputRejected`."""
    r = codec.Reader(data)
    kind = r.u8("message type")
    message: SyncMessage
    if kind == SyncType.STATUS:
        highest, committed, floor = r.u64("highest"), r.u64("committed"), r.u64("floor")
        _check_rounds(highest, committed, floor)
        message = Status(highest, committed, floor, r.u64("log length"), r.fixed(HASH_SIZE, "hash"))
    elif kind == SyncType.SUMMARY:
        low, high, span, count = r.u64("low"), r.u64("high"), r.u32("span"), r.u16("count")
        _check_rounds(low, high)
        if span < 1 or high < low or count != bucket_count(low, high, span):
            raise InputRejected(Reason.BAD_SYNC, f"summary of rounds {low}..{high} by {span}")
        if count > MAX_BUCKETS:
            raise InputRejected(Reason.BAD_SYNC, f"summary of {count} buckets")
        body = np.frombuffer(r.fixed(12 * count, "buckets"), dtype=[("n", ">u4"), ("fp", ">u8")])
        counts = tuple(int(n) for n in body["n"])
        message = Summary(low, high, span, counts, tuple(int(f) for f in body["fp"]))
    elif kind == SyncType.IDS:
        low, high, count = r.u64("low"), r.u64("high"), r.u32("count")
        _check_rounds(low, high)
        if count > MAX_IDS or high < low:
            raise InputRejected(Reason.BAD_SYNC, f"{count} ids for rounds {low}..{high}")
        message = Ids(low, high, split_ids(r.fixed(HASH_SIZE * count, "ids")))
    elif kind == SyncType.ROUNDS:
        low, high = r.u64("low"), r.u64("high")
        _check_rounds(low, high)
        if high < low or high - low >= MAX_ROUNDS:
            raise InputRejected(Reason.BAD_SYNC, f"rounds {low}..{high}")
        message = RoundsRequest(low, high)
    elif kind == SyncType.ROUNDS_DONE:
        low, last = r.u64("low"), r.u64("last")
        _check_rounds(low, last)
        message = RoundsDone(low, last)
    elif kind == SyncType.CHECKPOINT_REQUEST:
        message = CheckpointRequest(r.u64("checkpoint number"))
    elif kind == SyncType.CHECKPOINT:
        message = _read_offer(r)
    elif kind == SyncType.HOLDINGS:
        oldest, latest, latest_round = r.u64("oldest"), r.u64("latest"), r.u64("latest round")
        _check_rounds(oldest, latest_round)
        message = Holdings(oldest, latest, latest_round)
    elif kind == SyncType.LOG_REQUEST:
        message = _read_log_request(r)
    elif kind == SyncType.LOG_ENTRIES:
        message = _read_log_entries(r)
    else:
        raise InputRejected(Reason.UNKNOWN_MESSAGE, f"message type {kind}")
    r.finish("sync message")
    return message


def _read_offer(r: codec.Reader) -> CheckpointOffer:
    certified = read_certified(r)
    count = r.u32("window count")
    if count > MAX_WINDOW or count != certified.checkpoint.window_count:
        raise InputRejected(Reason.BAD_SYNC, f"{count} window ids")
    return CheckpointOffer(certified, split_ids(r.fixed(HASH_SIZE * count, "window ids")))


def _read_log_request(r: codec.Reader) -> LogRequest:
    start, count = r.u64("log position"), r.u32("count")
    _check_rounds(start)
    if start < 1 or not 1 <= count <= MAX_LOG_ENTRIES:
        raise InputRejected(Reason.BAD_SYNC, f"{count} log entries from {start}")
    return LogRequest(start, count)


def _read_log_entries(r: codec.Reader) -> LogEntries:
    first, count = r.u64("first position"), r.u32("count")
    _check_rounds(first)
    if first < 1 or count > MAX_LOG_ENTRIES:
        raise InputRejected(Reason.BAD_SYNC, f"{count} log entries from {first}")
    entries = []
    for _ in range(count):
        tx, vertex = TxId(r.fixed(HASH_SIZE, "tx id")), VertexId(r.fixed(HASH_SIZE, "vertex id"))
        entries.append(WireEntry(tx, vertex, r.fixed(r.u32("length"), "transaction")))
    return LogEntries(first, tuple(entries))


def _check_rounds(*rounds: int) -> None:
    if max(rounds) > MAX_ROUND:
        raise InputRejected(Reason.BAD_SYNC, f"round {max(rounds)} is beyond {MAX_ROUND}")


def split_ids(blob: bytes) -> tuple[VertexId, ...]:
    """The vertex ids packed back to back in ``blob``."""
    return tuple(VertexId(blob[k : k + HASH_SIZE]) for k in range(0, len(blob), HASH_SIZE))


@dataclass(frozen=True, slots=True, eq=False)
class CertifiedIds:
    """Vertex ids and their rounds, sorted by round, packed for :func:`summarize`.

    ``rounds`` holds one round per id (signed 64-bit, never decreasing); ``ids`` the
    ids themselves, :data:`HASH_SIZE` bytes each, back to back in the same order.
    """

    rounds: array[int]
    ids: bytes

    def __post_init__(self) -> None:
        if self.rounds.typecode != "q":
            raise ValueError(f"rounds must be signed 64-bit ('q'), not {self.rounds.typecode!r}")
        if len(self.ids) != HASH_SIZE * len(self.rounds):
            raise ValueError(f"{len(self.ids)} id bytes for {len(self.rounds)} rounds")
        rounds = self.round_array()
        if np.any(rounds[1:] < rounds[:-1]):
            raise ValueError("rounds must be sorted")

    @classmethod
    def of(cls, rounds: Iterable[int], ids: Iterable[bytes]) -> CertifiedIds:
        """Pack parallel rounds and ids, already sorted by round."""
        return cls(array("q", rounds), b"".join(ids))

    def __len__(self) -> int:
        return len(self.rounds)

    def round_array(self) -> npt.NDArray[np.int64]:
        """The rounds as a numpy array sharing their buffer."""
        return np.frombuffer(self.rounds, dtype=np.int64)

    def between(self, low: int, high: int) -> tuple[VertexId, ...]:
        """The ids of rounds ``low..high``, in order."""
        start, stop = np.searchsorted(self.round_array(), (low, high + 1))
        return split_ids(self.ids[HASH_SIZE * start : HASH_SIZE * stop])


def bucket_span(low: int, high: int, buckets: int = 16) -> int:
    """The span that covers rounds ``low..high`` in at most ``buckets`` buckets."""
    return max(1, -(-(high - low + 1) // buckets))


def bucket_count(low: int, high: int, span: int) -> int:
    """How many buckets of ``span`` rounds cover ``low..high``."""
    return -(-(high - low + 1) // span)


def summarize(certified: CertifiedIds, low: int, high: int, span: int) -> Summary:
    """Counts and fingerprints of rounds ``low..high`` in buckets of ``span`` rounds;
    ids of other rounds are ignored.

    Since the rounds are sorted, each bucket is a slice of the ids, found by a binary
    search of its first round; the slices' keys are XORed in one ``reduceat``.
    """
    count = bucket_count(low, high, span)
    firsts = low + span * np.arange(count + 1, dtype=np.int64)
    firsts[-1] = high + 1
    edges = np.searchsorted(certified.round_array(), firsts)
    counts = np.diff(edges)
    # The first 8 bytes of every id, read in place as big-endian integers.
    keys = np.frombuffer(certified.ids, dtype=">u8")[:: HASH_SIZE // 8][edges[0] : edges[-1]]
    fps = np.zeros(count, dtype=np.uint64)
    present = counts > 0
    if keys.size:
        fps[present] = np.bitwise_xor.reduceat(keys, (edges[:-1] - edges[0])[present])
    return Summary(low, high, span, tuple(counts.tolist()), tuple(fps.tolist()))


def differing(ours: Summary, theirs: Summary) -> list[int]:
    """Indices of the buckets where two summaries of the same buckets differ."""
    a = np.array(ours.counts, dtype=np.int64), np.array(ours.fingerprints, dtype=np.uint64)
    b = np.array(theirs.counts, dtype=np.int64), np.array(theirs.fingerprints, dtype=np.uint64)
    return [int(k) for k in np.flatnonzero((a[0] != b[0]) | (a[1] != b[1]))]
