"""Sync messages on the wire, and the bucket fingerprints that compare two DAGs."""

from __future__ import annotations

import functools
import random
from array import array
from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qudag_node.core import codec
from qudag_node.core.errors import Fault, InputRejected, Reason
from qudag_node.core.syncwire import (
    MAX_BUCKETS,
    MAX_IDS,
    MAX_LOG_ENTRIES,
    MAX_ROUND,
    MAX_ROUNDS,
    CertifiedIds,
    Ids,
    LogEntries,
    LogRequest,
    RoundsDone,
    RoundsRequest,
    Status,
    Summary,
    SyncMessage,
    SyncType,
    WireEntry,
    bucket_count,
    bucket_span,
    decode_sync,
    differing,
    encode_sync,
    summarize,
)
from qudag_node.core.types import TxId, VertexId

PROPERTIES = settings(derandomize=True, database=None, deadline=None, max_examples=300)

U64 = st.integers(min_value=0, max_value=2**64 - 1)
#: Any round number a sync message may name.
ROUND = st.integers(min_value=0, max_value=MAX_ROUND)
U32 = st.integers(min_value=0, max_value=2**32 - 1)
HASHES = st.binary(min_size=32, max_size=32)
VERTEX_IDS = HASHES.map(VertexId)


def rejected(decode: Callable[[], object]) -> Reason:
    """The reason ``decode`` refuses its input with."""
    with pytest.raises(InputRejected) as info:
        decode()
    assert info.value.fault is Fault.PEER
    return info.value.reason


def reason_of(data: bytes) -> Reason:
    """The reason :func:`decode_sync` refuses ``data`` with."""
    return rejected(functools.partial(decode_sync, data))


def key(vertex_id: bytes) -> int:
    """A vertex id's fingerprint contribution: its first 8 bytes, big-endian."""
    return int.from_bytes(vertex_id[:8], "big")


def reference_summary(
    rounds: Sequence[int], ids: Sequence[bytes], low: int, high: int, span: int
) -> Summary:
    """What :func:`summarize` must compute, one entry at a time."""
    count = len(range(low, high + 1, span))
    counts = [0] * count
    fingerprints = [0] * count
    for round_, vertex_id in zip(rounds, ids, strict=True):
        if low <= round_ <= high:
            k = (round_ - low) // span
            counts[k] += 1
            fingerprints[k] ^= key(vertex_id)
    return Summary(low, high, span, tuple(counts), tuple(fingerprints))


# --------------------------------------------------------------- strategies


@st.composite
def statuses(draw: st.DrawFn) -> Status:
    """Any STATUS the decoder accepts."""
    return Status(draw(ROUND), draw(ROUND), draw(ROUND), draw(U64), draw(HASHES))


@st.composite
def summaries(draw: st.DrawFn) -> Summary:
    """Any SUMMARY the decoder accepts: ``count`` buckets, the last one maybe shorter."""
    count = draw(st.integers(min_value=1, max_value=MAX_BUCKETS))
    counts = draw(st.lists(U32, min_size=count, max_size=count))
    fingerprints = draw(st.lists(U64, min_size=count, max_size=count))
    span = draw(st.integers(min_value=1, max_value=2**32 - 1))
    low = draw(st.integers(min_value=0, max_value=MAX_ROUND - (count - 1) * span))
    last_start = low + (count - 1) * span
    high = draw(st.integers(min_value=last_start, max_value=min(last_start + span - 1, MAX_ROUND)))
    return Summary(low, high, span, tuple(counts), tuple(fingerprints))


@st.composite
def id_lists(draw: st.DrawFn) -> Ids:
    """Any IDS the decoder accepts (up to a few dozen ids)."""
    low = draw(ROUND)
    high = draw(st.integers(min_value=low, max_value=MAX_ROUND))
    return Ids(low, high, tuple(draw(st.lists(VERTEX_IDS, max_size=40))))


@st.composite
def rounds_requests(draw: st.DrawFn) -> RoundsRequest:
    """Any ROUNDS request the decoder accepts."""
    low = draw(ROUND)
    high = draw(st.integers(min_value=low, max_value=min(low + MAX_ROUNDS - 1, MAX_ROUND)))
    return RoundsRequest(low, high)


POSITION = st.integers(min_value=1, max_value=MAX_ROUND)
WIRE_ENTRIES = st.builds(WireEntry, HASHES.map(TxId), HASHES.map(VertexId), st.binary(max_size=64))

MESSAGES: st.SearchStrategy[SyncMessage] = st.one_of(
    statuses(),
    summaries(),
    id_lists(),
    rounds_requests(),
    st.builds(RoundsDone, ROUND, ROUND),
    st.builds(LogRequest, POSITION, st.integers(min_value=1, max_value=MAX_LOG_ENTRIES)),
    st.builds(LogEntries, POSITION, st.lists(WIRE_ENTRIES, max_size=5).map(tuple)),
)


@st.composite
def dag_rows(draw: st.DrawFn) -> tuple[list[int], list[bytes]]:
    """(rounds, ids) of certified vertices, sorted by round, as the store lists them."""
    rows = draw(st.lists(st.tuples(st.integers(min_value=0, max_value=200), HASHES)))
    rows.sort(key=lambda row: row[0])
    return [r for r, _ in rows], [i for _, i in rows]


# ------------------------------------------------------------------ the wire


@PROPERTIES
@given(MESSAGES)
def test_every_sync_message_round_trips(message: SyncMessage) -> None:
    data = encode_sync(message)
    assert decode_sync(data) == message
    assert encode_sync(decode_sync(data)) == data


@PROPERTIES
@given(MESSAGES, st.data())
def test_every_truncation_is_refused(message: SyncMessage, data: st.DataObject) -> None:
    encoded = encode_sync(message)
    cut = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    assert reason_of(encoded[:cut]) is Reason.TRUNCATED


@PROPERTIES
@given(MESSAGES, st.binary(min_size=1, max_size=40))
def test_trailing_bytes_are_refused(message: SyncMessage, extra: bytes) -> None:
    assert reason_of(encode_sync(message) + extra) is Reason.TRAILING_BYTES


def test_layouts_are_as_documented() -> None:
    h = b"\x07" * 32
    assert encode_sync(Status(1, 2, 3, 4, h)) == (
        b"\x07" + b"".join(codec.u64(n) for n in (1, 2, 3, 4)) + h
    )
    assert encode_sync(Summary(5, 10, 3, (2, 0), (0xA, 0))) == (
        b"\x08" + codec.u64(5) + codec.u64(10) + codec.u32(3) + codec.u16(2)
    ) + (codec.u32(2) + codec.u64(0xA) + codec.u32(0) + codec.u64(0))
    one = VertexId(b"\x01" * 32)
    assert encode_sync(Ids(4, 6, (one,))) == (
        b"\x09" + codec.u64(4) + codec.u64(6) + codec.u32(1) + one
    )
    assert encode_sync(RoundsRequest(9, 72)) == b"\x0a" + codec.u64(9) + codec.u64(72)
    assert encode_sync(RoundsDone(9, 70)) == b"\x0b" + codec.u64(9) + codec.u64(70)
    assert encode_sync(LogRequest(11, 500)) == b"\x10" + codec.u64(11) + codec.u32(500)
    entry = WireEntry(TxId(h), one, b"abc")
    assert encode_sync(LogEntries(11, (entry,))) == (
        b"\x11" + codec.u64(11) + codec.u32(1) + h + one + codec.u32(3) + b"abc"
    )


def test_log_requests_and_answers_outside_the_limits_are_refused() -> None:
    for start, count in ((0, 1), (1, 0), (1, MAX_LOG_ENTRIES + 1), (MAX_ROUND + 1, 1)):
        assert reason_of(b"\x10" + codec.u64(start) + codec.u32(count)) is Reason.BAD_SYNC
    assert reason_of(b"\x11" + codec.u64(0) + codec.u32(0)) is Reason.BAD_SYNC
    too_many = b"\x11" + codec.u64(1) + codec.u32(MAX_LOG_ENTRIES + 1)
    assert reason_of(too_many) is Reason.BAD_SYNC
    # an entry whose length runs past the message
    short = b"\x11" + codec.u64(1) + codec.u32(1) + b"\x01" * 64 + codec.u32(10) + b"abc"
    assert reason_of(short) is Reason.TRUNCATED


def summary_bytes(low: int, high: int, span: int, count: int, buckets: int | None = None) -> bytes:
    """SUMMARY bytes of rounds ``low..high`` announcing ``count`` buckets of ``span``
    rounds and carrying ``buckets`` of them (all ``count`` unless told)."""
    body = (codec.u32(1) + codec.u64(1)) * (count if buckets is None else buckets)
    head = bytes((SyncType.SUMMARY,)) + codec.u64(low) + codec.u64(high)
    return head + codec.u32(span) + codec.u16(count) + body


def ids_bytes(low: int, high: int, count: int) -> bytes:
    """IDS bytes announcing and carrying ``count`` ids."""
    head = bytes((SyncType.IDS,)) + codec.u64(low) + codec.u64(high) + codec.u32(count)
    return head + b"\x05" * 32 * count


def rounds_bytes(low: int, high: int) -> bytes:
    """ROUNDS request bytes."""
    return bytes((SyncType.ROUNDS,)) + codec.u64(low) + codec.u64(high)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (summary_bytes(1, 8, 4, 0), Reason.BAD_SYNC),
        (summary_bytes(1, 9, 4, 2), Reason.BAD_SYNC),
        (summary_bytes(1, 8, 4, 3), Reason.BAD_SYNC),
        (summary_bytes(1, 8, 4, 0xFFFF, 0), Reason.BAD_SYNC),
        (summary_bytes(1, MAX_BUCKETS + 1, 1, MAX_BUCKETS + 1), Reason.BAD_SYNC),
        (summary_bytes(1, 0xFFFF, 1, 0xFFFF, 0), Reason.BAD_SYNC),
        (summary_bytes(1, 8, 0, 4), Reason.BAD_SYNC),
        (summary_bytes(9, 8, 1, 0), Reason.BAD_SYNC),
        (summary_bytes(10, 5, 10, 0), Reason.BAD_SYNC),
        (summary_bytes(1, 16, 4, 4, 3), Reason.TRUNCATED),
        (ids_bytes(10, 9, 0), Reason.BAD_SYNC),
        (ids_bytes(1, 2, MAX_IDS + 1), Reason.BAD_SYNC),
        (ids_bytes(1, 2, 3)[:-1], Reason.TRUNCATED),
        (rounds_bytes(1, MAX_ROUNDS + 1), Reason.BAD_SYNC),
        (rounds_bytes(0, 2**64 - 1), Reason.BAD_SYNC),
        (rounds_bytes(10, 9), Reason.BAD_SYNC),
        (b"", Reason.TRUNCATED),
        (bytes((4,)), Reason.UNKNOWN_MESSAGE),
        (bytes((SyncType.ROUNDS_DONE + 1,)), Reason.UNKNOWN_MESSAGE),
    ],
    ids=[
        "summary-0-buckets",
        "summary-one-bucket-too-few",
        "summary-one-bucket-too-many",
        "summary-count-ffff-for-2",
        "summary-too-many-buckets",
        "summary-ffff-buckets",
        "summary-span-0",
        "summary-high-below-low",
        "summary-high-far-below-low",
        "summary-short-body",
        "ids-high-below-low",
        "ids-too-many",
        "ids-short",
        "rounds-too-wide",
        "rounds-all",
        "rounds-high-below-low",
        "empty",
        "not-a-sync-type",
        "unknown-type",
    ],
)
def test_decode_refuses(data: bytes, reason: Reason) -> None:
    assert reason_of(data) is reason


def test_the_limits_themselves_are_accepted() -> None:
    summary = decode_sync(summary_bytes(1, MAX_BUCKETS, 1, MAX_BUCKETS))
    assert isinstance(summary, Summary)
    assert len(summary.counts) == MAX_BUCKETS
    ids = decode_sync(ids_bytes(3, 3, MAX_IDS))
    assert isinstance(ids, Ids)
    assert len(ids.ids) == MAX_IDS
    assert decode_sync(rounds_bytes(1, MAX_ROUNDS)) == RoundsRequest(1, MAX_ROUNDS)
    assert decode_sync(rounds_bytes(7, 7)) == RoundsRequest(7, 7)


def test_summary_buckets_cover_consecutive_rounds() -> None:
    summary = Summary(10, 18, 3, (0, 0, 0), (0, 0, 0))
    assert [summary.bucket(k) for k in range(3)] == [(10, 12), (13, 15), (16, 18)]


def test_the_last_bucket_stops_at_high() -> None:
    summary = Summary(10, 16, 3, (0, 0, 0), (0, 0, 0))
    assert [summary.bucket(k) for k in range(3)] == [(10, 12), (13, 15), (16, 16)]
    assert decode_sync(encode_sync(summary)) == summary


def test_a_summary_of_one_round_at_the_limit() -> None:
    summary = Summary(MAX_ROUND, MAX_ROUND, 2**32 - 1, (3,), (2**64 - 1,))
    assert summary.bucket(0) == (MAX_ROUND, MAX_ROUND)
    assert decode_sync(encode_sync(summary)) == summary


# ------------------------------------------------------------- round limits

#: A sync message naming ``n`` in one of its round fields (the others valid).
ROUND_FIELDS: dict[str, Callable[[int], SyncMessage]] = {
    "status-highest": lambda n: Status(n, 0, 0, 0, b"\x01" * 32),
    "status-committed": lambda n: Status(0, n, 0, 0, b"\x01" * 32),
    "status-floor": lambda n: Status(0, 0, n, 0, b"\x01" * 32),
    "summary-low": lambda n: Summary(n, n, 1, (0,), (0,)),
    "summary-high": lambda n: Summary(n - 1, n, 2, (0,), (0,)),
    "ids-low": lambda n: Ids(n, n, ()),
    "ids-high": lambda n: Ids(0, n, ()),
    "rounds-low": lambda n: RoundsRequest(n, n),
    "rounds-high": lambda n: RoundsRequest(n - 1, n),
    "rounds-done-low": lambda n: RoundsDone(n, 0),
    "rounds-done-last": lambda n: RoundsDone(0, n),
}


@pytest.mark.parametrize("field", sorted(ROUND_FIELDS))
def test_a_round_of_max_round_is_accepted(field: str) -> None:
    message = ROUND_FIELDS[field](MAX_ROUND)
    assert decode_sync(encode_sync(message)) == message


@pytest.mark.parametrize("beyond", [MAX_ROUND + 1, 2**63, 2**64 - 1], ids=["next", "2^63", "u64"])
@pytest.mark.parametrize("field", sorted(ROUND_FIELDS))
def test_a_round_beyond_max_round_is_refused(field: str, beyond: int) -> None:
    assert reason_of(encode_sync(ROUND_FIELDS[field](beyond))) is Reason.BAD_SYNC


def test_a_log_length_is_not_a_round() -> None:
    status = Status(MAX_ROUND, MAX_ROUND, MAX_ROUND, 2**64 - 1, b"\x02" * 32)
    assert decode_sync(encode_sync(status)) == status


# -------------------------------------------------------------- fingerprints


@PROPERTIES
@given(
    dag_rows(), st.integers(min_value=-5, max_value=205), st.integers(min_value=-5, max_value=205)
)
def test_certified_ids_list_the_ids_of_a_range_of_rounds(
    rows: tuple[list[int], list[bytes]], low: int, high: int
) -> None:
    rounds, ids = rows
    certified = CertifiedIds.of(rounds, ids)
    assert len(certified) == len(ids)
    assert certified.round_array().tolist() == rounds
    inside = certified.between(low, high)
    assert inside == tuple(i for r, i in zip(rounds, ids, strict=True) if low <= r <= high)
    assert all(type(i) is bytes for i in inside)


def test_certified_ids_near_max_round() -> None:
    certified = CertifiedIds.of([0, MAX_ROUND - 1, MAX_ROUND], ids_of(1, 2, 4))
    assert certified.between(MAX_ROUND, MAX_ROUND) == tuple(ids_of(4))
    assert certified.between(1, MAX_ROUND - 1) == tuple(ids_of(2))


@pytest.mark.parametrize(
    ("rounds", "ids", "problem"),
    [
        (array("q", [1, 2]), b"\x00" * 32, "id bytes"),
        (array("q", [1]), b"\x00" * 33, "id bytes"),
        (array("i", [1]), b"\x00" * 32, "64-bit"),
        (array("q", [1, 3, 2]), b"\x00" * 96, "sorted"),
    ],
    ids=["too-few-ids", "ragged", "not-int64", "unsorted"],
)
def test_certified_ids_refuse_inconsistent_buffers(
    rounds: array[int], ids: bytes, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        CertifiedIds(rounds, ids)


@PROPERTIES
@given(
    dag_rows(),
    st.integers(min_value=0, max_value=150),
    st.integers(min_value=1, max_value=30),
    st.integers(min_value=1, max_value=MAX_BUCKETS),
    st.data(),
)
def test_summarize_matches_the_reference(
    rows: tuple[list[int], list[bytes]], low: int, span: int, count: int, data: st.DataObject
) -> None:
    rounds, ids = rows
    high = low + (count - 1) * span + data.draw(st.integers(min_value=0, max_value=span - 1))
    summary = summarize(CertifiedIds.of(rounds, ids), low, high, span)
    assert summary == reference_summary(rounds, ids, low, high, span)
    assert len(summary.counts) == count
    assert decode_sync(encode_sync(summary)) == summary


def ids_of(*names: int) -> list[bytes]:
    """Distinct ids whose fingerprint keys are ``names``, each padded with other bytes."""
    return [n.to_bytes(8, "big") + bytes([n % 256]) * 24 for n in names]


def test_summarize_leaves_empty_buckets_at_zero() -> None:
    ids = ids_of(0xA0, 0x0B, 2**64 - 1)
    summary = summarize(CertifiedIds.of([1, 1, 7], ids), 1, 8, 2)
    assert summary == Summary(1, 8, 2, (2, 0, 0, 1), (0xA0 ^ 0x0B, 0, 0, 2**64 - 1))
    assert summary == reference_summary([1, 1, 7], ids, 1, 8, 2)


def test_summarize_ignores_entries_outside_the_buckets() -> None:
    rounds = [0, 4, 5, 6, 7, 8, 9, 20]
    ids = ids_of(1, 2, 4, 8, 16, 32, 64, 128)
    summary = summarize(CertifiedIds.of(rounds, ids), 5, 8, 2)
    assert summary == Summary(5, 8, 2, (2, 2), (4 ^ 8, 16 ^ 32))
    assert summary == reference_summary(rounds, ids, 5, 8, 2)


def test_summarize_stops_the_last_bucket_at_high() -> None:
    rounds = [5, 6, 7, 8, 9]
    ids = ids_of(4, 8, 16, 32, 64)
    summary = summarize(
        CertifiedIds.of(rounds, ids), 5, 7, 2
    )  # buckets 5..6 and 7..7: round 8 is past high
    assert summary == Summary(5, 7, 2, (2, 1), (4 ^ 8, 16))
    assert summary == reference_summary(rounds, ids, 5, 7, 2)


def test_summarize_near_max_round() -> None:
    rounds = [MAX_ROUND - 4, MAX_ROUND - 1, MAX_ROUND]
    ids = ids_of(1, 2, 4)
    summary = summarize(CertifiedIds.of(rounds, ids), MAX_ROUND - 3, MAX_ROUND, 3)
    assert summary == Summary(MAX_ROUND - 3, MAX_ROUND, 3, (1, 1), (2, 4))
    assert summary == reference_summary(rounds, ids, MAX_ROUND - 3, MAX_ROUND, 3)


def test_summarize_with_every_entry_in_one_bucket() -> None:
    rounds = [12, 12, 13, 14]
    ids = ids_of(3, 5, 9, 17)
    summary = summarize(CertifiedIds.of(rounds, ids), 0, 31, 4)
    assert summary.counts == (0, 0, 0, 4, 0, 0, 0, 0)
    assert summary.fingerprints == (0, 0, 0, 3 ^ 5 ^ 9 ^ 17, 0, 0, 0, 0)
    assert summary == reference_summary(rounds, ids, 0, 31, 4)


def test_summarize_without_entries() -> None:
    assert summarize(CertifiedIds.of([], []), 1, 15, 5) == Summary(1, 15, 5, (0, 0, 0), (0, 0, 0))
    assert summarize(CertifiedIds.of([1, 2], ids_of(1, 2)), 50, 61, 5) == Summary(
        50, 61, 5, (0, 0, 0), (0, 0, 0)
    )


@PROPERTIES
@given(
    st.lists(st.tuples(U32, U64), min_size=1, max_size=MAX_BUCKETS),
    st.data(),
)
def test_differing_finds_exactly_the_changed_buckets(
    buckets: list[tuple[int, int]], data: st.DataObject
) -> None:
    high = 4 * len(buckets)
    ours = Summary(1, high, 4, tuple(n for n, _ in buckets), tuple(f for _, f in buckets))
    changed = data.draw(st.sets(st.integers(min_value=0, max_value=len(buckets) - 1)))
    theirs_buckets = list(buckets)
    for k in changed:
        n, f = buckets[k]
        what = data.draw(st.sampled_from(["count", "fingerprint", "both"]))
        new_n = (n + 1) % 2**32 if what != "fingerprint" else n
        new_f = f ^ data.draw(st.integers(1, 2**64 - 1)) if what != "count" else f
        theirs_buckets[k] = (new_n, new_f)
    theirs = Summary(
        1, high, 4, tuple(n for n, _ in theirs_buckets), tuple(f for _, f in theirs_buckets)
    )
    assert differing(ours, theirs) == sorted(changed)
    assert differing(theirs, ours) == sorted(changed)
    assert differing(ours, ours) == []


@PROPERTIES
@given(dag_rows(), st.randoms(use_true_random=False))
def test_order_within_a_round_does_not_change_a_summary(
    rows: tuple[list[int], list[bytes]], rng: random.Random
) -> None:
    rounds, ids = rows
    by_round: dict[int, list[bytes]] = {}
    for r, i in zip(rounds, ids, strict=True):
        by_round.setdefault(r, []).append(i)
    for group in by_round.values():
        rng.shuffle(group)
    shuffled_ids = [i for r in sorted(by_round) for i in by_round[r]]
    ours = summarize(CertifiedIds.of(rounds, ids), 0, 209, 7)
    theirs = summarize(CertifiedIds.of(rounds, shuffled_ids), 0, 209, 7)
    assert ours == theirs
    assert differing(ours, theirs) == []


# ------------------------------------------------------------------- spans


@PROPERTIES
@given(
    st.integers(min_value=0, max_value=10**12),
    st.integers(min_value=1, max_value=10**7),
    st.integers(min_value=1, max_value=MAX_BUCKETS),
)
def test_bucket_span_covers_the_range_in_at_most_the_asked_buckets(
    low: int, width: int, buckets: int
) -> None:
    high = low + width - 1
    span = bucket_span(low, high, buckets)
    assert span >= 1
    needed = -(-width // span)
    assert needed <= buckets
    assert low + span * needed - 1 >= high
    assert bucket_count(low, high, span) == needed
    # No smaller span would do.
    assert span == 1 or -(-width // (span - 1)) > buckets


@PROPERTIES
@given(
    ROUND, st.integers(min_value=0, max_value=10**7), st.integers(min_value=1, max_value=2**32 - 1)
)
def test_bucket_count_covers_low_to_high_and_no_more(low: int, width: int, span: int) -> None:
    high = low + width
    count = bucket_count(low, high, span)
    assert count == len(range(low, high + 1, span))
    assert low + (count - 1) * span <= high <= low + count * span - 1


def test_bucket_span_defaults_to_sixteen_buckets() -> None:
    assert bucket_span(1, 16) == 1
    assert bucket_span(1, 17) == 2
    assert bucket_span(1, 299) == 19
    assert bucket_span(5, 5) == 1
