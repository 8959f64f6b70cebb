"""Which certified checkpoint a retention keeps."""

from __future__ import annotations

import pytest

from qudag_node.core.retention import (
    CheckpointMark,
    Retention,
    checkpoint_to_keep,
    parse_retention,
)

MINUTE = 60_000
#: Checkpoints every 100 rounds, a leader timestamp 10 minutes apart.
MARKS = [CheckpointMark(n, n * 100, n * 1000, n * 10 * MINUTE) for n in range(1, 8)]


@pytest.mark.parametrize(
    ("retention", "kept"),
    [
        (Retention(rounds=1), 6),  # the newest at least 1 round older than the latest (700)
        (Retention(rounds=100), 6),
        (Retention(rounds=101), 5),
        (Retention(rounds=600), 1),
        (Retention(rounds=601), None),  # none is old enough: nothing is pruned
        (Retention(age_ms=10 * MINUTE), 6),
        (Retention(age_ms=25 * MINUTE), 4),
        (Retention(age_ms=61 * MINUTE), None),
        (Retention(), None),  # archive
    ],
)
def test_the_oldest_checkpoint_kept(retention: Retention, kept: int | None) -> None:
    found = checkpoint_to_keep(MARKS, retention)
    assert (None if found is None else found.number) == kept


def test_never_beyond_the_latest_and_nothing_without_checkpoints() -> None:
    assert checkpoint_to_keep([], Retention(rounds=1)) is None
    only = [CheckpointMark(3, 300, 10, 0)]
    assert checkpoint_to_keep(only, Retention(rounds=1)) is None


def test_forms_and_their_order() -> None:
    assert parse_retention(" 7D ") == Retention(age_ms=7 * 24 * 60 * MINUTE)
    assert parse_retention("50000rounds") == Retention(rounds=50_000)
    assert parse_retention("archive").archive
    assert parse_retention("30m").shorter_than(parse_retention("1h"))
    assert parse_retention("1h").shorter_than(parse_retention("archive"))
    assert not parse_retention("archive").shorter_than(parse_retention("1h"))
    assert not parse_retention("100rounds").shorter_than(parse_retention("1h"))  # not comparable
    with pytest.raises(ValueError, match="must be archive"):
        parse_retention("0rounds")
