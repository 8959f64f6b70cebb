"""The engine's side of checkpoints: signing the ones it computes, and counting the
signatures of the others until a quorum certifies them.

A validator signs only the checkpoint it computed itself, right after the commit
that made it, and sends its signature to every peer (message 12). A signature counts
only when it verifies over the digest of the checkpoint this node computed for that
number; one over another digest is refused as ``bad_checkpoint`` (its signer computed
something else: a faulty or Byzantine validator). ``quorum`` distinct validators'
signatures, ours included, certify the checkpoint.

Signatures for a number not computed yet (a peer committed a little ahead of us) are
held, one per voter, for the next :data:`HOLD_AHEAD` numbers only, and checked once
the checkpoint is computed. While our latest checkpoint is not certified, a validator
sends its signature again every retry interval to the validators whose signatures it
lacks; a validator that certified a number already answers a signature for it with
its own, once per peer and number. So a validator that was cut off while the others
certified still gathers a quorum when it comes back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from qudag_node.core.certificate import Certificate, make_certificate
from qudag_node.core.checkpoint import Checkpoint, signature_check
from qudag_node.core.crypto import SIGNATURE_SIZES, Purpose, SignatureCheck, Signer, Verifier
from qudag_node.core.errors import InputRejected, Reason
from qudag_node.core.events import CheckpointCertified, CheckpointMade
from qudag_node.core.genesis import Genesis
from qudag_node.core.messages import CheckpointSignatureMessage
from qudag_node.core.types import PeerId, VertexId

#: Numbers past the latest computed checkpoint whose signatures are held.
HOLD_AHEAD = 4
#: Computed checkpoints (the latest ones) that still take signatures.
KEEP = 4


@dataclass(frozen=True, slots=True)
class RestoredCheckpoint:
    """A checkpoint this node keeps, as the store returns it at start-up."""

    checkpoint: Checkpoint
    certified: bool


@dataclass(slots=True)
class _Signing:
    """The signatures gathered for one computed checkpoint."""

    checkpoint: Checkpoint
    signatures: dict[int, bytes] = field(default_factory=dict)
    own: CheckpointSignatureMessage | None = None  # our signature (validators)
    certified: bool = False
    answered: set[PeerId] = field(default_factory=set)
    sent_at: float = 0.0


#: A message to send: to one peer, or to every peer (None).
Send = tuple[PeerId | None, CheckpointSignatureMessage]


class CheckpointSigning:
    """The computed checkpoints that take signatures, and the signatures held ahead.

    Each method (and the restoring constructor) leaves what it produced in
    :attr:`facts`, :attr:`sends` and :attr:`refused`, which the engine takes after the
    call.
    """

    def __init__(
        self,
        genesis: Genesis,
        signer: Signer,
        verifier: Verifier,
        committed_number: int,
        restored: Sequence[RestoredCheckpoint] = (),
    ) -> None:
        self._genesis = genesis
        self._signer = signer
        self._index = genesis.index_of(signer.node_id)
        self._verifier = verifier
        self._signing: dict[int, _Signing] = {}
        self._ahead: dict[int, dict[int, tuple[PeerId, CheckpointSignatureMessage]]] = {}
        self._top = committed_number  # the latest number computed (or passed)
        self._certified: Checkpoint | None = None  # the latest certified here
        self.facts: list[CheckpointMade | CheckpointCertified] = []
        self.sends: list[Send] = []
        self.refused: list[tuple[PeerId, InputRejected]] = []
        for kept in sorted(restored, key=lambda k: k.checkpoint.number)[-KEEP:]:
            signing = _Signing(kept.checkpoint, certified=kept.certified)
            if kept.certified:
                self._certified = kept.checkpoint
            self._signing[kept.checkpoint.number] = signing
            self._top = max(self._top, kept.checkpoint.number)
            if not kept.certified:  # computed here in an earlier life: sign it again
                self._sign(signing)
                self._certify_if_quorum(signing)

    @property
    def latest_certified(self) -> Checkpoint | None:
        """The latest checkpoint certified here, if any."""
        return self._certified

    def made(self, checkpoint: Checkpoint, window: Sequence[VertexId], now: float) -> None:
        """We computed ``checkpoint`` (its window's ids are ``window``): keep it, sign
        it, send the signature, and count the signatures held for it."""
        number = checkpoint.number
        self.facts.append(CheckpointMade(checkpoint, tuple(window)))
        signing = _Signing(checkpoint, sent_at=now)
        self._signing[number] = signing
        self._top = max(self._top, number)
        for old in sorted(self._signing)[:-KEEP]:
            del self._signing[old]
        self._sign(signing)
        if signing.own is not None:
            self.sends.append((None, signing.own))
        for past in [n for n in self._ahead if n <= number]:
            held = self._ahead.pop(past)
            if past == number:
                for voter in sorted(held):
                    peer, message = held[voter]
                    self._take(peer, message, signing)
        self._certify_if_quorum(signing)

    def receive(self, peer: PeerId, message: CheckpointSignatureMessage) -> None:
        """A peer's message 12. Raises :class:`InputRejected` for a signature over
        another digest (``bad_checkpoint``) or one that does not verify."""
        number = message.number
        signing = self._signing.get(number)
        if signing is None:
            if self._top < number <= self._top + HOLD_AHEAD and message.voter < self._genesis.n:
                self._ahead.setdefault(number, {}).setdefault(message.voter, (peer, message))
            return  # too old, or too far ahead to hold: the sender retries
        was_certified = signing.certified
        self._check(message, signing)
        if not was_certified:
            signing.signatures.setdefault(message.voter, message.signature)
            self._certify_if_quorum(signing)
        elif signing.own is not None and peer not in signing.answered:
            signing.answered.add(peer)
            self.sends.append((peer, signing.own))

    def checks(self, message: CheckpointSignatureMessage) -> list[SignatureCheck]:
        """The signature check :meth:`receive` will make for ``message``, if any."""
        signing = self._signing.get(message.number)
        if signing is None or message.digest != signing.checkpoint.digest:
            return []
        check = signature_check(self._genesis, message.voter, signing.checkpoint, message.signature)
        return [] if check is None else [check]

    def next_due(self, retry_interval: float) -> float | None:
        """When to send our signature of the latest checkpoint again (None: no need)."""
        signing = self._latest()
        if signing is None or signing.certified or signing.own is None:
            return None
        return signing.sent_at + retry_interval

    def retry(
        self, now: float, retry_interval: float, voters: Sequence[tuple[PeerId, int]]
    ) -> None:
        """Send our signature of the latest checkpoint, not certified yet, again to the
        validators (peer, voter index) whose signatures we lack."""
        due = self.next_due(retry_interval)
        signing = self._latest()
        if due is None or due > now or signing is None or signing.own is None:
            return
        signing.sent_at = now
        message = signing.own
        self.sends.extend(
            (peer, message) for peer, voter in voters if voter not in signing.signatures
        )

    def _latest(self) -> _Signing | None:
        return self._signing[max(self._signing)] if self._signing else None

    def _sign(self, signing: _Signing) -> None:
        """A validator signs ``signing``'s checkpoint, which it computed itself."""
        if self._index is None:
            return
        cp = signing.checkpoint
        own = self._signer.sign(Purpose.CHECKPOINT, cp.digest)
        signing.signatures[self._index] = own
        signing.own = CheckpointSignatureMessage(cp.number, cp.digest, self._index, own)

    def _take(self, peer: PeerId, message: CheckpointSignatureMessage, signing: _Signing) -> None:
        """Count a signature held ahead, or refuse it."""
        try:
            self._check(message, signing)
        except InputRejected as e:
            self.refused.append((peer, e))
            return
        signing.signatures.setdefault(message.voter, message.signature)

    def _check(self, message: CheckpointSignatureMessage, signing: _Signing) -> None:
        g = self._genesis
        if message.digest != signing.checkpoint.digest:
            raise InputRejected(
                Reason.BAD_CHECKPOINT,
                f"voter {message.voter} signed another checkpoint {message.number}",
            )
        if len(message.signature) != SIGNATURE_SIZES[g.scheme]:
            raise InputRejected(Reason.WRONG_SCHEME, f"checkpoint not signed with {g.scheme.label}")
        check = signature_check(g, message.voter, signing.checkpoint, message.signature)
        if check is None:
            raise InputRejected(Reason.UNKNOWN_AUTHOR, f"voter {message.voter} is no validator")
        if not self._verifier.verify(check):
            raise InputRejected(Reason.BAD_SIGNATURE, "checkpoint signature does not verify")

    def _certify_if_quorum(self, signing: _Signing) -> None:
        if signing.certified or len(signing.signatures) < self._genesis.quorum:
            return
        signing.certified = True
        latest = self._certified
        if latest is None or latest.number < signing.checkpoint.number:
            self._certified = signing.checkpoint
        certificate: Certificate = make_certificate(self._genesis.scheme, signing.signatures)
        self.facts.append(CheckpointCertified(signing.checkpoint.number, certificate))
