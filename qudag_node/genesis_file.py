"""Genesis files and validator lists: a network's genesis in human-editable form.

A genesis file is JSON::

    {
      "network_id": "qudag-testnet",
      "scheme": "mldsa65-ed25519",
      "validators": [{"name": "node1", "public_key": "<hex>"}, ...],
      "hash": "<64 hex>"
    }

``hash`` is informational: :func:`genesis_to_json` writes it, and when a file carries
it, it must match the contents. ``scheme`` names the signature scheme; a file without
it (as written before schemes were named) is an ``ed25519`` network. A validator list
is the short form ``name=pubkey,name=pubkey`` (commas or newlines between entries),
whose keys' size names the scheme. Public keys are hex (64 characters for Ed25519,
3,968 for the composite); they are written in lowercase.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from qudag_node.core.crypto import SCHEME_LABELS, Scheme, scheme_of_public_key
from qudag_node.core.genesis import NAME_RULE, Genesis, Validator, is_valid_name
from qudag_node.core.types import PublicKey

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")
_FIELDS = ("network_id", "scheme", "validators", "hash")
_VALIDATOR_FIELDS = ("name", "public_key")


class GenesisFileError(ValueError):
    """A genesis file or validator list is invalid; the message is one line."""


def genesis_to_json(genesis: Genesis) -> str:
    """The genesis file text of ``genesis``: stable, indented, ending in a newline."""
    document = {
        "network_id": genesis.network_id,
        "scheme": genesis.scheme.label,
        "validators": [
            {"name": v.name, "public_key": v.public_key.hex()} for v in genesis.validators
        ],
        "hash": genesis.hash.hex(),
    }
    return json.dumps(document, indent=2) + "\n"


def genesis_from_json(text: str, source: str) -> Genesis:
    """Parse genesis file text; ``source`` names the file in error messages.

    Raises :class:`GenesisFileError` for anything but a complete, valid genesis whose
    ``hash`` field, when present, matches its contents.
    """
    prefix = f"genesis file {source}"
    try:
        document = _parse_json(text)
        genesis = _genesis(document)
    except GenesisFileError as e:
        raise GenesisFileError(f"{prefix}: {e}") from None
    if "hash" in document:
        written = document["hash"]
        if not isinstance(written, str) or not _HEX64.fullmatch(written):
            raise GenesisFileError(f"{prefix}: hash must be 64 hex characters")
        if bytes.fromhex(written) != genesis.hash:
            raise GenesisFileError(f"{prefix}: hash does not match its contents")
    return genesis


def parse_validator_list(raw: str) -> tuple[Validator, ...]:
    """Parse ``name=pubkey,name=pubkey`` (commas or newlines); empty text gives ``()``.

    Raises :class:`GenesisFileError` naming the first bad entry by its position.
    """
    validators = []
    entries = (e.strip() for e in raw.replace("\n", ",").split(","))
    for number, entry in enumerate((e for e in entries if e), start=1):
        name, sep, key = entry.partition("=")
        where = f"entry {number}"
        if not sep:
            raise GenesisFileError(f"{where} is not NAME=PUBLIC_KEY")
        validators.append(_validator(where, name.strip(), key.strip()))
    _check_unique(validators, "entry")
    return tuple(validators)


def validators_genesis(network_id: str, validators: tuple[Validator, ...]) -> Genesis:
    """The genesis of a validator list, in the scheme its keys' size names; raises
    ValueError (keys of two schemes, say)."""
    return Genesis(network_id, validators, scheme_of_public_key(validators[0].public_key))


def format_validator_list(validators: Iterable[Validator]) -> str:
    """The short form ``name=pubkey,name=pubkey`` that :func:`parse_validator_list` reads."""
    return ",".join(f"{v.name}={v.public_key.hex()}" for v in validators)


def _parse_json(text: str) -> dict[str, Any]:
    try:
        document = json.loads(text, object_pairs_hook=_no_duplicate_fields)
    except json.JSONDecodeError as e:
        raise GenesisFileError(f"not valid JSON: {e.msg} at line {e.lineno}") from None
    except RecursionError:  # the parser recurses once per level of nesting
        raise GenesisFileError("not valid JSON: nested too deeply") from None
    if not isinstance(document, dict):
        raise GenesisFileError("must hold one JSON object")
    unknown = sorted(set(document) - set(_FIELDS))
    if unknown:
        raise GenesisFileError(f"unknown field {unknown[0]!r}")
    return document


def _no_duplicate_fields(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise GenesisFileError(f"field {key!r} appears twice")
        out[key] = value
    return out


def _genesis(document: dict[str, Any]) -> Genesis:
    network_id = document.get("network_id")
    if not isinstance(network_id, str):
        raise GenesisFileError("network_id must be a string")
    if not is_valid_name(network_id):
        raise GenesisFileError(f"network_id must be {NAME_RULE}")
    entries = document.get("validators")
    if not isinstance(entries, list) or not entries:
        raise GenesisFileError("validators must be a non-empty list")
    scheme = _scheme(document.get("scheme", Scheme.ED25519.label))
    validators = [_validator_object(n, entry) for n, entry in enumerate(entries, start=1)]
    _check_unique(validators, "validator")
    try:
        return Genesis(network_id, tuple(validators), scheme)
    except ValueError as e:
        raise GenesisFileError(str(e)) from None


def _scheme(label: object) -> Scheme:
    if not isinstance(label, str) or label not in SCHEME_LABELS:
        raise GenesisFileError(f"scheme must be one of {', '.join(SCHEME_LABELS)}")
    return Scheme.from_label(label)


def _validator_object(number: int, entry: object) -> Validator:
    where = f"validator {number}"
    if not isinstance(entry, dict):
        raise GenesisFileError(f"{where} must be an object with name and public_key")
    unknown = sorted(set(entry) - set(_VALIDATOR_FIELDS))
    if unknown:
        raise GenesisFileError(f"{where}: unknown field {unknown[0]!r}")
    name, key = entry.get("name"), entry.get("public_key")
    if not isinstance(name, str):
        raise GenesisFileError(f"{where}: name must be a string")
    if not isinstance(key, str):
        raise GenesisFileError(f"{where}: public_key must be a string")
    return _validator(where, name, key)


def _validator(where: str, name: str, key: str) -> Validator:
    """One validator; ``where`` locates it in error messages (a bad name is not shown)."""
    if not is_valid_name(name):
        raise GenesisFileError(f"{where}: name must be {NAME_RULE}")
    try:
        if not _HEX.fullmatch(key):
            raise ValueError("a public key is hex")
        scheme_of_public_key(raw := bytes.fromhex(key))
    except ValueError as e:
        raise GenesisFileError(f"{where} ({name}): {e}") from None
    return Validator(name, PublicKey(raw))


def _check_unique(validators: Iterable[Validator], label: str) -> None:
    names: dict[str, str] = {}
    keys: dict[bytes, str] = {}
    for number, v in enumerate(validators, start=1):
        where = f"{label} {number} ({v.name})"
        if v.name in names:
            raise GenesisFileError(f"{where}: name already used by {names[v.name]}")
        if v.public_key in keys:
            raise GenesisFileError(f"{where}: public key already used by {keys[v.public_key]}")
        names[v.name] = keys[v.public_key] = where
