"""Traces across nodes with OpenTelemetry: the optional extra ``otel``.

:func:`start_tracing` returns a :class:`~qudag_node.tracing.spans.Tracing` when the
standard ``OTEL_*`` variables ask for traces and the extra is installed, and None
otherwise. Only then is :mod:`qudag_node.tracing.spans` (the one module that imports
opentelemetry) loaded; every caller holds a ``Tracing | None`` and checks it before
any tracing work, so a node without traces runs no span code and does not even import
opentelemetry.

A transaction's trace: ``submit`` (the API request, child of the client's
``traceparent`` header if it sent one), ``pump_step`` (the step that admitted it),
``group_commit`` (the fsync that made it durable), ``propose_vertex`` (the vertex that
carries it: child of the first traced submission it carries, with a span link to
each), ``certificate``, ``leader_commit`` and ``final``. The vertex's messages leave
wrapped in ``TRACED`` (:mod:`qudag_node.core.wire`) with the vertex's latest span, so
another node's ``receive_vertex``, ``certificate`` and ``finality`` spans join the same
trace.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from qudag_node.config import ConfigError
from qudag_node.core.params import Params
from qudag_node.core.types import NodeId
from qudag_node.logs import get_logger

if TYPE_CHECKING:
    from qudag_node.tracing.spans import Tracing

log = get_logger("qudag.tracing")

#: The exporters the node can build from ``OTEL_TRACES_EXPORTER``.
EXPORTERS = frozenset({"otlp", "console"})


def wanted(environ: Mapping[str, str]) -> bool:
    """Whether the ``OTEL_*`` variables ask for traces: an exporter other than
    ``none`` in ``OTEL_TRACES_EXPORTER``, or, with it unset, an OTLP endpoint; never
    with ``OTEL_SDK_DISABLED=true``."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    names = _exporter_names(environ)
    if names is None:
        return bool(
            environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        )
    return bool(names - {"none"})


def _exporter_names(environ: Mapping[str, str]) -> set[str] | None:
    value = environ.get("OTEL_TRACES_EXPORTER")
    if value is None:
        return None
    return {n.strip().lower() for n in value.split(",")} - {""}


def start_tracing(
    node_id: NodeId, params: Params, environ: Mapping[str, str] = os.environ
) -> Tracing | None:
    """A :class:`~qudag_node.tracing.spans.Tracing` exporting as the ``OTEL_*``
    variables say, or None when they do not ask for traces or the ``otel`` extra is not
    installed (logged). Raises :class:`ConfigError` for an exporter or OTLP protocol the
    node cannot use."""
    if not wanted(environ):
        return None
    names = _exporter_names(environ) or {"otlp"}
    unknown = names - EXPORTERS - {"none"}
    if unknown:
        raise ConfigError(
            f"OTEL_TRACES_EXPORTER: {', '.join(sorted(unknown))} is not one of otlp, console"
        )
    protocol = environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
    )
    if "otlp" in names and protocol not in ("", "http/protobuf"):
        raise ConfigError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL: {protocol!r}; the node exports http/protobuf only"
        )
    try:
        from qudag_node.tracing.spans import build  # noqa: PLC0415 - loaded only to trace
    except ImportError:
        log.warning(
            "tracing_unavailable",
            detail="OTEL_* variables ask for traces but the otel extra is not installed"
            " (pip install qudag-node[otel])",
        )
        return None
    exporters = sorted(names & EXPORTERS)
    log.info("tracing_on", exporters=exporters)
    return build(node_id, exporters, params)


def now_ns() -> int:
    """The wall clock in nanoseconds, as span times take it."""
    return time.time_ns()
