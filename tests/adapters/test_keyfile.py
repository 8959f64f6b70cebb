"""The node key file: created once, mode 0600; a path that holds no key is refused
with a NodeFailure naming it, and a FIFO never blocks the read."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from qudag_node.config import load_settings
from qudag_node.failure import NodeFailure
from qudag_node.keyfile import KEY_FILENAME, key_file, load_signer, read_key


def test_a_missing_key_file_is_created_once_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILENAME
    assert read_key(path) is None
    signer, created = key_file(path)
    assert created
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again, created_again = key_file(path)
    assert not created_again
    assert again.public_key == signer.public_key


@pytest.mark.parametrize(
    ("content", "expected"),
    [(b"not hex\n", "does not hold a 64-hex-character"), (b"ab" * 16, "does not hold")],
)
def test_a_file_without_a_key_is_refused(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / KEY_FILENAME
    path.write_bytes(content)
    with pytest.raises(NodeFailure, match=expected):
        key_file(path)


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
    key_file(tmp_path / KEY_FILENAME)
    kept, new_again = load_signer(settings)
    assert not new_again
    assert kept.public_key != signer.public_key  # the file's key, not the unsaved one
