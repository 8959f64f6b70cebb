"""Checkpoints: the canonical encoding, the window commitment, and certification."""

from __future__ import annotations

import dataclasses

import pytest

from qudag_node.core.certificate import make_certificate
from qudag_node.core.checkpoint import (
    CHECKPOINT_SIZE,
    CertifiedCheckpoint,
    Checkpoint,
    check_certified,
    decode_certified,
    decode_checkpoint,
    window_root,
)
from qudag_node.core.crypto import Purpose, Scheme, SequentialVerifier, Signer
from qudag_node.core.errors import InputRejected, Reason
from qudag_node.core.genesis import Genesis, Validator
from qudag_node.core.types import VertexId

IDS = [VertexId(bytes([k]) * 32) for k in (3, 1, 2)]


def committee(scheme: Scheme, n: int = 4) -> tuple[Genesis, list[Signer]]:
    signers = [Signer.generate(scheme, bytes([k + 1]) * 64) for k in range(n)]
    genesis = Genesis(
        "cp", tuple(Validator(f"v{k}", s.public_key) for k, s in enumerate(signers)), scheme
    )
    return genesis, signers


def checkpoint(g: Genesis, **changes: object) -> Checkpoint:
    base = Checkpoint(
        g.hash,
        3,
        301,
        VertexId(b"\x07" * 32),
        1_700_000_000_000,
        9_000,
        b"\x05" * 32,
        len(IDS),
        window_root(IDS),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def certify(
    cp: Checkpoint, genesis: Genesis, signers: list[Signer], voters: range
) -> CertifiedCheckpoint:
    votes = {v: signers[v].sign(Purpose.CHECKPOINT, cp.digest) for v in voters}
    return CertifiedCheckpoint(cp, make_certificate(genesis.scheme, votes))


def test_encoding_round_trips_and_has_its_size() -> None:
    genesis, _ = committee(Scheme.ED25519)
    cp = checkpoint(genesis)
    assert len(cp.encode()) == CHECKPOINT_SIZE
    assert decode_checkpoint(cp.encode()) == cp
    with pytest.raises(InputRejected) as e:
        decode_checkpoint(cp.encode() + b"\x00")
    assert e.value.reason is Reason.TRAILING_BYTES


def test_window_root_ignores_order_and_binds_every_id() -> None:
    genesis, _ = committee(Scheme.ED25519)
    cp = checkpoint(genesis)
    assert cp.holds_window(reversed(IDS))
    assert not cp.holds_window(IDS[:2])
    assert not cp.holds_window([*IDS[:2], VertexId(b"\x09" * 32)])


@pytest.mark.parametrize("scheme", list(Scheme))
def test_a_quorum_certifies_and_anything_less_or_other_does_not(scheme: Scheme) -> None:
    genesis, signers = committee(scheme)
    cp = checkpoint(genesis)
    good = certify(cp, genesis, signers, range(3))
    assert decode_certified(good.encode()) == good
    check_certified(good, genesis, SequentialVerifier())
    cases = {
        Reason.BAD_CHECKPOINT: [
            certify(cp, genesis, signers, range(2)),  # below quorum
            # signatures of another checkpoint (a validator that signed a wrong one)
            CertifiedCheckpoint(checkpoint(genesis, log_length=9_001), good.certificate),
        ],
        Reason.WRONG_NETWORK: [
            certify(checkpoint(genesis, genesis=b"\x00" * 32), genesis, signers, range(3))
        ],
    }
    for reason, bad in cases.items():
        for certified in bad:
            with pytest.raises(InputRejected) as e:
                check_certified(certified, genesis, SequentialVerifier())
            assert e.value.reason is reason


def test_a_vote_for_a_vertex_is_no_checkpoint_signature() -> None:
    genesis, signers = committee(Scheme.MLDSA65_ED25519)
    cp = checkpoint(genesis)
    votes = {v: signers[v].sign(Purpose.VOTE, cp.digest) for v in range(3)}
    with pytest.raises(InputRejected) as e:
        check_certified(
            CertifiedCheckpoint(cp, make_certificate(genesis.scheme, votes)),
            genesis,
            SequentialVerifier(),
        )
    assert e.value.reason is Reason.BAD_CHECKPOINT
