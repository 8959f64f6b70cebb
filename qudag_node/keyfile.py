"""The node key: ``NODE_PRIVATE_KEY``, or the file ``DATA_DIR/node.key`` (hex: 64
characters for an Ed25519 key, 128 for an ML-DSA-65 + Ed25519 one; mode 0600),
created once, durably, when there is none."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from qudag_node.config import Settings, read_small_file
from qudag_node.core.crypto import PRIVATE_KEY_SIZES, Scheme, Signer
from qudag_node.failure import NodeFailure
from qudag_node.logs import get_logger

KEY_FILENAME = "node.key"
#: Largest node key file read (the key is at most 128 hex characters and a newline).
MAX_KEY_FILE_BYTES = 4096
log = get_logger("qudag.node")


def load_signer(settings: Settings) -> tuple[Signer, bool]:
    """The node key: NODE_PRIVATE_KEY, else DATA_DIR/node.key, else a new key in the
    configured network's scheme; and whether it is new, to be kept with
    :func:`write_key` once the data dir is accepted. Writes nothing."""
    if settings.node_private_key is not None:
        return Signer(bytes.fromhex(settings.node_private_key.reveal())), False
    path = settings.data_path / KEY_FILENAME
    signer = read_key(path)
    if signer is None:
        return new_signer(settings.key_scheme()), True
    if path.stat().st_mode & 0o077:
        log.warning("node_key_readable_by_others", path=str(path), hint="chmod 600")
    return signer, False


def new_signer(scheme: Scheme) -> Signer:
    """A new random key of ``scheme``."""
    return Signer.generate(scheme, secrets.token_bytes(PRIVATE_KEY_SIZES[scheme]))


def read_key(path: Path) -> Signer | None:
    """The key kept in ``path`` (hex), or None when there is no file.
    Never blocks on a FIFO; raises :class:`NodeFailure` for a path that is not a
    regular file holding a key."""
    try:
        data = read_small_file(path, MAX_KEY_FILE_BYTES)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise NodeFailure(f"{path} is {e.strerror}") from None
    try:
        return Signer(bytes.fromhex(data.decode("ascii").strip()))
    except ValueError:  # also a UnicodeDecodeError, or a key of the wrong length
        raise NodeFailure(
            f"{path} does not hold a private key (64 or 128 hex characters)"
        ) from None


def write_key(path: Path, signer: Signer) -> None:
    """Keep ``signer``'s seed in the new file ``path``, mode 0600, durably (its name
    too)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(signer.seed().hex() + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the new file's name is durable too
    finally:
        os.close(directory)


def key_file(path: Path, scheme: Scheme) -> tuple[Signer, bool]:
    """The key kept in ``path``, and whether it was created now: a missing file is
    created once (a key of ``scheme``), mode 0600, durably. Raises
    :class:`NodeFailure` for a path that does not hold a key."""
    signer = read_key(path)
    if signer is not None:
        return signer, False
    signer = new_signer(scheme)
    write_key(path, signer)
    return signer, True
