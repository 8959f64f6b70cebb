"""What stops a node: :class:`NodeFailure`, the faults the node names itself, and
:func:`stop_cause`, which picks the one cause to report out of what its tasks raised."""

from __future__ import annotations

from qudag_node.config import ConfigError
from qudag_node.logs import get_logger

log = get_logger("qudag.node")


class NodeFailure(Exception):
    """The node cannot go on (bad data dir, storage failure); the process should exit 1."""


def exception_leaves(error: BaseException) -> list[BaseException]:
    """The exceptions in ``error``, nested exception groups taken apart, in order."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in exception_leaves(inner)]
    return [error]


def _one_line(text: str) -> str:
    return " ".join(text.split())


def stop_cause(error: BaseException) -> BaseException:
    """The one exception that stops the node, out of what its tasks raised: two
    tasks may fail at once, into an exception group, possibly nested. A
    :class:`NodeFailure` names the cause best, then a :class:`ConfigError`; an
    unexpected exception becomes a NodeFailure naming its type, with its traceback
    in the log. Every other failure is logged, one line each."""
    leaves = exception_leaves(error)
    for leaf in leaves:
        if not isinstance(leaf, Exception):  # KeyboardInterrupt, SystemExit, cancelled
            return leaf
    cause = next(
        (e for kind in (NodeFailure, ConfigError) for e in leaves if isinstance(e, kind)),
        leaves[0],
    )
    for leaf in leaves:
        if leaf is cause:
            continue
        if isinstance(leaf, NodeFailure | ConfigError):
            log.error("also_failed", error=_one_line(str(leaf)))
        else:
            log.error("also_failed", error=f"{type(leaf).__name__}: {leaf}", exc_info=leaf)
    if isinstance(cause, NodeFailure | ConfigError):
        return cause
    log.error("unexpected_failure", error=f"{type(cause).__name__}", exc_info=cause)
    return NodeFailure(f"unexpected {type(cause).__name__}: {_one_line(str(cause))}")
