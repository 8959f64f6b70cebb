"""Errors and reason codes.

Every rejection carries a :class:`Reason` (a stable code that metrics, logs and the
API show) and says whose fault it is: the peer or client that sent the input
(:class:`InputRejected`), or our own misuse of the core (:class:`UsageError`).
"""

from __future__ import annotations

import enum


class Fault(enum.Enum):
    """Who caused an error."""

    PEER = "peer"  # a remote node or a client sent something invalid
    LOCAL = "local"  # this process used the core wrongly (a bug)


class Reason(enum.Enum):
    """Stable reason codes for rejected input."""

    # codec
    TRUNCATED = "truncated"
    TRAILING_BYTES = "trailing_bytes"
    BAD_VERSION = "bad_version"
    UNKNOWN_SCHEME = "unknown_scheme"
    UNKNOWN_MESSAGE = "unknown_message"
    NON_CANONICAL = "non_canonical"
    # transactions
    EMPTY_TRANSACTION = "empty_transaction"
    OVERSIZE_TRANSACTION = "oversize_transaction"
    TOO_MANY_TRANSACTIONS = "too_many_transactions"
    POOL_FULL = "pool_full"
    # vertices
    WRONG_NETWORK = "wrong_network"
    WRONG_SCHEME = "wrong_scheme"
    UNKNOWN_AUTHOR = "unknown_author"
    BAD_SIGNATURE = "bad_signature"
    BAD_BATCH_ROOT = "bad_batch_root"
    OVERSIZE_BATCH = "oversize_batch"
    TOO_FEW_PARENTS = "too_few_parents"
    BAD_PARENT = "bad_parent"
    BAD_ROUND = "bad_round"
    FUTURE_TIMESTAMP = "future_timestamp"
    EQUIVOCATION = "equivocation"
    STALE_ROUND = "stale_round"
    BAD_CERTIFICATE = "bad_certificate"
    BAD_CHECKPOINT = "bad_checkpoint"
    # other peer messages
    NOT_A_VALIDATOR = "not_a_validator"
    OVERSIZE_MESSAGE = "oversize_message"
    # peer links
    WRONG_GENESIS = "wrong_genesis"
    BAD_TOKEN = "bad_token"  # noqa: S105 (a reason code, not a secret)
    REPLAYED_HANDSHAKE = "replayed_handshake"
    SELF_CONNECTION = "self_connection"
    BAD_CHANNEL_BINDING = "bad_channel_binding"  # the TLS session is not the peer's own
    WRONG_TRANSPORT = "wrong_transport"  # one end speaks TLS, the other plain
    BAD_SYNC = "bad_sync"


class QudagError(Exception):
    """Base class of every error the core raises."""

    fault: Fault

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason
        self.message = message


class InputRejected(QudagError):
    """Input from a peer or client broke a rule; the input is dropped, nothing else."""

    fault = Fault.PEER


class UsageError(Exception):
    """The core was called in a way its contract forbids: a bug in the caller."""

    fault = Fault.LOCAL
