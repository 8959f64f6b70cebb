"""A network's definition: its id and its ordered validator set."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

from qudag_node.core import codec
from qudag_node.core.crypto import genesis_hash
from qudag_node.core.errors import InputRejected, Reason
from qudag_node.core.types import HASH_SIZE, GenesisHash, PublicKey

GENESIS_VERSION = 1
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


@dataclass(frozen=True)
class Genesis:
    """Network id plus the ordered validator set; its hash binds every vertex."""

    network_id: str
    validators: tuple[Validator, ...]
    hash: GenesisHash = field(init=False, repr=False, compare=False)
    _index: dict[PublicKey, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not is_valid_name(self.network_id):
            raise ValueError(f"network id {self.network_id!r}: use {NAME_RULE}")
        if not self.validators:
            raise ValueError("a genesis needs at least one validator")
        if len(self.validators) > 0xFFFF:
            raise ValueError("too many validators")
        names = [v.name for v in self.validators]
        keys = [v.public_key for v in self.validators]
        for v in self.validators:
            if not is_valid_name(v.name):
                raise ValueError(f"validator name {v.name!r}: use {NAME_RULE}")
            if len(v.public_key) != HASH_SIZE:
                raise ValueError(f"validator {v.name}: a public key is {HASH_SIZE} bytes")
        if len(set(names)) != len(names) or len(set(keys)) != len(keys):
            raise ValueError("validator names and keys must be unique")
        object.__setattr__(self, "hash", genesis_hash(self.encode()))
        object.__setattr__(self, "_index", {k: i for i, k in enumerate(keys)})

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

    def index_of(self, key: PublicKey) -> int | None:
        """The validator index of ``key``, or None for a non-validator."""
        return self._index.get(key)

    def leader(self, round_: int) -> PublicKey:
        """The leader of an even round, by a fixed round-robin schedule."""
        return self.validators[(round_ // 2) % self.n].public_key

    def encode(self) -> bytes:
        """Canonical bytes of this genesis (what its hash covers)."""
        net = self.network_id.encode()
        parts = [codec.u8(GENESIS_VERSION), codec.u8(len(net)), net, codec.u16(self.n)]
        for v in self.validators:
            name = v.name.encode()
            parts += [codec.u8(len(name)), name, v.public_key]
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes) -> Genesis:
        """Parse canonical genesis bytes."""
        r = codec.Reader(data)
        if r.u8("genesis version") != GENESIS_VERSION:
            raise InputRejected(Reason.BAD_VERSION, "unknown genesis version")
        network_id = _text(r.fixed(r.u8("network id length"), "network id"))
        validators = []
        for _ in range(r.u16("validator count")):
            name = _text(r.fixed(r.u8("name length"), "validator name"))
            validators.append(Validator(name, PublicKey(r.fixed(HASH_SIZE, "public key"))))
        r.finish("genesis")
        try:
            return cls(network_id, tuple(validators))
        except ValueError as e:
            raise InputRejected(Reason.NON_CANONICAL, str(e)) from e

    @classmethod
    def solo(cls, network_id: str, name: str, key: PublicKey) -> Genesis:
        """A one-validator network made of a single node."""
        return cls(network_id, (Validator(name, key),))


def _text(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError as e:
        raise InputRejected(Reason.NON_CANONICAL, "names must be UTF-8") from e
