"""The quorum watch of a node without peer links: a validator alone reaches a quorum of
one and not one of three; an observer has no quorum view; the metrics follow."""

from __future__ import annotations

from qudag_node import __version__
from qudag_node.metrics import Metrics
from qudag_node.quorum import QuorumWatch


def test_a_lone_validator_reaches_a_quorum_of_one_only() -> None:
    metrics = Metrics(__version__)
    state = QuorumWatch(None, metrics, quorum=1, validator=True).observe()
    assert state is not None
    assert (state.able, state.linked) == (True, 1)
    assert metrics.registry.get_sample_value("qudag_quorum_linked") == 1

    short = Metrics(__version__)
    watch = QuorumWatch(None, short, quorum=3, validator=True)
    first = watch.observe()
    assert first is not None
    assert (first.able, first.linked) == (False, 1)
    assert short.registry.get_sample_value("qudag_quorum_linked") == 0
    assert short.registry.get_sample_value("qudag_quorum_validators_linked") == 1
    assert watch.observe() == first  # no change: the same since


def test_an_observer_has_no_quorum_view() -> None:
    metrics = Metrics(__version__)
    assert QuorumWatch(None, metrics, quorum=1, validator=False).observe() is None
