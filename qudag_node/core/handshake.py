"""The peer link handshake: both ends prove the shared token and their node key.

Each end sends its HELLO as soon as the connection is up. The dialer proves first:
once it has read the listener's HELLO and found it acceptable, it sends its AUTH. The
listener checks that AUTH before it sends its own (:func:`answer_auth`), so an end
that does not know the token never receives a MAC it could test guesses against
offline::

    HELLO v1  magic "QDAG"  1:u16  role:u8  network_len:u8  network_id
              genesis_hash:32  public_key:32  nonce:32                   (ed25519)
    HELLO v2  magic "QDAG"  2:u16  role:u8  scheme:u8  network_len:u8  network_id
              genesis_hash:32  public_key:(scheme's size)  nonce:32      (other schemes)
    HELLO v3  as v1, then binding:32                          (ed25519, inside TLS)
    HELLO v4  as v2, then binding:32                          (other schemes, inside TLS)
    AUTH      mac:32  signature:(scheme's size)

    transcript = BLAKE2b-256(person "qudag:link",
                             len(dialer HELLO):u32 || dialer HELLO || listener HELLO
                             [|| binding])
    mac        = HMAC-SHA256(token, side || transcript)
    signature  = Sign(node key, purpose "qudag/link", "qudag:link-auth" || side || transcript)

A node of an Ed25519 network sends version 1, as every node did before schemes were
named, so nodes of either age link; a HELLO in another scheme than ours is refused as
``wrong_scheme``.

**Inside TLS** (versions 3 and 4) the handshake binds the TLS session it runs in: the
*binding* is SHA-256 of the listener's TLS certificate (RFC 5929's tls-server-end-point),
which the listener knows as its own and the dialer reads from the session. Each HELLO
carries the binding its sender sees, and each end refuses a HELLO whose binding is not
its own as ``bad_channel_binding``: a party that terminates TLS in the middle presents a
certificate of its own to the dialer, so the two ends see different bindings, even when
it relays every byte. The transcript hashes the binding each end computed itself, so a
relay that also rewrites the field still fails the AUTH. The certificate's key needs no
other proof: the AUTH signatures of both node keys cover the binding, so each node
vouches for the session it speaks in. A HELLO with a binding on a plain link, or
without one inside TLS, is refused as ``wrong_transport``.

An end that refuses the other sends a REFUSAL frame, ``magic "QDAG"  0xFFFF  reason``
(a HELLO of a version that never exists, and never of AUTH's length), then closes. A
reason outside :data:`REFUSAL_REASONS` reads as ``unknown``: what a peer writes there
is never used as it is.

A party posing as a listener (a hijacked name) still receives the dialer's AUTH, so
the token must be too strong to guess offline (128 bits or more; the node refuses to
start with less).

``side`` is ``b"D"`` for the end that dialed and ``b"L"`` for the end that listened,
so one end's AUTH can never be reflected back as the other's. The token itself never
travels. Every HELLO carries a fresh random nonce, so the transcript of each
connection is new and a recorded AUTH proves nothing on another connection; a
listener also remembers recent dialer nonces and refuses a HELLO it has seen, which
names a replay for what it is.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from qudag_node.core import codec
from qudag_node.core.crypto import (
    PUBLIC_KEY_SIZES,
    SIGNATURE_SIZES,
    Purpose,
    Scheme,
    SignatureCheck,
    Signer,
    named_scheme,
    node_id,
    verify_check,
)
from qudag_node.core.errors import InputRejected, Reason, UsageError
from qudag_node.core.genesis import Genesis
from qudag_node.core.types import HASH_SIZE, GenesisHash, NodeId, PublicKey

MAGIC = b"QDAG"
#: The HELLO of an Ed25519 network (no scheme byte), and of any other scheme.
ED25519_VERSION = 1
SCHEMED_VERSION = 2
#: The same two, inside TLS: the HELLO ends with the channel binding.
BOUND_ED25519_VERSION = 3
BOUND_SCHEMED_VERSION = 4
_VERSIONS = (ED25519_VERSION, SCHEMED_VERSION, BOUND_ED25519_VERSION, BOUND_SCHEMED_VERSION)
BINDING_SIZE = 32
NONCE_SIZE = 32
MAC_SIZE = 32
_TRANSCRIPT = b"qudag:link"
_SIGNED = b"qudag:link-auth"
_REFUSAL = MAGIC + b"\xff\xff"
#: Reasons a REFUSAL may name (the handshake's own and the link layer's); any other
#: reads as ``unknown``.
REFUSAL_REASONS = frozenset(
    {
        Reason.UNKNOWN_MESSAGE.value,
        Reason.BAD_VERSION.value,
        Reason.NON_CANONICAL.value,
        Reason.TRUNCATED.value,
        Reason.TRAILING_BYTES.value,
        Reason.WRONG_NETWORK.value,
        Reason.WRONG_GENESIS.value,
        Reason.WRONG_SCHEME.value,
        Reason.SELF_CONNECTION.value,
        Reason.NOT_A_VALIDATOR.value,
        Reason.REPLAYED_HANDSHAKE.value,
        Reason.BAD_TOKEN.value,
        Reason.BAD_SIGNATURE.value,
        Reason.BAD_CHANNEL_BINDING.value,
        Reason.WRONG_TRANSPORT.value,
        "handshake_timeout",
        "tls_failed",
        "connection_lost",
        "malformed_frame",
        "too_many_handshakes",
        "shutdown",
    }
)
#: What an unknown REFUSAL reason reads as.
UNKNOWN_REFUSAL = "unknown"
_REFUSALS_BY_BYTES = {reason.encode(): reason for reason in REFUSAL_REASONS}


class LinkRole(enum.IntEnum):
    """What an end claims to be; a validator claim must match the genesis."""

    VALIDATOR = 1
    OBSERVER = 2


class Side(enum.Enum):
    """Which end of the connection: the one that dialed or the one that listened."""

    DIALER = b"D"
    LISTENER = b"L"


@dataclass(frozen=True, slots=True)
class Hello:
    """One end's opening message."""

    role: LinkRole
    scheme: Scheme
    network_id: str
    genesis: GenesisHash
    public_key: PublicKey
    nonce: bytes
    #: The TLS channel binding the sender sees; None on a plain link.
    binding: bytes | None = None

    @property
    def node_id(self) -> NodeId:
        """The sender's node id."""
        return node_id(self.scheme, self.public_key)

    def encode(self) -> bytes:
        """Canonical bytes."""
        network = self.network_id.encode()
        if len(network) > 255 or len(self.nonce) != NONCE_SIZE:
            raise UsageError("network id or nonce of the wrong size")
        if len(self.public_key) != PUBLIC_KEY_SIZES[self.scheme]:
            raise UsageError("public key of the wrong size for its scheme")
        if self.binding is not None and len(self.binding) != BINDING_SIZE:
            raise UsageError("channel binding of the wrong size")
        bound = self.binding is not None
        if self.scheme is Scheme.ED25519:
            number = BOUND_ED25519_VERSION if bound else ED25519_VERSION
            version = [codec.u16(number), codec.u8(self.role)]
        else:
            number = BOUND_SCHEMED_VERSION if bound else SCHEMED_VERSION
            version = [codec.u16(number), codec.u8(self.role), codec.u8(self.scheme)]
        return b"".join(
            (
                MAGIC,
                *version,
                codec.u8(len(network)),
                network,
                self.genesis,
                self.public_key,
                self.nonce,
                self.binding or b"",
            )
        )


def make_hello(
    genesis: Genesis, signer: Signer, nonce: bytes, binding: bytes | None = None
) -> Hello:
    """Our HELLO for ``genesis``; ``nonce`` must be 32 fresh random bytes, ``binding``
    the TLS channel binding we see (None on a plain link)."""
    is_validator = genesis.index_of(signer.node_id) is not None
    role = LinkRole.VALIDATOR if is_validator else LinkRole.OBSERVER
    return Hello(
        role, signer.scheme, genesis.network_id, genesis.hash, signer.public_key, nonce, binding
    )


def decode_hello(data: bytes) -> Hello:
    """Parse a HELLO; raises :class:`InputRejected`."""
    r = codec.Reader(data)
    if r.fixed(len(MAGIC), "magic") != MAGIC:
        raise InputRejected(Reason.UNKNOWN_MESSAGE, "not a qudag peer (bad magic)")
    version = r.u16("version")
    if version not in _VERSIONS:
        raise InputRejected(
            Reason.BAD_VERSION,
            f"protocol version {version}, we speak {', '.join(map(str, _VERSIONS))}",
        )
    role = r.u8("role")
    if role not in LinkRole._value2member_map_:
        raise InputRejected(Reason.NON_CANONICAL, f"role {role}")
    scheme = Scheme.ED25519
    if version in (SCHEMED_VERSION, BOUND_SCHEMED_VERSION):
        scheme = named_scheme(r.u8("scheme"))
    try:
        network = r.fixed(r.u8("network id length"), "network id").decode()
    except UnicodeDecodeError:
        raise InputRejected(Reason.NON_CANONICAL, "network id is not UTF-8") from None
    genesis = GenesisHash(r.fixed(HASH_SIZE, "genesis hash"))
    key = PublicKey(r.fixed(PUBLIC_KEY_SIZES[scheme], "public key"))
    nonce = r.fixed(NONCE_SIZE, "nonce")
    bound = version in (BOUND_ED25519_VERSION, BOUND_SCHEMED_VERSION)
    binding = r.fixed(BINDING_SIZE, "channel binding") if bound else None
    r.finish("hello")
    return Hello(LinkRole(role), scheme, network, genesis, key, nonce, binding)


def check_hello(hello: Hello, genesis: Genesis, own: NodeId, binding: bytes | None) -> None:
    """Refuse a HELLO of the other transport, or bound to another TLS session than
    ``binding`` (ours; None on a plain link), from another network or scheme, from
    ourselves, or claiming a role it lacks."""
    if (hello.binding is None) != (binding is None):
        ours, theirs = ("tls", "plain") if binding is not None else ("plain", "tls")
        raise InputRejected(
            Reason.WRONG_TRANSPORT, f"peer links over {theirs}, this node over {ours}"
        )
    if hello.binding is not None and not hmac.compare_digest(hello.binding, binding or b""):
        raise InputRejected(
            Reason.BAD_CHANNEL_BINDING,
            "the peer sees another TLS certificate than the listener's: a relay terminates"
            " TLS between us",
        )
    if hello.network_id != genesis.network_id:
        raise InputRejected(
            Reason.WRONG_NETWORK,
            f"peer is on network {hello.network_id!r}, we are on {genesis.network_id!r}",
        )
    if hello.scheme is not genesis.scheme:
        raise InputRejected(
            Reason.WRONG_SCHEME,
            f"peer signs with {hello.scheme.label}, this network with {genesis.scheme.label}",
        )
    if hello.genesis != genesis.hash:
        raise InputRejected(
            Reason.WRONG_GENESIS,
            f"peer's genesis is {hello.genesis.hex()[:16]}, ours {genesis.hash.hex()[:16]}",
        )
    if hello.node_id == own:
        raise InputRejected(Reason.SELF_CONNECTION, "this address is our own node")
    if hello.role is LinkRole.VALIDATOR and genesis.index_of(hello.node_id) is None:
        raise InputRejected(
            Reason.NOT_A_VALIDATOR,
            f"key {hello.node_id.hex()[:16]} claims to be a validator but is not in the genesis",
        )


def transcript(dialer_hello: bytes, listener_hello: bytes, binding: bytes | None) -> bytes:
    """The hash both ends authenticate: the two HELLOs, dialer's first, then the TLS
    channel binding as this end computed it (None on a plain link)."""
    h = hashlib.blake2b(digest_size=32, person=_TRANSCRIPT)
    h.update(codec.u32(len(dialer_hello)))
    h.update(dialer_hello)
    h.update(listener_hello)
    if binding is not None:
        h.update(binding)
    return h.digest()


def make_auth(token: bytes, signer: Signer, side: Side, transcript_hash: bytes) -> bytes:
    """Our AUTH: the token's MAC and our key's signature over the transcript."""
    signed = _SIGNED + side.value + transcript_hash
    return _mac(token, side, transcript_hash) + signer.sign(Purpose.LINK, signed)


def auth_size(scheme: Scheme) -> int:
    """The size of an AUTH in ``scheme``."""
    return MAC_SIZE + SIGNATURE_SIZES[scheme]


def _mac(token: bytes, side: Side, transcript_hash: bytes) -> bytes:
    return hmac.new(token, side.value + transcript_hash, hashlib.sha256).digest()


_AUTH_SIZES = frozenset(map(auth_size, Scheme))


def _check_size(data: bytes, scheme: Scheme) -> None:
    if len(data) != (size := auth_size(scheme)):
        raise InputRejected(Reason.TRUNCATED, f"auth of {len(data)} bytes, need {size}")


def check_auth(data: bytes, token: bytes, peer: Hello, side: Side, transcript_hash: bytes) -> None:
    """Check the AUTH the ``side`` end (which sent ``peer``) sent; raises
    :class:`InputRejected`."""
    _check_size(data, peer.scheme)
    if not hmac.compare_digest(data[:MAC_SIZE], _mac(token, side, transcript_hash)):
        raise InputRejected(Reason.BAD_TOKEN, "the peer does not know our PEER_AUTH_TOKEN")
    signed = _SIGNED + side.value + transcript_hash
    check = SignatureCheck(peer.scheme, Purpose.LINK, peer.public_key, signed, data[MAC_SIZE:])
    if not verify_check(check):
        raise InputRejected(Reason.BAD_SIGNATURE, "the peer's key did not sign the handshake")


def answer_auth(
    data: bytes,
    tokens: Sequence[bytes],
    signer: Signer,
    dialer: Hello,
    transcript_hash: bytes,
) -> bytes:
    """The listener's AUTH, made only once the dialer's AUTH ``data`` has passed
    :func:`check_auth` with one of ``tokens`` (the current token, and during a rotation
    the previous one), and made with that token; raises :class:`InputRejected` (and
    makes nothing) otherwise."""
    if not tokens:
        raise UsageError("a listener needs at least one token")
    _check_size(data, dialer.scheme)
    matched = [
        token
        for token in tokens
        if hmac.compare_digest(data[:MAC_SIZE], _mac(token, Side.DIALER, transcript_hash))
    ]
    if not matched:
        raise InputRejected(Reason.BAD_TOKEN, "the peer does not know our PEER_AUTH_TOKEN")
    check_auth(data, matched[0], dialer, Side.DIALER, transcript_hash)
    return make_auth(matched[0], signer, Side.LISTENER, transcript_hash)


class ReplayGuard:
    """The most recent dialer nonces a listener has seen (bounded)."""

    def __init__(self, capacity: int = 4096) -> None:
        if capacity < 1:
            raise UsageError("replay guard capacity must be positive")
        self._capacity = capacity
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    def check(self, nonce: bytes) -> None:
        """Remember ``nonce``; raise :class:`InputRejected` if it was seen before."""
        if nonce in self._seen:
            raise InputRejected(Reason.REPLAYED_HANDSHAKE, "this handshake was seen before")
        self._seen[nonce] = None
        if len(self._seen) > self._capacity:
            self._seen.popitem(last=False)


def encode_refusal(reason: str) -> bytes:
    """A REFUSAL frame naming ``reason``, one of :data:`REFUSAL_REASONS`."""
    if reason not in REFUSAL_REASONS:
        raise UsageError(f"{reason!r} is not a refusal reason")
    return _REFUSAL + reason.encode()


def refusal_reason(frame: bytes) -> str | None:
    """The reason of a REFUSAL frame (``unknown`` for one outside
    :data:`REFUSAL_REASONS`), or None if ``frame`` is not a REFUSAL."""
    if not frame.startswith(_REFUSAL) or len(frame) in _AUTH_SIZES:
        return None
    return _REFUSALS_BY_BYTES.get(frame[len(_REFUSAL) :], UNKNOWN_REFUSAL)
