"""State sync in the core: checking a peer's checkpoint and window, starting an engine
from it, and the decisions of :class:`~qudag_node.core.joining.Joining`.

The checkpoints are those of a real simulated network: its validators' engines commit
leaders, each computes the checkpoint the shared rule names, and they sign it.
"""

from __future__ import annotations

import dataclasses

import pytest

from qudag_node.core.checkpoint import CertifiedCheckpoint
from qudag_node.core.crypto import Purpose, SequentialVerifier
from qudag_node.core.engine import Engine, Role
from qudag_node.core.errors import InputRejected, Reason
from qudag_node.core.genesis import Genesis, Validator
from qudag_node.core.joining import (
    INTERVALS_BEHIND,
    JOIN_TIMEOUT,
    CheckpointVerified,
    InstallCheckpoint,
    Joining,
    JoinSend,
    StateSynced,
    StateSyncFailed,
    StateSyncStarted,
)
from qudag_node.core.messages import FetchMessage, decode_message
from qudag_node.core.resume import snapshot_from_checkpoint
from qudag_node.core.statesync import check_offer, check_window, check_window_vertex
from qudag_node.core.sync import (
    CheckpointInstalled,
    PeerMessage,
    Send,
    SendHoldings,
    ServeCheckpoint,
    SyncMachine,
    Tick,
    WindowVertex,
)
from qudag_node.core.syncwire import (
    CheckpointOffer,
    CheckpointRequest,
    Holdings,
    RoundsRequest,
    Status,
    decode_sync,
    encode_sync,
)
from qudag_node.core.types import PeerId, VertexId
from tests.core.checkpoints import Network, network
from tests.core.simjoin import join

P, Q = PeerId("p"), PeerId("q")
WALL = 4_000_000_000.0  # far after every simulated timestamp
EMPTY = Status(0, 0, 0, 0, b"\x00" * 32)


def refused(reason: Reason, call: object, *args: object) -> None:
    with pytest.raises(InputRejected) as e:
        call(*args)  # type: ignore[operator]
    assert e.value.reason is reason, e.value


# ------------------------------------------------------------------ checks


def test_a_certified_checkpoint_gives_the_engine_the_state_the_others_had() -> None:
    net = network()
    cp = net.certified.checkpoint
    assert cp.number >= 2
    snapshot = snapshot_from_checkpoint(
        net.certified,
        net.window,
        net.vertices(),
        net.genesis,
        net.sim.params,
        WALL,
        SequentialVerifier(),
    )
    assert (snapshot.log_length, snapshot.log_hash, snapshot.committed_round) == (
        cp.log_length,
        cp.log_hash,
        cp.round,
    )
    assert all(v.ordered and v.certificate is not None for v in snapshot.vertices)
    rounds = [v.header.round for v in snapshot.vertices]
    assert rounds == sorted(rounds)
    assert min(rounds) >= cp.round - net.sim.params.gc_depth
    signer = net.sim.nodes[PeerId("v0")].signer
    engine = Engine(net.genesis, net.sim.params, signer, snapshot, verifier=SequentialVerifier())
    st = engine.statistics()
    assert (st.log_length, st.log_hash, st.committed_round) == (
        cp.log_length,
        cp.log_hash,
        cp.round,
    )
    assert engine.role is Role.VALIDATOR


def test_too_few_or_wrong_signatures_are_refused() -> None:
    net = network()
    cp = net.certified.checkpoint
    verifier = SequentialVerifier()
    few = net.signed(cp, range(net.genesis.quorum - 1))
    refused(Reason.BAD_CHECKPOINT, check_offer, few, net.window, net.genesis, verifier, 0)
    other = dataclasses.replace(cp, log_hash=b"\x01" * 32)
    cert = net.certified.certificate
    forged = dataclasses.replace(
        cert,
        signatures=(
            net.sim.signers[0].sign(Purpose.CHECKPOINT, other.digest),
            *cert.signatures[1:],
        ),
    )
    refused(
        Reason.BAD_CHECKPOINT,
        check_offer,
        CertifiedCheckpoint(cp, forged),
        net.window,
        net.genesis,
        verifier,
        0,
    )


def test_a_window_that_does_not_match_is_refused() -> None:
    net = network()
    verifier = SequentialVerifier()
    for window in (
        net.window[1:],
        (*net.window[1:], VertexId(b"\x09" * 32)),
        (*net.window, net.window[0]),
    ):
        refused(Reason.BAD_CHECKPOINT, check_offer, net.certified, window, net.genesis, verifier, 0)


def test_a_checkpoint_not_above_our_round_is_refused() -> None:
    net = network()
    cp = net.certified.checkpoint
    refused(
        Reason.STALE_ROUND,
        check_offer,
        net.certified,
        net.window,
        net.genesis,
        SequentialVerifier(),
        cp.round,
    )


def test_a_vertex_outside_the_window_or_missing_is_refused() -> None:
    net = network()
    params = net.sim.params
    verifier = SequentialVerifier()
    listed = frozenset(net.window)
    outside = next(
        r
        for vid, r in net.store.vertices.items()
        if vid not in listed and r.certificate is not None
    )
    assert outside.certificate is not None
    refused(
        Reason.BAD_CHECKPOINT,
        check_window_vertex,
        net.certified,
        listed,
        outside.vertex,
        outside.certificate,
        net.genesis,
        params,
        WALL,
        verifier,
    )
    vertices = net.vertices()
    del vertices[net.window[0]]
    refused(
        Reason.BAD_CHECKPOINT,
        check_window,
        net.certified,
        net.window,
        vertices,
        net.genesis,
        params,
        WALL,
        verifier,
    )


def test_a_window_vertex_with_a_bad_certificate_is_refused() -> None:
    net = network()
    vid = net.window[0]
    vertex, cert = net.vertices()[vid]
    bad = dataclasses.replace(cert, voters=cert.voters[:1], signatures=cert.signatures[:1])
    refused(
        Reason.BAD_CERTIFICATE,
        check_window_vertex,
        net.certified,
        frozenset(net.window),
        vertex,
        bad,
        net.genesis,
        net.sim.params,
        WALL,
        SequentialVerifier(),
    )


def test_a_checkpoint_of_another_network_is_refused() -> None:
    net = network()
    other = Genesis("another", net.genesis.validators, net.genesis.scheme)
    refused(
        Reason.WRONG_NETWORK, check_offer, net.certified, net.window, other, SequentialVerifier(), 0
    )
    assert other.validators == tuple(
        Validator(v.name, v.public_key) for v in net.genesis.validators
    )


# ------------------------------------------------------------ the join


def joining(enabled: bool = True, trust: int = 1, fresh: bool = True) -> Joining:
    net = network()
    return Joining(net.genesis, net.sim.params, SequentialVerifier(), trust, enabled, fresh=fresh)


def holdings(net: Network, oldest: int = 1) -> Holdings:
    cp = net.certified.checkpoint
    return Holdings(oldest, cp.number, cp.round)


def test_an_empty_node_joins_through_the_messages() -> None:
    net = network()
    joined = join(
        net.genesis,
        net.sim.params,
        SequentialVerifier(),
        P,
        (net.certified, net.window),
        net.store,
        WALL,
    )
    assert joined is not None
    assert joined.certified == net.certified
    assert {v.id for v, _ in joined.vertices} == set(net.window)


def test_a_byzantine_peer_serving_a_wrong_log_hash_signed_by_one_validator_is_refused() -> None:
    net = network()
    j = joining()
    j.on_holdings(P, holdings(net))
    out = j.tick(EMPTY, 0.0)
    assert isinstance(out[0], StateSyncStarted)
    assert out[1] == JoinSend(P, encode_sync(CheckpointRequest(0)))
    lie = dataclasses.replace(net.certified.checkpoint, log_hash=b"\x66" * 32)
    offer = CheckpointOffer(net.signed(lie, range(1)), net.window)
    assert j.on_offer(P, offer, EMPTY, 1.0) == [StateSyncFailed(P, "bad_checkpoint")]
    assert not j.active
    # even a quorum over the lie, with one honest signature swapped in, is refused
    mixed = net.signed(lie, range(net.genesis.quorum))
    cert = mixed.certificate
    swapped = dataclasses.replace(
        cert, signatures=(net.certified.certificate.signatures[0], *cert.signatures[1:])
    )
    j.on_holdings(Q, holdings(net))
    (started, _) = j.tick(EMPTY, 2.0)
    assert isinstance(started, StateSyncStarted)
    assert started.peer == Q
    offer = CheckpointOffer(CertifiedCheckpoint(lie, swapped), net.window)
    assert j.on_offer(Q, offer, EMPTY, 3.0) == [StateSyncFailed(Q, "bad_checkpoint")]


def test_a_peer_serving_a_foreign_vertex_is_dropped_and_another_is_asked() -> None:
    net = network()
    j = joining()
    j.on_holdings(P, holdings(net))
    j.on_holdings(Q, holdings(net))
    started, _ = j.tick(EMPTY, 0.0)
    assert isinstance(started, StateSyncStarted)
    first = started.peer
    out = j.on_offer(first, CheckpointOffer(net.certified, net.window), EMPTY, 1.0)
    assert isinstance(out[0], CheckpointVerified)
    fetched = [i for o in out[1:] if isinstance(o, JoinSend) for i in _fetch_ids(o.data)]
    assert sorted(fetched) == sorted(net.window)
    assert j.fetching
    listed = frozenset(net.window)
    outside = next(
        r for vid, r in net.store.vertices.items() if vid not in listed and r.certificate
    )
    assert outside.certificate is not None
    assert j.on_vertex(first, outside.vertex, outside.certificate, WALL, 2.0) == []  # not wanted
    vertex, cert = net.vertices()[net.window[0]]
    forged = dataclasses.replace(cert, voters=cert.voters[:1], signatures=cert.signatures[:1])
    assert j.on_vertex(first, vertex, forged, WALL, 2.0) == [
        StateSyncFailed(first, "bad_certificate")
    ]
    second, _ = j.tick(EMPTY, 3.0)
    assert isinstance(second, StateSyncStarted)
    assert second.peer != first


def test_the_whole_window_is_installed_once_and_then_counted() -> None:
    net = network()
    j = joining()
    j.on_holdings(P, holdings(net))
    j.tick(EMPTY, 0.0)
    j.on_offer(P, CheckpointOffer(net.certified, net.window), EMPTY, 1.0)
    outs = [o for vid, (v, c) in net.vertices().items() for o in j.on_vertex(P, v, c, WALL, 2.0)]
    (install,) = outs
    assert isinstance(install, InstallCheckpoint)
    assert install.window == net.window
    assert j.tick(EMPTY, 2.0 + 10 * JOIN_TIMEOUT) == []  # installing: no timeout
    done = j.installed(5.0)
    assert done is not None
    assert done.seconds == 5.0
    assert done.round == net.certified.checkpoint.round
    assert (j.syncs, j.active) == (1, False)


def test_an_unanswered_request_times_out_and_another_peer_is_asked() -> None:
    net = network()
    j = joining()
    j.on_holdings(P, holdings(net))
    j.on_holdings(Q, dataclasses.replace(holdings(net), latest_checkpoint=1))
    started, _ = j.tick(EMPTY, 0.0)
    assert isinstance(started, StateSyncStarted)
    assert started.peer == P
    assert j.tick(EMPTY, JOIN_TIMEOUT - 0.1) == []
    assert j.tick(EMPTY, JOIN_TIMEOUT) == [StateSyncFailed(P, "timeout")]
    again, _ = j.tick(EMPTY, JOIN_TIMEOUT + 0.1)
    assert isinstance(again, StateSyncStarted)
    assert again.peer == Q


def test_when_a_node_state_syncs() -> None:
    net = network()
    cp = net.certified.checkpoint
    interval = net.sim.params.checkpoint_interval
    j = joining(fresh=False)
    assert not j.needed(EMPTY)  # no peer has said what it holds
    j.on_holdings(P, holdings(net))
    assert j.needed(EMPTY)  # an empty store
    near = Status(cp.round, cp.round - 2, 0, 10, b"\x00" * 32)
    assert not j.needed(near)  # the rounds it lacks are held: replay
    behind = INTERVALS_BEHIND * interval
    j.on_holdings(Q, Holdings(1, cp.number + INTERVALS_BEHIND, near.committed + behind))
    assert not j.needed(near)  # a far checkpoint, but the rounds it lacks are held: replay
    j.on_holdings(Q, Holdings(1, cp.number + INTERVALS_BEHIND, near.committed + behind + 1))
    assert j.needed(near)  # more than INTERVALS_BEHIND intervals behind
    j = joining(fresh=False)
    j.on_holdings(P, holdings(net))
    j.on_holdings(P, holdings(net, oldest=cp.round - 1))
    gap = Status(cp.round - 5, cp.round - 5, 0, 10, b"\x00" * 32)
    assert j.needed(gap)  # nobody holds the rounds right above ours any more
    assert not j.needed(Status(cp.round, cp.round, 0, 10, b"\x00" * 32))  # nothing newer
    assert not joining(enabled=False).needed(EMPTY)


def test_a_node_that_started_empty_joins_although_pushes_made_it_replay_some() -> None:
    net = network()
    cp = net.certified.checkpoint
    replayed = Status(cp.round - 2, cp.round - 3, 0, 10, b"\x00" * 32)
    j = joining()
    assert j.defers_catch_up(replayed, 0.0)  # it waits for HOLDINGS as an empty node does
    j.on_holdings(P, holdings(net))
    assert j.needed(replayed)  # the rounds it lacks are held, yet it joins
    assert not joining(fresh=False).needed(replayed)  # a node that had a store replays
    started, ask = j.tick(replayed, 0.0)
    assert isinstance(started, StateSyncStarted)
    assert isinstance(ask, JoinSend)
    assert not j.needed(Status(cp.round, cp.round, 0, 10, b"\x00" * 32))  # nothing newer


def test_a_node_that_started_empty_follows_the_usual_rules_once_level_with_its_peers() -> None:
    """A new network's validators all start empty: once HOLDINGS show no checkpoint
    above a node, a checkpoint certified later while it lags a few rounds is replayed."""
    net = network()
    cp = net.certified.checkpoint
    j = joining()
    j.on_holdings(P, Holdings(1, 0, 0))  # no checkpoint yet
    assert j.tick(Status(3, 2, 0, 5, b"\x00" * 32), 0.0) == []
    j.on_holdings(P, holdings(net))  # one is certified while this node lags
    lagging = Status(cp.round - 1, cp.round - 2, 0, 10, b"\x00" * 32)
    assert not j.needed(lagging)
    assert j.tick(lagging, 1.0) == []


def test_one_peer_claiming_a_far_checkpoint_does_not_make_a_node_in_step_state_sync() -> None:
    net = network()
    cp = net.certified.checkpoint
    j = joining(trust=2, fresh=False)
    ours = Status(cp.round, cp.round, 0, cp.log_length, cp.log_hash)
    j.on_holdings(P, Holdings(1, 10**6, 10**9))  # a lie
    j.on_holdings(Q, holdings(net))
    assert not j.needed(ours)
    assert j.tick(ours, 0.0) == []


def test_the_messages_round_trip() -> None:
    net = network()
    for message in (
        CheckpointRequest(0),
        CheckpointRequest(7),
        CheckpointOffer(net.certified, net.window),
        holdings(net),
    ):
        assert decode_sync(encode_sync(message)) == message
    data = encode_sync(CheckpointOffer(net.certified, net.window[1:]))
    refused(Reason.BAD_SYNC, decode_sync, data)  # fewer ids than the checkpoint's window


def _fetch_ids(data: bytes) -> list[VertexId]:
    message = decode_message(data, network().sim.params)
    assert isinstance(message, FetchMessage)
    return list(message.ids)


def test_an_empty_node_waits_a_while_for_holdings_before_replaying() -> None:
    net = network()
    j = joining()
    assert j.defers_catch_up(EMPTY, 0.0)
    assert j.defers_catch_up(EMPTY, JOIN_TIMEOUT - 0.1)
    assert not j.defers_catch_up(EMPTY, JOIN_TIMEOUT)  # peers that send none: replay
    held = joining()
    held.on_holdings(P, holdings(net))
    assert not held.defers_catch_up(EMPTY, 0.0)
    assert not joining(fresh=False).defers_catch_up(Status(3, 2, 0, 5, b"\x00" * 32), 0.0)
    assert not joining(enabled=False).defers_catch_up(EMPTY, 0.0)


# ------------------------------------------------------ in the sync machine


def test_the_sync_machine_joins_then_catches_up_from_the_checkpoint() -> None:
    net = network()
    cp = net.certified.checkpoint
    m = SyncMachine(net.sim.params, 10.0, True, 1, 0.0, joining=joining())
    m.link_up(P, EMPTY)
    assert SendHoldings((P,)) in m.step(Tick(), EMPTY, 0.0)  # what we serve, once linked
    assert m.step(PeerMessage(P, CheckpointRequest(0)), EMPTY, 0.1) == [ServeCheckpoint(P, 0)]
    m.step(PeerMessage(P, Status(cp.round + 40, cp.round + 38, 0, 0, b"\x00" * 32)), EMPTY, 0.2)
    early = m.step(Tick(), EMPTY, 0.3)
    assert not [o for o in early if isinstance(o, Send)]  # an empty node waits for HOLDINGS
    m.step(PeerMessage(P, holdings(net)), EMPTY, 0.4)
    asked = [decode_sync(o.data) for o in m.step(Tick(), EMPTY, 0.5) if isinstance(o, Send)]
    assert asked == [CheckpointRequest(0)]  # no ROUNDS: the checkpoint comes first
    out = m.step(PeerMessage(P, CheckpointOffer(net.certified, net.window)), EMPTY, 0.6)
    assert m.fetching_window
    fetched = [i for o in out if isinstance(o, Send) for i in _fetch_ids(o.data)]
    assert sorted(fetched) == sorted(net.window)
    installs = [
        o
        for v, c in net.vertices().values()
        for o in m.step(WindowVertex(P, v, c, WALL), EMPTY, 0.7)
        if isinstance(o, InstallCheckpoint)
    ]
    assert len(installs) == 1
    assert not [o for o in m.step(Tick(), EMPTY, 0.8) if isinstance(o, Send)]  # installing
    ours = Status(cp.round, cp.round, cp.round - 20, cp.log_length, cp.log_hash)
    (synced,) = m.step(CheckpointInstalled(), ours, 1.0)
    assert isinstance(synced, StateSynced)
    assert (synced.number, synced.seconds) == (cp.number, 0.5)
    rounds = [decode_sync(o.data) for o in m.step(Tick(), ours, 1.1) if isinstance(o, Send)]
    assert rounds == [RoundsRequest(cp.round + 1, cp.round + 40)]  # up to the peer's highest
