"""The node key file: created once, mode 0600; a path that holds no key is refused
with a NodeFailure naming it, and a FIFO never blocks the read."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from qudag_node.config import load_settings
from qudag_node.core.crypto import PRIVATE_KEY_SIZES, Scheme, Signer
from qudag_node.core.genesis import Genesis, Validator
from qudag_node.failure import NodeFailure
from qudag_node.genesis_file import format_validator_list, genesis_to_json
from qudag_node.keyfile import KEY_FILENAME, key_file, load_signer, read_key, write_key


@pytest.mark.parametrize("scheme", list(Scheme), ids=lambda s: s.label)
def test_a_missing_key_file_is_created_once_mode_0600(tmp_path: Path, scheme: Scheme) -> None:
    path = tmp_path / KEY_FILENAME
    assert read_key(path) is None
    signer, created = key_file(path, scheme)
    assert created
    assert signer.scheme is scheme
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # the seeds only: 32 bytes for Ed25519, ML-DSA's 32-byte seed and Ed25519's for both
    assert path.read_text().strip() == signer.seed().hex()
    assert len(signer.seed()) == PRIVATE_KEY_SIZES[scheme]
    again, created_again = key_file(path, scheme)
    assert not created_again
    assert again.public_key == signer.public_key


def test_a_kept_key_is_read_whatever_scheme_is_asked_for(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILENAME
    kept, _ = key_file(path, Scheme.ED25519)
    again, created = key_file(path, Scheme.MLDSA65_ED25519)
    assert (again.public_key, created) == (kept.public_key, False)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"not hex\n", "does not hold a private key \\(64 or 128 hex characters\\)"),
        (b"ab" * 16, "does not hold"),
        (b"ab" * 48, "does not hold"),
    ],
)
def test_a_file_without_a_key_is_refused(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / KEY_FILENAME
    path.write_bytes(content)
    with pytest.raises(NodeFailure, match=expected):
        key_file(path, Scheme.MLDSA65_ED25519)


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILENAME
    os.mkfifo(path)
    with pytest.raises(NodeFailure, match=str(path)):
        read_key(path)


def test_load_signer_makes_a_new_key_but_writes_nothing(tmp_path: Path) -> None:
    settings = load_settings({"QUDAG_DATA_DIR": str(tmp_path)})
    signer, new = load_signer(settings)
    assert new
    assert not (tmp_path / KEY_FILENAME).exists()
    key_file(tmp_path / KEY_FILENAME, Scheme.MLDSA65_ED25519)
    kept, new_again = load_signer(settings)
    assert not new_again
    assert kept.public_key != signer.public_key  # the file's key, not the unsaved one


ED25519_VALIDATORS = (Validator("v1", Signer(b"\x01" * 32).public_key),)
COMPOSITE_VALIDATORS = (Validator("v1", Signer(b"\x01" * 64).public_key),)


@pytest.mark.parametrize(
    ("env", "scheme"),
    [
        ({}, Scheme.MLDSA65_ED25519),  # a node alone makes a new network
        ({"QUDAG_VALIDATORS": format_validator_list(COMPOSITE_VALIDATORS)}, Scheme.MLDSA65_ED25519),
        ({"QUDAG_VALIDATORS": format_validator_list(ED25519_VALIDATORS)}, Scheme.ED25519),
    ],
    ids=["alone", "composite-validators", "ed25519-validators"],
)
def test_a_node_without_a_key_makes_one_in_its_networks_scheme(
    tmp_path: Path, env: dict[str, str], scheme: Scheme
) -> None:
    signer, new = load_signer(load_settings({"QUDAG_DATA_DIR": str(tmp_path), **env}))
    assert (signer.scheme, new) == (scheme, True)


@pytest.mark.parametrize("scheme", list(Scheme), ids=lambda s: s.label)
def test_a_node_without_a_key_makes_one_in_its_genesis_files_scheme(
    tmp_path: Path, scheme: Scheme
) -> None:
    validators = ED25519_VALIDATORS if scheme is Scheme.ED25519 else COMPOSITE_VALIDATORS
    path = tmp_path / "genesis.json"
    path.write_text(genesis_to_json(Genesis("lab-net", validators, scheme)))
    settings = load_settings({"QUDAG_DATA_DIR": str(tmp_path), "QUDAG_GENESIS": str(path)})
    signer, _ = load_signer(settings)
    assert signer.scheme is scheme
    assert settings.genesis(signer.public_key).scheme is scheme


@pytest.mark.parametrize("scheme", list(Scheme), ids=lambda s: s.label)
def test_node_private_key_of_either_size_is_the_node_key(tmp_path: Path, scheme: Scheme) -> None:
    key = Signer(b"\x05" * PRIVATE_KEY_SIZES[scheme])
    settings = load_settings(
        {"QUDAG_DATA_DIR": str(tmp_path), "NODE_PRIVATE_KEY": key.seed().hex()}
    )
    signer, new = load_signer(settings)
    assert (signer.scheme, signer.public_key, new) == (scheme, key.public_key, False)


def test_a_kept_ed25519_key_file_stays_the_node_key(tmp_path: Path) -> None:
    """A data dir made before schemes were named keeps its Ed25519 key: a node alone
    goes on with its Ed25519 network, whatever the default of new networks is."""
    old = Signer(b"\x09" * 32)
    write_key(tmp_path / KEY_FILENAME, old)
    settings = load_settings({"QUDAG_DATA_DIR": str(tmp_path), "NODE_ID": "solo"})
    signer, new = load_signer(settings)
    assert (signer.public_key, new) == (old.public_key, False)
    assert settings.genesis(signer.public_key) == Genesis.solo(
        settings.effective_network_id, "solo", old.public_key
    )
