"""Verify a qudag genesis file, a vertex and its certificate, and a certified
checkpoint, as docs/protocol.md says.

Inputs are what anyone can hold: the genesis file of the network (from its operator,
never from a node's API) and a vertex document of ``GET /api/v1/vertices/{id}`` or a
checkpoint document of ``GET /api/v1/checkpoints/latest``. The
ML-DSA-65 half of a composite signature is checked with ``dilithium-py``, the Ed25519
half (and Ed25519 signatures of old networks) with PyNaCl.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import nacl.exceptions
import nacl.signing
from dilithium_py.ml_dsa import ML_DSA_65

ED25519 = "ed25519"
COMPOSITE = "mldsa65-ed25519"
#: The scheme byte of vertex headers and certificates, and the genesis version, by name.
SCHEME_BYTES = {ED25519: 1, COMPOSITE: 2}
GENESIS_VERSIONS = {ED25519: 1, COMPOSITE: 2}

PREFIX = b"CompositeAlgorithmSignatures2025"
LABEL = b"COMPSIG-MLDSA65-Ed25519-SHA512"
VERTEX_CONTEXT = b"qudag/vertex"
VOTE_CONTEXT = b"qudag/vote"
CHECKPOINT_CONTEXT = b"qudag/checkpoint"

MLDSA_PUBLIC_KEY_SIZE = 1952
MLDSA_SIGNATURE_SIZE = 3309
ED25519_PUBLIC_KEY_SIZE = 32
ED25519_SIGNATURE_SIZE = 64
PUBLIC_KEY_SIZES = {ED25519: 32, COMPOSITE: MLDSA_PUBLIC_KEY_SIZE + ED25519_PUBLIC_KEY_SIZE}
SIGNATURE_SIZES = {ED25519: 64, COMPOSITE: MLDSA_SIGNATURE_SIZE + ED25519_SIGNATURE_SIZE}

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_FIXED_HEADER = struct.Struct(">BB32s32sQQH")  # version .. parent_count
_HEADER_TAIL = struct.Struct(">II32s")  # tx_count payload_bytes batch_root
#: version genesis number round leader timestamp_ms log_length log_hash window_count
#: window_root
_CHECKPOINT = struct.Struct(">B32sQQ32sQQ32sI32s")


class Refused(Exception):
    """The input does not verify; ``reason`` names the check that failed."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@contextlib.contextmanager
def _well_formed(what: str) -> Iterator[None]:
    """Turn a missing field, a wrong type or bad hex into Refused("malformed")."""
    try:
        yield
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise Refused("malformed", f"{what}: {type(e).__name__} {e}") from e


def blake2b_256(data: bytes, person: bytes) -> bytes:
    """BLAKE2b with a 32-byte digest and the personalisation ``person``."""
    return hashlib.blake2b(data, digest_size=32, person=person).digest()


# ------------------------------------------------------------------ signatures


def message_representative(message: bytes, ctx: bytes) -> bytes:
    """``M'`` of the composite: Prefix || Label || len(ctx) || ctx || SHA-512(message)."""
    if len(ctx) > 255:
        raise ValueError("a context is at most 255 bytes")
    return PREFIX + LABEL + bytes([len(ctx)]) + ctx + hashlib.sha512(message).digest()


def verify_ed25519(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is ``public_key``'s Ed25519 signature of ``message``."""
    if len(public_key) != ED25519_PUBLIC_KEY_SIZE or len(signature) != ED25519_SIGNATURE_SIZE:
        return False
    try:
        nacl.signing.VerifyKey(public_key).verify(message, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError):
        return False
    return True


def verify_composite(public_key: bytes, message: bytes, ctx: bytes, signature: bytes) -> bool:
    """True when both halves of the composite ``signature`` verify ``message`` in ``ctx``."""
    if len(public_key) != PUBLIC_KEY_SIZES[COMPOSITE]:
        return False
    if len(signature) != SIGNATURE_SIZES[COMPOSITE] or len(ctx) > 255:
        return False
    represented = message_representative(message, ctx)
    mldsa_key, ed_key = public_key[:MLDSA_PUBLIC_KEY_SIZE], public_key[MLDSA_PUBLIC_KEY_SIZE:]
    mldsa_sig, ed_sig = signature[:MLDSA_SIGNATURE_SIZE], signature[MLDSA_SIGNATURE_SIZE:]
    if not bool(ML_DSA_65.verify(mldsa_key, represented, mldsa_sig, ctx=LABEL)):
        return False
    return verify_ed25519(ed_key, represented, ed_sig)


def verify_signature(
    scheme: str, public_key: bytes, message: bytes, ctx: bytes, signature: bytes
) -> bool:
    """One signature of a network of ``scheme``; Ed25519 networks sign without a context."""
    if scheme == ED25519:
        return verify_ed25519(public_key, message, signature)
    return verify_composite(public_key, message, ctx, signature)


# --------------------------------------------------------------------- genesis


def node_id(scheme: str, public_key: bytes) -> bytes:
    """The 32 bytes naming a validator in vertex headers."""
    if scheme == ED25519:
        return public_key
    return blake2b_256(public_key, b"qudag:node-id")


@dataclass(frozen=True)
class Member:
    """A validator of the genesis."""

    index: int
    name: str
    public_key: bytes
    node_id: bytes


@dataclass(frozen=True)
class Network:
    """A genesis, parsed and re-encoded from its file."""

    network_id: str
    scheme: str
    members: tuple[Member, ...]
    encoding: bytes
    hash: bytes

    @property
    def quorum(self) -> int:
        """n - floor((n - 1) / 3) votes certify a vertex."""
        n = len(self.members)
        return n - (n - 1) // 3

    def by_node_id(self, author: bytes) -> Member:
        """The validator that ``author`` names, or Refused."""
        for member in self.members:
            if member.node_id == author:
                return member
        raise Refused("unknown_author", f"{author.hex()} is not a validator")


def encode_genesis(scheme: str, network_id: str, validators: list[tuple[str, bytes]]) -> bytes:
    """The canonical genesis bytes (version 1 for Ed25519, 2 with the scheme byte)."""
    net = network_id.encode()
    parts = [bytes([GENESIS_VERSIONS[scheme]])]
    if scheme != ED25519:
        parts.append(bytes([SCHEME_BYTES[scheme]]))
    parts += [bytes([len(net)]), net, struct.pack(">H", len(validators))]
    for name, key in validators:
        parts += [bytes([len(name.encode())]), name.encode(), key]
    return b"".join(parts)


def read_genesis_file(text: str) -> Network:
    """Parse a genesis file, check every field, and compute its encoding and hash.

    A file without ``scheme`` is an Ed25519 network's (written before the composite).
    """
    with _well_formed("genesis file"):
        return _read_genesis(json.loads(text))


def _read_genesis(document: dict[str, Any]) -> Network:
    scheme = document.get("scheme", ED25519)
    if scheme not in SCHEME_BYTES:
        raise Refused("unknown_scheme", f"scheme {scheme!r}")
    network_id = document["network_id"]
    entries = document["validators"]
    if not _is_name(network_id) or not entries:
        raise Refused("bad_genesis", "a network id and at least one validator")
    validators = []
    for entry in entries:
        key = bytes.fromhex(entry["public_key"])
        if not _is_name(entry["name"]) or len(key) != PUBLIC_KEY_SIZES[scheme]:
            raise Refused("bad_genesis", f"validator {entry['name']!r}")
        validators.append((str(entry["name"]), key))
    if len({n for n, _ in validators}) != len(validators):
        raise Refused("bad_genesis", "validator names repeat")
    if len({k for _, k in validators}) != len(validators):
        raise Refused("bad_genesis", "validator keys repeat")
    encoding = encode_genesis(scheme, network_id, validators)
    digest = blake2b_256(encoding, b"qudag:genesis")
    if "hash" in document and bytes.fromhex(document["hash"]) != digest:
        raise Refused("bad_genesis", "the file's hash is not the hash of its contents")
    members = tuple(
        Member(i, name, key, node_id(scheme, key)) for i, (name, key) in enumerate(validators)
    )
    return Network(network_id, scheme, members, encoding, digest)


def _is_name(value: object) -> bool:
    return isinstance(value, str) and _NAME.fullmatch(value) is not None


# ---------------------------------------------------------------------- vertices


@dataclass(frozen=True)
class Header:
    """The fields of a canonical vertex header."""

    version: int
    scheme: int
    network: bytes
    author: bytes
    round: int
    timestamp_ms: int
    parents: tuple[bytes, ...]
    tx_count: int
    payload_bytes: int
    batch_root: bytes


def parse_header(data: bytes) -> Header:
    """Decode header bytes; exactly one encoding is accepted."""
    fixed, tail = _FIXED_HEADER.size, _HEADER_TAIL.size
    if len(data) < fixed:
        raise Refused("truncated", "header")
    version, scheme, network, author, round_, timestamp, count = _FIXED_HEADER.unpack_from(data)
    if len(data) != fixed + 32 * count + tail:
        raise Refused("truncated", f"a header of {count} parents")
    parents = tuple(data[fixed + 32 * i : fixed + 32 * (i + 1)] for i in range(count))
    if list(parents) != sorted(set(parents)):
        raise Refused("non_canonical", "parents are not strictly ascending")
    tx_count, payload, root = _HEADER_TAIL.unpack_from(data, fixed + 32 * count)
    if version != 1:
        raise Refused("bad_version", f"header version {version}")
    return Header(
        version, scheme, network, author, round_, timestamp, parents, tx_count, payload, root
    )


def vertex_id(header: bytes) -> bytes:
    """BLAKE2b-256(person="qudag:vertex") of the canonical header bytes."""
    return blake2b_256(header, b"qudag:vertex")


def parse_certificate(data: bytes, scheme: str) -> tuple[tuple[int, bytes], ...]:
    """(voter index, signature) pairs of ``scheme:u8 count:u16 (voter:u16 signature)*``."""
    size = SIGNATURE_SIZES[scheme]
    if len(data) < 3:
        raise Refused("truncated", "certificate")
    if data[0] != SCHEME_BYTES[scheme]:
        raise Refused("unknown_scheme", f"certificate scheme {data[0]}")
    (count,) = struct.unpack_from(">H", data, 1)
    if len(data) != 3 + count * (2 + size):
        raise Refused("truncated", f"a certificate of {count} votes")
    votes = []
    for i in range(count):
        at = 3 + i * (2 + size)
        (voter,) = struct.unpack_from(">H", data, at)
        votes.append((voter, data[at + 2 : at + 2 + size]))
    voters = [v for v, _ in votes]
    if voters != sorted(set(voters)):
        raise Refused("non_canonical", "voters are not strictly ascending")
    return tuple(votes)


@dataclass(frozen=True)
class VerifiedVertex:
    """What a vertex document proved: its id, its author and, if certified, its voters."""

    id: bytes
    round: int
    author: Member
    voters: tuple[Member, ...]

    @property
    def certified(self) -> bool:
        """Whether a quorum of votes came with it."""
        return bool(self.voters)


def verify_vertex(network: Network, document: Mapping[str, Any]) -> VerifiedVertex:
    """Check a vertex document of the API against ``network``; Refused if anything fails.

    The vertex id, the author and the messages are computed here from the header bytes;
    the document's own fields only have to agree with them.
    """
    with _well_formed("vertex document"):
        return _verify_vertex(network, document)


def _verify_vertex(network: Network, document: Mapping[str, Any]) -> VerifiedVertex:
    header_bytes = bytes.fromhex(document["header"])
    header = parse_header(header_bytes)
    vid = vertex_id(header_bytes)
    if bytes.fromhex(document["id"]) != vid:
        raise Refused("wrong_id", "the id is not the hash of the header")
    if header.scheme != SCHEME_BYTES[network.scheme] or document["scheme"] != header.scheme:
        raise Refused("wrong_scheme", f"scheme {header.scheme} on a {network.scheme} network")
    if header.network != network.hash:
        raise Refused("wrong_network", "the header names another genesis")
    author = network.by_node_id(header.author)
    _check_fields(document, header, vid, network.scheme)
    signature = bytes.fromhex(document["signature"])
    if not verify_signature(network.scheme, author.public_key, vid, VERTEX_CONTEXT, signature):
        raise Refused("bad_signature", f"the signature of {author.name}")
    return VerifiedVertex(vid, header.round, author, _verify_votes(network, document, vid))


def _check_fields(document: Mapping[str, Any], header: Header, vid: bytes, scheme: str) -> None:
    """The document's decoded fields are those of its header."""
    expected = {
        "author": header.author.hex(),
        "round": header.round,
        "timestamp_ms": header.timestamp_ms,
        "parents": [p.hex() for p in header.parents],
    }
    for field, value in expected.items():
        if document[field] != value:
            raise Refused("mismatch", f"{field} is not the header's")
    tx_ids = b"".join(bytes.fromhex(t) for t in document["transactions"])
    if len(document["transactions"]) != header.tx_count:
        raise Refused("mismatch", "transactions: not the header's count")
    if blake2b_256(tx_ids, b"qudag:batch") != header.batch_root:
        raise Refused("bad_batch_root", "the transactions are not the header's batch")
    _check_signing("signing", document["signing"], scheme, vid, VERTEX_CONTEXT)
    if "vote_signing" in document:
        _check_signing("vote_signing", document["vote_signing"], scheme, vid, VOTE_CONTEXT)


def _check_signing(
    field: str, signing: Mapping[str, Any], scheme: str, message: bytes, context: bytes
) -> None:
    """A document's account of what a signature signs is the one computed here."""
    if signing["scheme"] != scheme or bytes.fromhex(signing["message"]) != message:
        raise Refused("mismatch", f"{field}: not the signed message on this scheme")
    expected = context.decode() if scheme == COMPOSITE else None
    if signing["context"] != expected:
        raise Refused("mismatch", f"{field}: context {signing['context']!r}")


def _verify_votes(network: Network, document: Mapping[str, Any], vid: bytes) -> tuple[Member, ...]:
    """The voters of the vertex's certificate, each vote verified; () when uncertified."""
    listed = [(v["validator"], bytes.fromhex(v["signature"])) for v in document["votes"]]
    if document["certificate"] is None:
        if listed:
            raise Refused("mismatch", "votes without a certificate")
        return ()
    votes = parse_certificate(bytes.fromhex(document["certificate"]), network.scheme)
    if list(votes) != listed:
        raise Refused("mismatch", "votes: not the certificate's")
    if len(votes) < network.quorum:
        raise Refused("bad_certificate", f"{len(votes)} votes, the quorum is {network.quorum}")
    voters = []
    for index, signature in votes:
        if index >= len(network.members):
            raise Refused("bad_certificate", f"voter {index} is not a validator")
        voter = network.members[index]
        if not verify_signature(network.scheme, voter.public_key, vid, VOTE_CONTEXT, signature):
            raise Refused("bad_certificate", f"the vote of {voter.name}")
        voters.append(voter)
    return tuple(voters)


# ------------------------------------------------------------------- checkpoints


@dataclass(frozen=True)
class VerifiedCheckpoint:
    """What a certified checkpoint document proved, and who signed it."""

    number: int
    round: int
    leader: bytes
    log_length: int
    log_hash: bytes
    window: tuple[bytes, ...]
    signers: tuple[Member, ...]


def verify_checkpoint(network: Network, document: Mapping[str, Any]) -> VerifiedCheckpoint:
    """Check a checkpoint document of the API against ``network``; Refused if anything
    fails. The fields, the digest and the window's root are computed here from the
    encoding and the window ids; the document's own fields only have to agree."""
    with _well_formed("checkpoint document"):
        return _verify_checkpoint(network, document)


def _verify_checkpoint(network: Network, document: Mapping[str, Any]) -> VerifiedCheckpoint:
    encoding = bytes.fromhex(document["encoding"])
    if len(encoding) != _CHECKPOINT.size:
        raise Refused("truncated", f"a checkpoint of {len(encoding)} bytes")
    fields = _CHECKPOINT.unpack(encoding)
    version, genesis, number, round_, leader, timestamp, length, log_hash, count, root = fields
    if version != 1:
        raise Refused("bad_version", f"checkpoint version {version}")
    if genesis != network.hash:
        raise Refused("wrong_network", "the checkpoint names another genesis")
    expected = {
        "genesis": genesis.hex(),
        "number": number,
        "round": round_,
        "leader": leader.hex(),
        "timestamp_ms": timestamp,
        "log_length": length,
        "log_hash": log_hash.hex(),
        "window_count": count,
        "window_root": root.hex(),
    }
    for field, value in expected.items():
        if document[field] != value:
            raise Refused("mismatch", f"{field} is not the encoding's")
    window = tuple(bytes.fromhex(i) for i in document["window"])
    if len(set(window)) != count or blake2b_256(b"".join(sorted(window)), b"qudag:window") != root:
        raise Refused("bad_window", "the window ids are not the checkpoint's")
    digest = blake2b_256(encoding, b"qudag:checkpoint")
    if bytes.fromhex(document["digest"]) != digest:
        raise Refused("mismatch", "digest is not the hash of the encoding")
    _check_signing("signing", document["signing"], network.scheme, digest, CHECKPOINT_CONTEXT)
    signers = _verify_checkpoint_signatures(network, document, digest)
    return VerifiedCheckpoint(number, round_, leader, length, log_hash, window, signers)


def _verify_checkpoint_signatures(
    network: Network, document: Mapping[str, Any], digest: bytes
) -> tuple[Member, ...]:
    """The signers of the checkpoint's certificate, each signature verified."""
    signatures = parse_certificate(bytes.fromhex(document["certificate"]), network.scheme)
    listed = [(s["validator"], bytes.fromhex(s["signature"])) for s in document["signatures"]]
    if list(signatures) != listed:
        raise Refused("mismatch", "signatures: not the certificate's")
    if len(signatures) < network.quorum:
        raise Refused(
            "bad_checkpoint", f"{len(signatures)} signatures, the quorum is {network.quorum}"
        )
    signers = []
    for index, signature in signatures:
        if index >= len(network.members):
            raise Refused("bad_checkpoint", f"signer {index} is not a validator")
        member = network.members[index]
        if not verify_signature(
            network.scheme, member.public_key, digest, CHECKPOINT_CONTEXT, signature
        ):
            raise Refused("bad_checkpoint", f"the signature of {member.name}")
        signers.append(member)
    return tuple(signers)
