"""Exponential backoff with caller-supplied jitter: bounds, cap and monotone envelope."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qudag_node.core.backoff import backoff_delay
from qudag_node.core.errors import UsageError

PROPERTIES = settings(derandomize=True, database=None, deadline=None, max_examples=300)

FAILURES = st.integers(min_value=1, max_value=10**30)
BASES = st.floats(min_value=1e-6, max_value=1e6, allow_nan=False, allow_infinity=False)
JITTER = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)


@st.composite
def base_and_cap(draw: st.DrawFn) -> tuple[float, float]:
    """A positive base and a cap at least as large (up to near the float range)."""
    base = draw(BASES)
    factor = draw(st.floats(min_value=1.0, max_value=1e300, allow_nan=False))
    return base, min(base * factor, 1e300)


def envelope(failures: int, base: float, cap: float) -> float:
    """The un-jittered delay. With base >= 1e-6 and cap <= 1e300, any count above 1024
    doubles the base past the cap (and 2.0 ** 1024 would overflow)."""
    return cap if failures > 1024 else min(cap, base * 2.0 ** (failures - 1))


@PROPERTIES
@given(FAILURES, base_and_cap(), JITTER)
def test_delay_lies_within_half_and_one_and_a_half_of_the_envelope(
    failures: int, bc: tuple[float, float], jitter: float
) -> None:
    base, cap = bc
    delay = backoff_delay(failures, base, cap, jitter)
    env = envelope(failures, base, cap)
    assert math.isfinite(delay)
    assert 0.5 * env <= delay <= 1.5 * env
    assert delay <= 1.5 * cap
    assert delay >= 0.5 * base


@PROPERTIES
@given(FAILURES, FAILURES, base_and_cap(), JITTER)
def test_the_delay_never_shrinks_as_failures_grow(
    f1: int, f2: int, bc: tuple[float, float], jitter: float
) -> None:
    base, cap = bc
    low, high = sorted((f1, f2))
    assert backoff_delay(low, base, cap, jitter) <= backoff_delay(high, base, cap, jitter)


@PROPERTIES
@given(st.integers(min_value=0, max_value=200), base_and_cap(), JITTER)
def test_jitter_scales_the_envelope_linearly(
    extra: int, bc: tuple[float, float], jitter: float
) -> None:
    base, cap = bc
    failures = 1 + extra
    env = envelope(failures, base, cap)
    assert backoff_delay(failures, base, cap, jitter) == pytest.approx(env * (0.5 + jitter))
    assert backoff_delay(failures, base, cap, 0.5) == pytest.approx(env)


@PROPERTIES
@given(base_and_cap(), JITTER)
def test_enough_failures_reach_the_cap(bc: tuple[float, float], jitter: float) -> None:
    base, cap = bc
    failures = 2 + math.ceil(math.log2(cap / base))
    assert backoff_delay(failures, base, cap, jitter) == cap * (0.5 + jitter)
    assert backoff_delay(10**100, base, cap, jitter) == cap * (0.5 + jitter)


def test_doubling_from_the_base_until_the_cap() -> None:
    delays = [backoff_delay(f, 0.1, 1.0, 0.5) for f in range(1, 8)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0])
    assert backoff_delay(1, 0.1, 1.0, 0.0) == pytest.approx(0.05)
    assert backoff_delay(3, 0.1, 1.0, 0.999) == pytest.approx(0.4 * 1.499)


@pytest.mark.parametrize(
    ("failures", "base", "cap", "jitter", "words"),
    [
        (0, 1.0, 2.0, 0.0, "failures"),
        (-3, 1.0, 2.0, 0.0, "failures"),
        (True, 1.0, 2.0, 0.0, "failures"),
        (1, 0.0, 2.0, 0.0, "base"),
        (1, -1.0, 2.0, 0.0, "base"),
        (1, math.nan, 2.0, 0.0, "base"),
        (1, math.inf, math.inf, 0.0, "base"),
        (1, 2.0, 1.0, 0.0, "cap"),
        (1, 1.0, math.inf, 0.0, "cap"),
        (1, 1.0, 1.7e308, 0.0, "cap"),
        (1, 1.0, math.nan, 0.0, "cap"),
        (1, 1.0, 2.0, 1.0, "jitter"),
        (1, 1.0, 2.0, -0.1, "jitter"),
        (1, 1.0, 2.0, math.nan, "jitter"),
    ],
)
def test_bad_arguments_are_usage_errors(
    failures: int, base: float, cap: float, jitter: float, words: str
) -> None:
    with pytest.raises(UsageError, match=words):
        backoff_delay(failures, base, cap, jitter)
