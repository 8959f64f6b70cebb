"""A network's definition: its id, its signature scheme and its ordered validator set.

Canonical encoding (integers big-endian)::

    version 1 (ed25519):          1:u8  network_len:u8 network_id  count:u16
                                  (name_len:u8 name public_key:32) * count
    version 2 (another scheme):   2:u8  scheme:u8  network_len:u8 network_id  count:u16
                                  (name_len:u8 name public_key:(scheme's size)) * count

An Ed25519 genesis keeps version 1, so its hash (and every network made before
schemes were named) is unchanged.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

from qudag_node.core import codec
from qudag_node.core.crypto import (
    PUBLIC_KEY_SIZES,
    Purpose,
    Scheme,
    SignatureCheck,
    genesis_hash,
    named_scheme,
    node_id,
    scheme_of_public_key,
)
from qudag_node.core.errors import InputRejected, Reason
from qudag_node.core.types import GenesisHash, NodeId, PublicKey

_ED25519_VERSION = 1
_SCHEMED_VERSION = 2
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
NAME_RULE = "1-63 of A-Z a-z 0-9 . _ - (starting with a letter or digit)"


def is_valid_name(text: str) -> bool:
    """True for a valid network id or validator name (see :data:`NAME_RULE`)."""
    return _NAME.fullmatch(text) is not None


@dataclass(frozen=True, slots=True)
class Validator:
    """One member of the validator set."""

    name: str
    public_key: PublicKey

    def id(self, scheme: Scheme) -> NodeId:
        """The validator's node id on a network of ``scheme``."""
        return node_id(scheme, self.public_key)


@dataclass(frozen=True)
class Genesis:
    """Network id, signature scheme and the ordered validator set; its hash binds every
    vertex."""

    network_id: str
    validators: tuple[Validator, ...]
    scheme: Scheme = Scheme.ED25519
    hash: GenesisHash = field(init=False, repr=False, compare=False)
    ids: tuple[NodeId, ...] = field(init=False, repr=False, compare=False)
    _index: dict[NodeId, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not is_valid_name(self.network_id):
            raise ValueError(f"network id {self.network_id!r}: use {NAME_RULE}")
        if not self.validators:
            raise ValueError("a genesis needs at least one validator")
        if len(self.validators) > 0xFFFF:
            raise ValueError("too many validators")
        names = [v.name for v in self.validators]
        size = PUBLIC_KEY_SIZES[self.scheme]
        for v in self.validators:
            if not is_valid_name(v.name):
                raise ValueError(f"validator name {v.name!r}: use {NAME_RULE}")
            if len(v.public_key) != size:
                raise ValueError(
                    f"validator {v.name}: a {self.scheme.label} public key is {size} bytes"
                )
        ids = tuple(v.id(self.scheme) for v in self.validators)
        if len(set(names)) != len(names) or len(set(ids)) != len(ids):
            raise ValueError("validator names and keys must be unique")
        object.__setattr__(self, "hash", genesis_hash(self.encode()))
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "_index", {k: i for i, k in enumerate(ids)})

    @functools.cached_property
    def n(self) -> int:
        """Number of validators."""
        return len(self.validators)

    @functools.cached_property
    def f(self) -> int:
        """Most faulty validators tolerated: the largest f with n >= 3f + 1."""
        return (self.n - 1) // 3

    @functools.cached_property
    def quorum(self) -> int:
        """Distinct validators a round needs: n - f (2f + 1 when n = 3f + 1)."""
        return self.n - self.f

    def index_of(self, node: NodeId) -> int | None:
        """The validator index of ``node``, or None for a non-validator."""
        return self._index.get(node)

    def key_of(self, node: NodeId) -> PublicKey | None:
        """The public key of validator ``node``, or None for a non-validator."""
        index = self._index.get(node)
        return None if index is None else self.validators[index].public_key

    def signature_check(
        self, node: NodeId, purpose: Purpose, message: bytes, signature: bytes
    ) -> SignatureCheck | None:
        """How validator ``node``'s signature for ``purpose`` is checked on this network
        (None for a non-validator)."""
        key = self.key_of(node)
        if key is None:
            return None
        return SignatureCheck(self.scheme, purpose, key, message, signature)

    def vote_check(
        self, voter: int, message: bytes, signature: bytes, purpose: Purpose = Purpose.VOTE
    ) -> SignatureCheck | None:
        """How the signature of the validator at index ``voter`` over ``message`` (a
        vertex id it votes for, or a checkpoint digest) is checked (None when there is
        no such validator)."""
        if voter >= self.n:
            return None
        key = self.validators[voter].public_key
        return SignatureCheck(self.scheme, purpose, key, message, signature)

    def leader(self, round_: int) -> NodeId:
        """The leader of an even round, by a fixed round-robin schedule."""
        return self.ids[(round_ // 2) % self.n]

    def encode(self) -> bytes:
        """Canonical bytes of this genesis (what its hash covers)."""
        net = self.network_id.encode()
        if self.scheme is Scheme.ED25519:
            parts = [codec.u8(_ED25519_VERSION)]
        else:
            parts = [codec.u8(_SCHEMED_VERSION), codec.u8(self.scheme)]
        parts += [codec.u8(len(net)), net, codec.u16(self.n)]
        for v in self.validators:
            name = v.name.encode()
            parts += [codec.u8(len(name)), name, v.public_key]
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes) -> Genesis:
        """Parse canonical genesis bytes."""
        r = codec.Reader(data)
        version = r.u8("genesis version")
        if version == _ED25519_VERSION:
            scheme = Scheme.ED25519
        elif version == _SCHEMED_VERSION:
            scheme = named_scheme(r.u8("genesis scheme"))
        else:
            raise InputRejected(Reason.BAD_VERSION, "unknown genesis version")
        network_id = _text(r.fixed(r.u8("network id length"), "network id"))
        validators = []
        size = PUBLIC_KEY_SIZES[scheme]
        for _ in range(r.u16("validator count")):
            name = _text(r.fixed(r.u8("name length"), "validator name"))
            validators.append(Validator(name, PublicKey(r.fixed(size, "public key"))))
        r.finish("genesis")
        try:
            return cls(network_id, tuple(validators), scheme)
        except ValueError as e:
            raise InputRejected(Reason.NON_CANONICAL, str(e)) from e

    @classmethod
    def solo(cls, network_id: str, name: str, key: PublicKey) -> Genesis:
        """A one-validator network made of a single node (in the scheme its key's size
        names)."""
        return cls(network_id, (Validator(name, key),), scheme_of_public_key(key))


def _text(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError as e:
        raise InputRejected(Reason.NON_CANONICAL, "names must be UTF-8") from e
