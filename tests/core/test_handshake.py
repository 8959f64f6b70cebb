"""The peer link handshake: HELLO encoding and checks, AUTH, and the replay guard."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import hmac
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qudag_node.core import codec
from qudag_node.core.crypto import Scheme, Signer
from qudag_node.core.errors import Fault, InputRejected, Reason, UsageError
from qudag_node.core.genesis import Genesis, Validator
from qudag_node.core.handshake import (
    ED25519_VERSION,
    MAGIC,
    NONCE_SIZE,
    REFUSAL_REASONS,
    Hello,
    LinkRole,
    ReplayGuard,
    Side,
    answer_auth,
    auth_size,
    check_auth,
    check_hello,
    decode_hello,
    encode_refusal,
    make_auth,
    make_hello,
    refusal_reason,
    transcript,
)
from qudag_node.core.types import GenesisHash, NodeId, PublicKey
from tests.core.support import CC, C

PROPERTIES = settings(derandomize=True, database=None, deadline=None, max_examples=300)

TOKEN = bytes(range(0x20, 0x40))
DIALER, LISTENER, THIRD = C.signers[0], C.signers[1], C.signers[2]
DIALER_NONCE = b"\xd1" * NONCE_SIZE
LISTENER_NONCE = b"\x1d" * NONCE_SIZE
DIALER_HELLO = make_hello(C.genesis, DIALER, DIALER_NONCE).encode()
LISTENER_HELLO = make_hello(C.genesis, LISTENER, LISTENER_NONCE).encode()
AUTH_SIZE = auth_size(Scheme.ED25519)
#: The dialer's HELLO as the listener reads it.
DIALER_AT_LISTENER = decode_hello(DIALER_HELLO)
TRANSCRIPT = transcript(DIALER_HELLO, LISTENER_HELLO, None)
DIALER_AUTH = make_auth(TOKEN, DIALER, Side.DIALER, TRANSCRIPT)
LISTENER_AUTH = make_auth(TOKEN, LISTENER, Side.LISTENER, TRANSCRIPT)
#: The transcript and MACs of these fixed HELLOs and token (a vector for other
#: implementations); each MAC is HMAC-SHA256(token, side || transcript).
TRANSCRIPT_HEX = "66202f9b9954a0775854182b5260f8439c05b792a73e54bfe3e720cd585b681c"
DIALER_MAC_HEX = "88659541b0088da845fbf89878a816b5d7bf0b65cb6b0b6be9f909810baf36b2"
LISTENER_MAC_HEX = "88a41f114bf93d638acffda7eafae1e69a385788934c5358d9552d437c73187d"


def rejected(action: Callable[[], object]) -> Reason:
    """The reason ``action`` refuses its input with (a peer's fault, one clear line)."""
    with pytest.raises(InputRejected) as info:
        action()
    assert info.value.fault is Fault.PEER
    assert "\n" not in str(info.value)
    return info.value.reason


def auth_refused(
    data: bytes,
    peer: Hello = DIALER_AT_LISTENER,
    side: Side = Side.DIALER,
    token: bytes = TOKEN,
) -> Reason:
    """The reason ``check_auth`` refuses ``data`` from ``peer`` on the connection of
    :data:`TRANSCRIPT`."""
    return rejected(lambda: check_auth(data, token, peer, side, TRANSCRIPT))


def hello_refused(
    hello: Hello, own: NodeId = LISTENER.node_id, genesis: Genesis = C.genesis
) -> Reason:
    """The reason ``check_hello`` refuses ``hello`` at the node ``own`` of ``genesis``."""
    return rejected(lambda: check_hello(hello, genesis, own, None))


def hello_bytes(
    magic: bytes = MAGIC,
    version: int = ED25519_VERSION,
    role: int = LinkRole.VALIDATOR,
    network: bytes = b"qudag-rules",
    genesis: bytes = C.genesis.hash,
    key: bytes = DIALER.public_key,
    nonce: bytes = DIALER_NONCE,
) -> bytes:
    """HELLO bytes with any field replaced, laid out by hand."""
    return b"".join(
        (
            magic,
            codec.u16(version),
            codec.u8(role),
            codec.u8(len(network)),
            network,
            genesis,
            key,
            nonce,
        )
    )


# ---------------------------------------------------------- the whole exchange


def test_a_full_handshake_succeeds_at_both_ends() -> None:
    guard = ReplayGuard()
    # Each end reads and checks the other's HELLO.
    at_listener = decode_hello(DIALER_HELLO)
    at_dialer = decode_hello(LISTENER_HELLO)
    check_hello(at_listener, C.genesis, LISTENER.node_id, None)
    check_hello(at_dialer, C.genesis, DIALER.node_id, None)
    guard.check(at_listener.nonce)
    assert at_listener.role is at_dialer.role is LinkRole.VALIDATOR
    # Both compute the same transcript: the dialer's HELLO first.
    dialer_view = transcript(DIALER_HELLO, at_dialer.encode(), None)
    listener_view = transcript(at_listener.encode(), LISTENER_HELLO, None)
    assert dialer_view == listener_view == TRANSCRIPT
    # The dialer proves first; the listener answers only a proof that holds.
    dialer_auth = make_auth(TOKEN, DIALER, Side.DIALER, dialer_view)
    listener_auth = answer_auth(dialer_auth, [TOKEN], LISTENER, at_listener, listener_view)
    assert listener_auth == make_auth(TOKEN, LISTENER, Side.LISTENER, listener_view)
    assert len(dialer_auth) == len(listener_auth) == AUTH_SIZE
    check_auth(listener_auth, TOKEN, at_dialer, Side.LISTENER, dialer_view)


def test_the_listener_gives_no_mac_to_a_dialer_without_the_token() -> None:
    guess = make_auth(b"a guess at the token", DIALER, Side.DIALER, TRANSCRIPT)
    refused = rejected(
        lambda: answer_auth(guess, [TOKEN], LISTENER, DIALER_AT_LISTENER, TRANSCRIPT)
    )
    assert refused is Reason.BAD_TOKEN
    # nor to one replaying the listener's own proof, or a proof for another connection
    for data in (LISTENER_AUTH, make_auth(TOKEN, DIALER, Side.DIALER, bytes(32))):
        answer = functools.partial(
            answer_auth, data, [TOKEN], LISTENER, DIALER_AT_LISTENER, TRANSCRIPT
        )
        assert rejected(answer) is Reason.BAD_TOKEN


def test_during_a_rotation_the_listener_answers_with_the_token_the_dialer_proved() -> None:
    old, new = TOKEN, bytes(reversed(TOKEN))
    for proved in (old, new):
        auth = make_auth(proved, DIALER, Side.DIALER, TRANSCRIPT)
        answer = answer_auth(auth, [new, old], LISTENER, DIALER_AT_LISTENER, TRANSCRIPT)
        check_auth(answer, proved, decode_hello(LISTENER_HELLO), Side.LISTENER, TRANSCRIPT)
    third = make_auth(b"neither token", DIALER, Side.DIALER, TRANSCRIPT)
    refused = functools.partial(
        answer_auth, third, [new, old], LISTENER, DIALER_AT_LISTENER, TRANSCRIPT
    )
    assert rejected(refused) is Reason.BAD_TOKEN
    with pytest.raises(UsageError):
        answer_auth(DIALER_AUTH, [], LISTENER, DIALER_AT_LISTENER, TRANSCRIPT)


def test_the_handshake_vector() -> None:
    """Fixed inputs give fixed bytes, so another implementation can check itself."""
    assert TRANSCRIPT.hex() == TRANSCRIPT_HEX
    assert DIALER_AUTH[:32].hex() == DIALER_MAC_HEX
    assert LISTENER_AUTH[:32].hex() == LISTENER_MAC_HEX
    by_hand = hmac.new(TOKEN, b"D" + bytes.fromhex(TRANSCRIPT_HEX), hashlib.sha256)
    assert by_hand.hexdigest() == DIALER_MAC_HEX


def test_the_transcript_depends_on_which_hello_came_first() -> None:
    assert transcript(LISTENER_HELLO, DIALER_HELLO, None) != TRANSCRIPT
    other = make_hello(C.genesis, LISTENER, b"\x00" * NONCE_SIZE).encode()
    assert transcript(DIALER_HELLO, other, None) != TRANSCRIPT


# ------------------------------------------------------------------- HELLO


def test_make_hello_claims_the_role_the_genesis_gives() -> None:
    assert make_hello(C.genesis, DIALER, DIALER_NONCE).role is LinkRole.VALIDATOR
    observer = make_hello(C.genesis, C.outsider, DIALER_NONCE)
    assert observer.role is LinkRole.OBSERVER
    assert observer.network_id == C.genesis.network_id
    assert observer.genesis == C.genesis.hash
    assert observer.scheme is Scheme.ED25519
    assert observer.encode()[4:6] == codec.u16(ED25519_VERSION)


def test_hello_bytes_follow_the_documented_layout() -> None:
    assert hello_bytes() == DIALER_HELLO


@PROPERTIES
@given(
    st.sampled_from(LinkRole),
    st.text(max_size=63),  # at most 4 bytes a character: within the 255-byte limit
    st.binary(min_size=32, max_size=32),
    st.binary(min_size=32, max_size=32),
    st.binary(min_size=NONCE_SIZE, max_size=NONCE_SIZE),
)
def test_hello_round_trips(
    role: LinkRole, network: str, genesis: bytes, key: bytes, nonce: bytes
) -> None:
    hello = Hello(role, Scheme.ED25519, network, GenesisHash(genesis), PublicKey(key), nonce)
    assert decode_hello(hello.encode()) == hello


def test_hello_refuses_a_network_id_or_nonce_of_the_wrong_size() -> None:
    good = make_hello(C.genesis, DIALER, DIALER_NONCE)
    with pytest.raises(UsageError):
        dataclasses.replace(good, network_id="n" * 256).encode()
    with pytest.raises(UsageError):
        dataclasses.replace(good, nonce=b"\x00" * (NONCE_SIZE - 1)).encode()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (hello_bytes(magic=b"QDAX"), Reason.UNKNOWN_MESSAGE),
        (b"HTTP/1.1 200 OK\r\n" + b"\x00" * 100, Reason.UNKNOWN_MESSAGE),
        (hello_bytes(version=5), Reason.BAD_VERSION),
        (hello_bytes(version=0), Reason.BAD_VERSION),
        (hello_bytes(role=0), Reason.NON_CANONICAL),
        (hello_bytes(role=3), Reason.NON_CANONICAL),
        (hello_bytes(network=b"\xff\xfe"), Reason.NON_CANONICAL),
        (hello_bytes(network=b"qudag-\xc3"), Reason.NON_CANONICAL),
        (hello_bytes() + b"\x00", Reason.TRAILING_BYTES),
    ],
    ids=[
        "bad-magic",
        "not-qudag",
        "newer-version",
        "version-0",
        "role-0",
        "role-3",
        "network-not-utf8",
        "network-cut-utf8",
        "trailing",
    ],
)
def test_decode_hello_refuses(data: bytes, reason: Reason) -> None:
    assert rejected(lambda: decode_hello(data)) is reason


BINDING = hashlib.sha256(b"the listener's certificate").digest()
RELAY_BINDING = hashlib.sha256(b"a relay's certificate").digest()


@pytest.mark.parametrize("signers", [(DIALER, C.genesis), (CC.signers[0], CC.genesis)])
def test_a_bound_hello_round_trips_as_version_3_or_4(signers: tuple[Signer, Genesis]) -> None:
    signer, genesis = signers
    hello = make_hello(genesis, signer, DIALER_NONCE, BINDING)
    data = hello.encode()
    assert data.endswith(BINDING)
    expected = 3 if signer.scheme is Scheme.ED25519 else 4
    assert int.from_bytes(data[4:6], "big") == expected
    assert decode_hello(data) == hello
    reason = rejected(functools.partial(decode_hello, data[:-1]))
    assert reason is Reason.TRUNCATED


def test_check_hello_refuses_another_tls_session_as_bad_channel_binding() -> None:
    at_listener = decode_hello(make_hello(C.genesis, DIALER, DIALER_NONCE, RELAY_BINDING).encode())
    check_hello(
        dataclasses.replace(at_listener, binding=BINDING), C.genesis, LISTENER.node_id, BINDING
    )
    assert (
        rejected(lambda: check_hello(at_listener, C.genesis, LISTENER.node_id, BINDING))
        is Reason.BAD_CHANNEL_BINDING
    )


def test_check_hello_refuses_the_other_transport() -> None:
    bound = decode_hello(make_hello(C.genesis, DIALER, DIALER_NONCE, BINDING).encode())
    plain = decode_hello(DIALER_HELLO)
    assert (
        rejected(lambda: check_hello(bound, C.genesis, LISTENER.node_id, None))
        is Reason.WRONG_TRANSPORT
    )
    assert (
        rejected(lambda: check_hello(plain, C.genesis, LISTENER.node_id, BINDING))
        is Reason.WRONG_TRANSPORT
    )


def test_the_transcript_binds_the_binding_each_end_computed() -> None:
    """A relay that rewrites the HELLOs' binding field still leaves the two ends with
    different transcripts: each hashes the binding it computed itself."""
    dialer = make_hello(C.genesis, DIALER, DIALER_NONCE, BINDING).encode()
    listener = make_hello(C.genesis, LISTENER, LISTENER_NONCE, BINDING).encode()
    at_listener = transcript(dialer, listener, BINDING)
    at_dialer = transcript(dialer, listener, RELAY_BINDING)
    assert at_listener != at_dialer
    auth = make_auth(TOKEN, DIALER, Side.DIALER, at_dialer)
    assert (
        rejected(lambda: check_auth(auth, TOKEN, decode_hello(dialer), Side.DIALER, at_listener))
        is Reason.BAD_TOKEN
    )
    assert transcript(dialer, listener, None) not in (at_listener, at_dialer)


def test_decode_hello_refuses_every_truncation() -> None:
    for cut in range(len(DIALER_HELLO)):
        reason = rejected(functools.partial(decode_hello, DIALER_HELLO[:cut]))
        assert reason is Reason.TRUNCATED, cut


def test_check_hello_refuses_another_network() -> None:
    hello = dataclasses.replace(decode_hello(DIALER_HELLO), network_id="qudag-other")
    assert hello_refused(hello) is Reason.WRONG_NETWORK


def test_check_hello_refuses_the_same_network_id_with_another_genesis() -> None:
    other = Genesis(
        C.genesis.network_id,
        (*C.genesis.validators, Validator("v4", C.outsider.public_key)),
    )
    assert other.network_id == C.genesis.network_id
    hello = make_hello(other, DIALER, DIALER_NONCE)
    assert hello_refused(hello) is Reason.WRONG_GENESIS


def test_check_hello_refuses_our_own_key() -> None:
    hello = decode_hello(DIALER_HELLO)
    assert hello_refused(hello, DIALER.node_id) is Reason.SELF_CONNECTION


def test_check_hello_refuses_an_outsider_claiming_to_be_a_validator() -> None:
    hello = decode_hello(hello_bytes(key=C.outsider.public_key))
    assert hello.role is LinkRole.VALIDATOR
    assert hello_refused(hello) is Reason.NOT_A_VALIDATOR


def test_check_hello_accepts_an_outsider_as_observer() -> None:
    hello = decode_hello(make_hello(C.genesis, C.outsider, DIALER_NONCE).encode())
    assert hello.role is LinkRole.OBSERVER
    check_hello(hello, C.genesis, LISTENER.node_id, None)


def test_check_hello_accepts_a_validator_that_chooses_to_observe() -> None:
    hello = decode_hello(hello_bytes(role=LinkRole.OBSERVER))
    check_hello(hello, C.genesis, LISTENER.node_id, None)


# -------------------------------------------------------------------- AUTH


def test_check_auth_refuses_a_wrong_token() -> None:
    assert auth_refused(DIALER_AUTH, token=b"not the token") is Reason.BAD_TOKEN
    auth = make_auth(b"not the token", DIALER, Side.DIALER, TRANSCRIPT)
    assert auth_refused(auth) is Reason.BAD_TOKEN


def test_check_auth_refuses_a_signature_by_another_key() -> None:
    auth = make_auth(TOKEN, THIRD, Side.DIALER, TRANSCRIPT)
    assert auth_refused(auth) is Reason.BAD_SIGNATURE


def test_check_auth_refuses_a_signature_over_another_transcript() -> None:
    other = transcript(DIALER_HELLO, DIALER_HELLO, None)
    auth = DIALER_AUTH[:32] + make_auth(TOKEN, DIALER, Side.DIALER, other)[32:]
    assert auth_refused(auth) is Reason.BAD_SIGNATURE


def test_check_auth_refuses_an_auth_made_for_another_connection() -> None:
    other = transcript(DIALER_HELLO, DIALER_HELLO, None)
    auth = make_auth(TOKEN, DIALER, Side.DIALER, other)
    assert auth_refused(auth) is Reason.BAD_TOKEN


def test_check_auth_refuses_an_auth_reflected_from_the_other_side() -> None:
    # The listener's own AUTH sent back to it as if the dialer had made it.
    listener = decode_hello(LISTENER_HELLO)
    assert auth_refused(LISTENER_AUTH, listener, Side.DIALER) is Reason.BAD_TOKEN
    assert auth_refused(DIALER_AUTH, DIALER_AT_LISTENER, Side.LISTENER) is Reason.BAD_TOKEN


@pytest.mark.parametrize("size", [0, 32, AUTH_SIZE - 1, AUTH_SIZE + 1, 2 * AUTH_SIZE])
def test_check_auth_refuses_a_wrong_length(size: int) -> None:
    data = (DIALER_AUTH * 2)[:size]
    assert auth_refused(data) is Reason.TRUNCATED


def test_the_token_never_travels() -> None:
    for data in (DIALER_HELLO, LISTENER_HELLO, DIALER_AUTH, LISTENER_AUTH):
        assert TOKEN not in data
        assert TOKEN[:8] not in data


@PROPERTIES
@given(st.integers(min_value=0, max_value=AUTH_SIZE - 1), st.integers(min_value=1, max_value=255))
def test_any_single_byte_change_to_an_auth_is_refused(position: int, flip: int) -> None:
    changed = bytearray(DIALER_AUTH)
    changed[position] ^= flip
    reason = auth_refused(bytes(changed))
    assert reason is (Reason.BAD_TOKEN if position < 32 else Reason.BAD_SIGNATURE)


# ----------------------------------------------------------------- REFUSAL


@pytest.mark.parametrize("reason", sorted(REFUSAL_REASONS))
def test_a_known_refusal_reason_round_trips(reason: str) -> None:
    assert refusal_reason(encode_refusal(reason)) == reason


@pytest.mark.parametrize(
    "text",
    [
        b"",
        b"bad_tokens",
        b"made_up",
        b"BAD_TOKEN",
        b"bad_token\x00",
        "caf\u00e9".encode(),
        b"x" * 200,
    ],
)
def test_any_other_refusal_reason_reads_as_unknown(text: bytes) -> None:
    assert refusal_reason(encode_refusal("bad_token")[:6] + text) == "unknown"


def test_only_known_reasons_are_sent() -> None:
    with pytest.raises(UsageError):
        encode_refusal("anything a caller makes up")


def test_a_hello_or_an_auth_is_not_a_refusal() -> None:
    assert refusal_reason(DIALER_HELLO) is None
    assert refusal_reason(DIALER_AUTH) is None


# ------------------------------------------------------------- replay guard


def test_a_nonce_seen_twice_is_a_replay() -> None:
    guard = ReplayGuard()
    guard.check(DIALER_NONCE)
    guard.check(LISTENER_NONCE)
    assert rejected(lambda: guard.check(DIALER_NONCE)) is Reason.REPLAYED_HANDSHAKE


def test_the_replay_guard_forgets_the_oldest_nonce_beyond_its_capacity() -> None:
    a, b, c = (bytes([n]) * NONCE_SIZE for n in (1, 2, 3))
    guard = ReplayGuard(capacity=2)
    guard.check(a)
    guard.check(b)
    guard.check(c)  # a is evicted
    guard.check(a)  # accepted again; now b is evicted
    assert rejected(lambda: guard.check(c)) is Reason.REPLAYED_HANDSHAKE
    assert rejected(lambda: guard.check(a)) is Reason.REPLAYED_HANDSHAKE
    guard.check(b)


@pytest.mark.parametrize("capacity", [0, -1])
def test_the_replay_guard_needs_a_positive_capacity(capacity: int) -> None:
    with pytest.raises(UsageError):
        ReplayGuard(capacity)


# ------------------------------------------------- composite ML-DSA-65 + Ed25519

C_DIALER, C_LISTENER = CC.signers[0], CC.signers[1]
C_DIALER_HELLO = make_hello(CC.genesis, C_DIALER, DIALER_NONCE).encode()
C_LISTENER_HELLO = make_hello(CC.genesis, C_LISTENER, LISTENER_NONCE).encode()
C_TRANSCRIPT = transcript(C_DIALER_HELLO, C_LISTENER_HELLO, None)
C_DIALER_AUTH = make_auth(TOKEN, C_DIALER, Side.DIALER, C_TRANSCRIPT)
C_AUTH_SIZE = auth_size(Scheme.MLDSA65_ED25519)


def test_a_composite_handshake_succeeds_at_both_ends() -> None:
    at_listener = decode_hello(C_DIALER_HELLO)
    at_dialer = decode_hello(C_LISTENER_HELLO)
    check_hello(at_listener, CC.genesis, C_LISTENER.node_id, None)
    check_hello(at_dialer, CC.genesis, C_DIALER.node_id, None)
    assert at_listener.scheme is at_dialer.scheme is Scheme.MLDSA65_ED25519
    assert (at_listener.public_key, at_listener.node_id) == (C_DIALER.public_key, C_DIALER.node_id)
    assert at_listener.role is at_dialer.role is LinkRole.VALIDATOR
    assert transcript(at_listener.encode(), at_dialer.encode(), None) == C_TRANSCRIPT
    listener_auth = answer_auth(C_DIALER_AUTH, [TOKEN], C_LISTENER, at_listener, C_TRANSCRIPT)
    assert len(C_DIALER_AUTH) == len(listener_auth) == C_AUTH_SIZE == 32 + 3373
    check_auth(listener_auth, TOKEN, at_dialer, Side.LISTENER, C_TRANSCRIPT)


def test_a_composite_hello_is_version_2_with_a_scheme_byte() -> None:
    network = CC.genesis.network_id.encode()
    by_hand = b"".join(
        (
            MAGIC,
            codec.u16(2),
            codec.u8(LinkRole.VALIDATOR),
            codec.u8(Scheme.MLDSA65_ED25519),
            codec.u8(len(network)),
            network,
            CC.genesis.hash,
            C_DIALER.public_key,
            DIALER_NONCE,
        )
    )
    assert by_hand == C_DIALER_HELLO
    assert len(C_DIALER_HELLO) == len(DIALER_HELLO) + 1 + 1984 - 32
    assert DIALER_HELLO[4:6] == codec.u16(ED25519_VERSION)  # Ed25519 keeps version 1


def test_an_ed25519_hello_and_a_composite_one_meet_as_the_wrong_scheme() -> None:
    # Both networks are called qudag-rules: the scheme is refused before the genesis.
    assert C.genesis.network_id == CC.genesis.network_id
    ed25519 = decode_hello(DIALER_HELLO)
    assert hello_refused(ed25519, C_LISTENER.node_id, CC.genesis) is Reason.WRONG_SCHEME
    composite = decode_hello(C_DIALER_HELLO)
    assert hello_refused(composite, LISTENER.node_id, C.genesis) is Reason.WRONG_SCHEME
    assert Reason.WRONG_SCHEME.value in REFUSAL_REASONS


def schemed_hello_bytes(scheme: int, key: bytes) -> bytes:
    """A version 2 HELLO of the composite network naming ``scheme``, with ``key``."""
    network = CC.genesis.network_id.encode()
    head = MAGIC + codec.u16(2) + codec.u8(LinkRole.VALIDATOR) + codec.u8(scheme)
    return head + codec.u8(len(network)) + network + CC.genesis.hash + key + DIALER_NONCE


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        # an Ed25519 HELLO has one encoding, version 1
        (schemed_hello_bytes(Scheme.ED25519, DIALER.public_key), Reason.UNKNOWN_SCHEME),
        (schemed_hello_bytes(0, C_DIALER.public_key), Reason.UNKNOWN_SCHEME),
        (schemed_hello_bytes(3, C_DIALER.public_key), Reason.UNKNOWN_SCHEME),
        (schemed_hello_bytes(Scheme.MLDSA65_ED25519, DIALER.public_key), Reason.TRUNCATED),
        (hello_bytes(key=C_DIALER.public_key), Reason.TRAILING_BYTES),  # version 1, big key
        (C_DIALER_HELLO + b"\x00", Reason.TRAILING_BYTES),
    ],
    ids=["ed25519-in-v2", "scheme-0", "scheme-3", "short-key", "v1-composite-key", "trailing"],
)
def test_decode_hello_refuses_a_bad_version_2_hello(data: bytes, reason: Reason) -> None:
    assert rejected(lambda: decode_hello(data)) is reason


def test_decode_hello_refuses_every_truncation_of_a_composite_hello() -> None:
    for cut in range(0, len(C_DIALER_HELLO), 13):
        reason = rejected(functools.partial(decode_hello, C_DIALER_HELLO[:cut]))
        assert reason is Reason.TRUNCATED, cut


def test_a_hello_refuses_a_key_of_another_schemes_size() -> None:
    good = make_hello(CC.genesis, C_DIALER, DIALER_NONCE)
    with pytest.raises(UsageError):
        dataclasses.replace(good, public_key=DIALER.public_key).encode()
    with pytest.raises(UsageError):
        dataclasses.replace(good, scheme=Scheme.ED25519).encode()


@pytest.mark.parametrize(
    ("size", "scheme"),
    [
        (AUTH_SIZE, Scheme.MLDSA65_ED25519),
        (C_AUTH_SIZE - 1, Scheme.MLDSA65_ED25519),
        (C_AUTH_SIZE + 1, Scheme.MLDSA65_ED25519),
        (C_AUTH_SIZE, Scheme.ED25519),
    ],
)
def test_an_auth_of_the_wrong_size_for_the_peers_scheme_is_refused(
    size: int, scheme: Scheme
) -> None:
    ed25519, composite = DIALER_AT_LISTENER, decode_hello(C_DIALER_HELLO)
    peer = composite if scheme is Scheme.MLDSA65_ED25519 else ed25519
    auth = (C_DIALER_AUTH * 2)[:size]
    assert rejected(lambda: check_auth(auth, TOKEN, peer, Side.DIALER, C_TRANSCRIPT)) is (
        Reason.TRUNCATED
    )
    answer = functools.partial(answer_auth, auth, [TOKEN], C_LISTENER, peer, C_TRANSCRIPT)
    assert rejected(answer) is Reason.TRUNCATED


def test_a_composite_hello_or_auth_is_not_a_refusal() -> None:
    assert refusal_reason(C_DIALER_HELLO) is None
    assert refusal_reason(C_DIALER_AUTH) is None
    assert refusal_reason(encode_refusal(Reason.WRONG_SCHEME.value)) == "wrong_scheme"
