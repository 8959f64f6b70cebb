"""Properties of the codec and the engine over generated input (Hypothesis).

Runs are deterministic: every test uses the ``qudag-core`` settings profile
(derandomized, no example database, no deadline).
"""

from __future__ import annotations

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from qudag_node.core.crypto import Signer, extend_log_hash, log_hash_start, tx_ids
from qudag_node.core.engine import Engine
from qudag_node.core.errors import InputRejected, Reason
from qudag_node.core.events import MessageRejected
from qudag_node.core.genesis import Genesis, Validator
from qudag_node.core.messages import decode_message
from qudag_node.core.params import Params
from qudag_node.core.types import GenesisHash, PublicKey, TxId, VertexId
from qudag_node.core.vertex import Vertex, decode_vertex, make_vertex
from tests.core.support import (
    GENESIS,
    NOW,
    PEER,
    R1,
    ROUND1,
    C,
    SoloNode,
    added,
    drain,
    feed,
    message,
    messages,
    moment,
)

settings.register_profile(
    "qudag-core",
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=200,
    suppress_health_check=[HealthCheck.too_slow],
)
CORE = settings.get_profile("qudag-core")

PARAMS = Params(max_tx_bytes=48, max_vertex_txs=6, max_vertex_bytes=6 * 48)
SIGNERS = [Signer(bytes([0x40 + i]) * 32) for i in range(3)]
HASHES = st.binary(min_size=32, max_size=32)
NAMES = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", fullmatch=True)


@st.composite
def vertices(draw: st.DrawFn) -> Vertex:
    """Signed vertices with any round, timestamp, parents and batch within PARAMS."""
    txs = draw(
        st.lists(
            st.binary(min_size=1, max_size=PARAMS.max_tx_bytes), max_size=PARAMS.max_vertex_txs
        )
    )
    parents = draw(st.lists(HASHES, max_size=6, unique=True))
    return make_vertex(
        draw(st.sampled_from(SIGNERS)),
        GenesisHash(draw(HASHES)),
        draw(st.integers(0, 2**64 - 1)),
        draw(st.integers(0, 2**64 - 1)),
        [VertexId(p) for p in parents],
        txs,
        tx_ids(txs),
    )


@st.composite
def geneses(draw: st.DrawFn) -> Genesis:
    """Valid geneses of one to eight validators."""
    members = draw(
        st.lists(
            st.tuples(NAMES, HASHES),
            min_size=1,
            max_size=8,
            unique_by=(lambda m: m[0], lambda m: m[1]),
        )
    )
    return Genesis(draw(NAMES), tuple(Validator(n, PublicKey(k)) for n, k in members))


@st.composite
def mutations(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with one byte replaced, cut short, or extended."""
    kind = draw(st.sampled_from(["replace", "truncate", "extend"]))
    if kind == "extend":
        return data + draw(st.binary(min_size=1, max_size=40))
    at = draw(st.integers(0, len(data) - 1))
    if kind == "truncate":
        return data[:at]
    return data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]


def strictly_decoded(data: bytes) -> Vertex | None:
    """Decode ``data``; an accepted input must re-encode to exactly itself."""
    try:
        vertex = decode_vertex(data, PARAMS)
    except InputRejected as e:
        rejected = e
    else:
        event("accepted")
        assert vertex.encode() == data
        assert vertex.header.encode() == vertex.header_bytes
        return vertex
    assert isinstance(rejected.reason, Reason)
    event(f"rejected: {rejected.reason.value}")
    return None


# ------------------------------------------------------------------- codec


@settings(CORE, max_examples=300)
@given(vertices())
def test_vertices_round_trip(vertex: Vertex) -> None:
    data = vertex.encode()
    assert decode_vertex(data, PARAMS) == vertex
    assert decode_vertex(data, PARAMS).encode() == data


@settings(CORE)
@given(geneses())
def test_geneses_round_trip(genesis: Genesis) -> None:
    data = genesis.encode()
    decoded = Genesis.decode(data)
    assert decoded == genesis
    assert decoded.hash == genesis.hash
    assert decoded.encode() == data


@settings(CORE, max_examples=2000)
@given(st.binary(max_size=400))
def test_random_bytes_are_rejected_or_canonical(data: bytes) -> None:
    strictly_decoded(data)


@settings(CORE, max_examples=2000)
@given(st.data())
def test_mutated_vertices_are_rejected_or_canonical(data: st.DataObject) -> None:
    original = data.draw(vertices()).encode()
    mutated = data.draw(mutations(original))
    decoded = strictly_decoded(mutated)
    if mutated == original:
        assert decoded is not None


# ------------------------------------------------------------------ engine

#: A valid round-2 vertex the fuzzed observer does not hold yet.
TARGET = C.vertex(1, 2, parents=R1[:3], txs=[b"fuzz-a", b"fuzz-b"])
TARGET_MESSAGE = message(TARGET)
PEER_INPUT = st.one_of(
    st.binary(max_size=300),
    st.tuples(st.integers(0, len(TARGET_MESSAGE)), st.binary(max_size=40)).map(
        lambda cut: TARGET_MESSAGE[: cut[0]] + cut[1]
    ),
)


def observer() -> Engine:
    """A four-validator observer holding all of round 1."""
    engine = C.observer()
    feed(engine, *ROUND1)
    return engine


def assert_one_rejection(engine: Engine, data: bytes, now: float) -> None:
    """Deliver ``data``: exactly one MessageRejected, and no state change."""
    before, timer = engine.statistics(), engine.get_timer()
    engine.receive_message(PEER, data, moment(now))
    [rejected] = drain(engine)
    assert isinstance(rejected, MessageRejected)
    assert rejected.peer == PEER
    assert isinstance(rejected.reason, Reason)
    event(f"rejected: {rejected.reason.value}")
    assert engine.statistics() == before
    assert engine.get_timer() == timer
    assert messages(engine) == []


def assert_handled(engine: Engine, data: bytes, now: float) -> None:
    """Deliver any bytes: undecodable ones are one rejection that changes nothing; a
    well-formed message yields at most one rejection, and none without changing state."""
    try:
        decode_message(data, PARAMS)
    except InputRejected:
        assert_one_rejection(engine, data, now)
        return
    event(f"well-formed: type {data[0]}")
    before = engine.statistics()
    engine.receive_message(PEER, data, moment(now))
    rejected = [e for e in drain(engine) if isinstance(e, MessageRejected)]
    assert len(rejected) <= 1
    if rejected:
        assert engine.statistics() == before


@settings(CORE, max_examples=1000)
@given(PEER_INPUT.filter(lambda d: d != TARGET_MESSAGE))
def test_an_observer_turns_garbage_into_one_rejection(data: bytes) -> None:
    assert_handled(observer(), data, NOW)


@settings(CORE, max_examples=1000)
@given(mutations(TARGET_MESSAGE))
@example(TARGET_MESSAGE)
def test_a_mutated_vertex_message_is_rejected_unless_unchanged(data: bytes) -> None:
    engine = observer()
    if data == TARGET_MESSAGE:
        engine.receive_message(PEER, data, moment(NOW))
        assert drain(engine) == added(TARGET)
    else:
        assert_one_rejection(engine, data, NOW)


def solo_with_log() -> SoloNode:
    """A solo validator that has finalized two transactions and is idle."""
    node = SoloNode()
    node.fire()
    node.submit([b"logged-1", b"logged-2"])
    node.settle()
    assert node.engine.statistics().log_length == 2
    return node


@settings(CORE, max_examples=300)
@given(PEER_INPUT)
def test_a_validator_turns_garbage_into_one_rejection(data: bytes) -> None:
    node = solo_with_log()
    assert_handled(node.engine, data, node.now)


# --------------------------------------------------------------- solo log

POOL = [f"pool-{i}".encode() for i in range(8)]


@settings(CORE, max_examples=150)
@given(
    st.lists(
        st.tuples(
            st.lists(st.sampled_from(POOL), min_size=1, max_size=5),
            st.sampled_from([0.0, 0.01, 0.05, 0.2, 15.0]),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_the_solo_log_is_exactly_what_was_admitted(
    schedule: list[tuple[list[bytes], float]],
) -> None:
    node = SoloNode()
    node.fire()
    admitted: list[TxId] = []
    for batch, wait in schedule:
        node.run_until(node.now + wait)
        result = node.submit(batch)
        admitted.extend(result.admitted)
        assert len(result.admitted) + len(result.duplicates) == len(batch)
    node.settle()
    entries = node.entries()
    assert [e.tx_id for e in entries] == admitted
    assert [e.seq for e in entries] == list(range(1, len(admitted) + 1))
    assert [e.hash for e in entries] == extend_log_hash(log_hash_start(GENESIS.hash), admitted)
